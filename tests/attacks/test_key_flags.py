"""A subkey binding with two key-flags subpackets.

We read the first key-flags subpacket, Sequoia and GnuPG the last. A binding whose first one
says "encrypt" and whose last says "sign" let a foreign signing key (here: someone else's
Ed25519 key, whose secret the attacker does not hold) be kept as the attacker's signing
subkey without the back-signature that would prove its owner agreed.
"""

from __future__ import annotations

import shutil

import pytest

from service.openpgp.packets import PublicKey, Tag
from tests.attacks.live import Server
from tests.attackutil import HandKey, armor, packets_of, reframe
from tests.gpgutil import gnupg_home, show_keys

ENCRYPT = b"\x0c"
SIGN = b"\x02"
SUBKEY = Tag.PUBLIC_SUBKEY


@pytest.mark.parametrize(
    "flags", [[ENCRYPT, SIGN], [SIGN, ENCRYPT]], ids=["encrypt-then-sign", "sign-then-encrypt"]
)
def test_binding_with_two_key_flags_subpackets_does_not_bring_in_a_foreign_signing_key(
    fresh: Server, flags: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    attacker = HandKey()
    victim = HandKey()  # someone else's signing key: the attacker holds only its public part
    packets = [
        attacker.primary(),
        *attacker.certify("Mallory <mallory@example.org>"),
        *attacker.bind(victim, flags),
    ]
    answer = fresh.vks_upload(armor(reframe(packets)))
    assert answer.status < 500, answer.text
    if answer.status == 200:
        served = packets_of(fresh.served(attacker.key.fingerprint))
        subkeys = [
            PublicKey.parse(p.body).fingerprint for p in served if p.tag == Tag.PUBLIC_SUBKEY
        ]
        assert victim.key.fingerprint not in subkeys, (
            "the foreign signing key is served as the attacker's subkey without a "
            "back-signature (its binding carries two key-flags subpackets)"
        )
    lookup = fresh.request(f"/vks/v1/by-fingerprint/{victim.key.fingerprint}")
    assert lookup.status == 404, "a lookup of the foreign key answers the attacker's key"
    if shutil.which("gpg") and answer.status == 200:
        for home in gnupg_home(tmp_path_factory.mktemp("gpg") / "home"):
            seen = show_keys(home, fresh.served(attacker.key.fingerprint))
            assert seen, "gpg cannot read the served key"
            assert victim.key.fingerprint not in seen[0].subkeys, "gpg sees the foreign subkey"
