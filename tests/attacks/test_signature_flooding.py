"""Flooding and pre-emptive poisoning with copies of the owner's own signatures.

Anyone can make any number of distinct copies of a signature the owner made by rewriting its
unhashed area, and every copy verifies. A directory that keeps each distinct copy lets anyone
grow someone else's key without bound (about a megabyte per request), past the point where
the owner can still update or manage it; and a poisoned copy of a user ID self-signature
uploaded before its owner makes GnuPG refuse the owner's key for good.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pysequoia
import pytest

from service.openpgp.packets import Packet, PublicKey
from tests.attacks.live import Client, Server
from tests.attackutil import (
    DIRECT_KEY,
    KEY_REVOCATION,
    SUBKEY_REVOCATION,
    Keysmith,
    add_critical_unknown,
    add_padding,
    armor,
    find_signature,
    insert_after,
    lone_signature,
    packets_of,
    reframe,
    remove_issuer,
    replace_signature,
)

pytestmark = [pytest.mark.gpg, pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")]

ATTACKS = 100
PADDING = 8_000  # bytes of junk in each copy's unhashed area
ALLOWED_GROWTH = 1_000  # bytes the served key may grow by over all the attacker's uploads


@dataclass(frozen=True)
class Victim:
    fingerprint: str
    clean: bytes = field(repr=False)  # uploaded first, and its address confirmed
    address: str | None
    keytext: bytes = field(repr=False)  # then this version (with the revocation)
    sig_type: int  # the signature the attacker copies
    inside_key: bool  # copies sent inside the served key, else as lone signatures


@pytest.fixture(scope="module")
def victims(keysmith: Keysmith) -> dict[str, Victim]:
    # Sequoia makes a direct-key signature for every key; GnuPG does not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tsk = pysequoia.Tsk.generate(user_ids=["Quinn Sequoia <quinn@example.org>"])
        sequoia = bytes(tsk.extract_certificate())
    sequoia_fpr = PublicKey.parse(packets_of(sequoia)[0].body).fingerprint
    revoked = keysmith.new_key("Rhea Revoked <rhea@example.org>")
    revoked_clean = keysmith.export(revoked)
    keysmith.revoke_key(revoked)
    subkey = keysmith.new_key("Stan Subkey <stan@example.org>")
    subkey_clean = keysmith.export(subkey)
    keysmith.revoke_subkey(subkey, 1)
    return {
        "sequoia-direct-key": Victim(
            sequoia_fpr,
            armor(sequoia).encode(),
            None,
            armor(sequoia).encode(),
            DIRECT_KEY,
            inside_key=False,
        ),
        "key-revocation": Victim(
            revoked,
            revoked_clean,
            "rhea@example.org",
            keysmith.export(revoked),
            KEY_REVOCATION,
            inside_key=False,
        ),
        "subkey-revocation-in-key": Victim(
            subkey,
            subkey_clean,
            "stan@example.org",
            keysmith.export(subkey),
            SUBKEY_REVOCATION,
            inside_key=True,
        ),
    }


def stored_by_owner(server: Server, victim: Victim) -> list[Packet]:
    """The owner uploads the key, confirms its address (so that the served copy carries a
    user ID and can itself be uploaded again), uploads the final version; what is served."""
    server.publish(victim.clean, [victim.address] if victim.address else [])
    answer = server.vks_upload(victim.keytext)
    assert answer.status == 200, answer.text
    return packets_of(server.served(victim.fingerprint))


def served_size(server: Server, fingerprint: str) -> int:
    return len(reframe(packets_of(server.served(fingerprint))))


@pytest.mark.parametrize(
    "victim_name", ["sequoia-direct-key", "key-revocation", "subkey-revocation-in-key"]
)
def test_copies_with_large_unhashed_areas_do_not_grow_the_key(
    fresh: Server, victims: dict[str, Victim], victim_name: str
) -> None:
    victim = victims[victim_name]
    packets = stored_by_owner(fresh, victim)
    start = len(reframe(packets))
    at = find_signature(packets, victim.sig_type)
    original = packets[at].body
    for n in range(ATTACKS):
        copy = add_padding(original, PADDING, seed=n, as_notation=bool(n % 2))
        if victim.inside_key:
            data = reframe(replace_signature(packets, at, copy))
        else:
            data = lone_signature(copy)
        answer = fresh.vks_upload(armor(data)) if n % 2 else fresh.hkp_add(armor(data))
        assert answer.status < 500, answer.text
        growth = served_size(fresh, victim.fingerprint) - start
        assert growth <= ALLOWED_GROWTH, (
            f"{n + 1} uploads of copies of the owner's own signature (type "
            f"{victim.sig_type:#x}) grew the served key by {growth} bytes"
        )


def test_one_request_full_of_copies_grows_the_key_by_little(
    fresh: Server, victims: dict[str, Victim]
) -> None:
    """As many 60 KB copies of the owner's revocation as one request may carry."""
    victim = victims["key-revocation"]
    packets = stored_by_owner(fresh, victim)
    start = len(reframe(packets))
    at = find_signature(packets, KEY_REVOCATION)
    copies = [add_padding(packets[at].body, 60_000, seed=n) for n in range(12)]
    flooded = packets
    for copy in copies:
        flooded = insert_after(flooded, at, copy)
    text = armor(reframe(flooded))
    assert 700_000 < len(text) < 1_000_000  # under the 1 MiB default upload limit
    answer = fresh.vks_upload(text)
    assert answer.status < 500, answer.text
    growth = served_size(fresh, victim.fingerprint) - start
    assert growth <= ALLOWED_GROWTH, f"one upload grew the served key by {growth} bytes"


@pytest.mark.parametrize(
    "poison", ["replaced-critical-unknown", "added-critical-unknown", "added-issuer-removed"]
)
def test_poisoned_pre_upload_does_not_stop_the_owners_key(
    fresh: Server, keysmith: Keysmith, new_client: Callable[[], Client], poison: str
) -> None:
    address = f"bob.{poison}@example.org"
    bob = keysmith.new_key(f"Bob <{address}>")
    real = keysmith.export(bob)
    packets = packets_of(real)
    at = find_signature(packets, 0x13)
    body = packets[at].body
    if poison == "replaced-critical-unknown":
        poisoned = replace_signature(packets, at, add_critical_unknown(body))
    elif poison == "added-critical-unknown":
        poisoned = insert_after(packets, at, add_critical_unknown(body))
    else:
        poisoned = insert_after(packets, at, remove_issuer(body))
    # The attacker uploads Bob's public key before Bob does, with one poisoned copy of its
    # user ID self-signature.
    assert fresh.vks_upload(armor(reframe(poisoned))).status < 500
    # Then Bob uploads his key and confirms his address.
    fresh.publish(real, [address])

    seen = new_client().import_served(bob)
    assert seen is not None, (
        "GnuPG refuses Bob's key as served after his own upload (a poisoned copy of his "
        "user ID self-signature, uploaded before him, is still served)"
    )
    assert seen.user_ids.get(f"Bob <{address}>") not in (None, "r", "i"), seen
