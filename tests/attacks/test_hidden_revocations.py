"""Revocations hidden from GnuPG by edited copies of the owner's own revocation.

The owner revokes their key, a subkey or a user ID and uploads it. The attacker takes the
revocation from the served key and edits only its unhashed area, which the signature does not
cover: an unknown subpacket marked critical, a critical notation, or the issuer subpacket
removed. The copy still verifies. If the directory keeps it beside the original and serves
both, GnuPG treats the two as one signature, keeps one, judges it bad, and imports the key as
not revoked. After every such upload, a fresh GnuPG must still see the revocation, whether it
imports the served key from a file or fetches it with `--recv-keys`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.attacks.live import Answer, Client, Server
from tests.attackutil import (
    CERT_REVOCATION,
    KEY_REVOCATION,
    SUBKEY_REVOCATION,
    TAMPERINGS,
    GpgView,
    Keysmith,
    armor,
    find_signature,
    lone_signature,
    packets_of,
    reframe,
    replace_signature,
)

pytestmark = [pytest.mark.gpg, pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")]


@dataclass(frozen=True)
class Revoked:
    """A key in two versions: as first uploaded, and with one of its parts revoked."""

    fingerprint: str
    clean: bytes = field(repr=False)
    revoked: bytes = field(repr=False)
    addresses: list[str]  # confirmed before the revocation is uploaded, so gpg can import it
    revocation_type: int
    is_revoked: Callable[[GpgView], bool]
    what: str


@pytest.fixture(scope="module")
def revoked_keys(keysmith: Keysmith) -> dict[str, Revoked]:
    key = keysmith.new_key("Kim Key <kim@example.org>")
    key_clean = keysmith.export(key)
    keysmith.revoke_key(key)

    sub = keysmith.new_key("Sam Sub <sam@example.org>", signing_subkey=True)
    sub_clean = keysmith.export(sub)
    subkey = keysmith.revoke_subkey(sub, 1)

    uid = keysmith.new_key("Una Uid <una@example.org>", "Una Old <una.old@example.org>")
    uid_clean = keysmith.export(uid)
    keysmith.revoke_user_id(uid, "Una Old <una.old@example.org>")

    return {
        "key": Revoked(
            key,
            key_clean,
            keysmith.export(key),
            ["kim@example.org"],
            KEY_REVOCATION,
            lambda view: view.revoked,
            f"the key {key}",
        ),
        "subkey": Revoked(
            sub,
            sub_clean,
            keysmith.export(sub),
            ["sam@example.org"],
            SUBKEY_REVOCATION,
            lambda view: view.subkeys.get(subkey) == "r",
            f"the subkey {subkey}",
        ),
        "user-id": Revoked(
            uid,
            uid_clean,
            keysmith.export(uid),
            ["una@example.org", "una.old@example.org"],
            CERT_REVOCATION,
            lambda view: view.user_ids.get("Una Old <una.old@example.org>") == "r",
            "the user ID Una Old <una.old@example.org>",
        ),
    }


def upload(server: Server, path: str, packets_or_sig: bytes) -> Answer:
    text = armor(packets_or_sig)
    return server.hkp_add(text) if path.endswith("hkp") else server.vks_upload(text)


@pytest.mark.parametrize("path", ["lone-hkp", "lone-vks", "key-vks", "key-hkp"])
@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
@pytest.mark.parametrize("kind", ["key", "subkey", "user-id"])
def test_edited_copy_of_a_revocation_does_not_unrevoke_for_gnupg(
    fresh: Server,
    new_client: Callable[[], Client],
    revoked_keys: dict[str, Revoked],
    kind: str,
    tampering: str,
    path: str,
) -> None:
    target = revoked_keys[kind]
    fresh.publish(target.clean, target.addresses)
    assert fresh.vks_upload(target.revoked).status == 200
    served = fresh.served(target.fingerprint)
    # Before the attack GnuPG sees the revocation: the setup is right.
    before = new_client().import_served(target.fingerprint)
    assert before is not None and target.is_revoked(before), before

    packets = packets_of(served)
    at = find_signature(packets, target.revocation_type)
    tampered = TAMPERINGS[tampering](packets[at].body)
    if path.startswith("lone"):
        data = lone_signature(tampered, "old")
    else:
        style = "old4" if path == "key-vks" else "new5"
        data = reframe(replace_signature(packets, at, tampered), style)
    answer = upload(fresh, path, data)
    assert answer.status < 500, answer.text

    for how, fetch in (
        ("imports the served key", new_client().import_served),
        ("fetches it with --recv-keys", new_client().recv_keys),
    ):
        seen = fetch(target.fingerprint)
        assert seen is not None, f"gpg {how}: no key"
        assert target.is_revoked(seen), (
            f"after an edited copy of the revocation was uploaded ({tampering}, {path}), "
            f"a fresh gpg that {how} sees {target.what} as not revoked: {seen}"
        )
