"""Unconfirmed addresses disclosed to whoever uploads something about a stored key.

Nothing about an address that its owner has not confirmed may be published. An upload's
answer is shown to whoever sent it, so it may list only what that upload itself carried:
re-uploading the served copy of a key (which carries only confirmed user IDs), or a lone
garbage "signature" that names the key's ID, must reveal none of the key's other addresses,
and the upload token it earns must not let anyone mail them.
"""

from __future__ import annotations

import json

import pytest

from tests.attacks.live import Answer, Server
from tests.attackutil import armor, garbage_signature, lone_signature
from tests.conftest import read_data

MANIFEST: dict[str, list[str]] = json.loads(read_data("keys.json"))
FPR = MANIFEST["rsa_multi_uid.asc"][0]
CONFIRMED = "rita@example.org"
UNCONFIRMED = ["rita.work@example.com", "rita@example.net"]


@pytest.fixture
def stored(fresh: Server) -> Server:
    """Rita's key with one confirmed address and two she never confirmed."""
    fresh.publish(read_data("rsa_multi_uid.asc"), [CONFIRMED])
    served = fresh.served(FPR).decode()
    assert CONFIRMED in _user_ids(fresh)
    assert not any(a in served for a in UNCONFIRMED)
    return fresh


def _user_ids(server: Server) -> str:
    """The confirmed user IDs, as the HKP index lists them."""
    return server.request(f"/pks/lookup?op=index&options=mr&search=0x{FPR}").text


def _upload(server: Server, path: str, keytext: str | bytes) -> Answer:
    if path == "vks":
        return server.vks_upload(keytext)
    if path == "hkp":
        return server.hkp_add(keytext)
    return server.web_upload(keytext)


def _assert_discloses_nothing(answer: Answer, what: str) -> None:
    assert answer.status < 500, answer.text
    for address in UNCONFIRMED:
        assert address not in answer.text, (
            f"the answer to {what} names the unconfirmed address {address}: {answer.text[:400]}"
        )


@pytest.mark.parametrize("path", ["vks", "hkp", "web"])
def test_reupload_of_the_served_copy_reports_only_the_addresses_it_carried(
    stored: Server, path: str
) -> None:
    answer = _upload(stored, path, stored.served(FPR))
    _assert_discloses_nothing(answer, f"a re-upload of the served key ({path})")
    if path == "vks":
        assert answer.status == 200, answer.text
        assert set(answer.json()["status"]) <= {CONFIRMED}


@pytest.mark.parametrize("path", ["vks", "hkp"])
def test_garbage_signature_naming_a_stored_key_answers_like_an_unknown_key(
    stored: Server, path: str
) -> None:
    """26 bytes that verify nothing, naming the stored key's ID (or another ID)."""
    naming_stored = _upload(stored, path, armor(lone_signature(garbage_signature(FPR[-16:]))))
    naming_unknown = _upload(
        stored, path, armor(lone_signature(garbage_signature("0123456789ABCDEF")))
    )
    _assert_discloses_nothing(naming_stored, f"a garbage signature ({path})")
    assert 400 <= naming_unknown.status < 500, naming_unknown.text
    assert (naming_stored.status, naming_stored.text) == (
        naming_unknown.status,
        naming_unknown.text,
    ), "a signature that changes nothing is answered unlike one for an unknown key"
    assert "token" not in naming_stored.text


def _tokens(server: Server) -> dict[str, str]:
    """Upload tokens an attacker can earn for Rita's key without holding any of its secrets."""
    earned = {}
    for name, keytext in (
        ("served-copy", server.served(FPR).decode()),
        ("garbage-signature", armor(lone_signature(garbage_signature(FPR[-16:])))),
    ):
        answer = server.vks_upload(keytext)
        assert answer.status < 500, answer.text
        if answer.status == 200:
            earned[name] = answer.json()["token"]
    return earned


@pytest.mark.parametrize("form", ["vks", "web"])
def test_upload_token_never_mails_an_address_the_upload_did_not_carry(
    stored: Server, form: str
) -> None:
    for source, token in _tokens(stored).items():
        for address in UNCONFIRMED:
            if form == "vks":
                answer = stored.request_verify(token, [address])
            else:
                answer = stored.form("/upload", "/upload/verify", token=token, address=address)
            assert answer.status < 500, answer.text
            assert stored.mails_queued_to(address) == 0, (
                f"a token earned with a {source} upload made the service mail the unconfirmed "
                f"address {address} ({form})"
            )


def test_deleted_identity_does_not_come_back_through_a_reupload(stored: Server) -> None:
    before = stored.served(FPR)
    # Rita asks for a manage link and deletes the key's identity information.
    assert stored.form("/manage", "/manage", address=CONFIRMED).status == 200
    token = stored.link(CONFIRMED, "manage")
    deleted = stored.form(f"/manage/{token}", f"/manage/{token}/delete", fingerprint=FPR)
    assert deleted.status == 200, deleted.text
    after = stored.served(FPR)
    assert CONFIRMED not in _user_ids(stored)

    for copy, when in ((after, "after"), (before, "before")):
        for path in ("vks", "hkp", "web"):
            answer = _upload(stored, path, copy)
            _assert_discloses_nothing(answer, f"a re-upload of the copy served {when} ({path})")
            if path == "vks" and answer.status == 200:
                assert set(answer.json()["status"]) <= {CONFIRMED}
                for address in UNCONFIRMED:
                    stored.request_verify(answer.json()["token"], [address])
                    assert stored.mails_queued_to(address) == 0
    # Whatever a re-upload carried, nothing is published again without a new confirmation.
    assert CONFIRMED not in _user_ids(stored)
    assert stored.request(f"/vks/v1/by-email/{CONFIRMED}").status == 404
