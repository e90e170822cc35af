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
from tests.attackutil import packets_of
from tests.gpgutil import gnupg_home, show_keys
from tests.keymaker import Cert, Key, flags

ENCRYPT = 0x0C
SIGN = 0x02


@pytest.mark.parametrize(
    "order", [[ENCRYPT, SIGN], [SIGN, ENCRYPT]], ids=["encrypt-then-sign", "sign-then-encrypt"]
)
def test_binding_with_two_key_flags_subpackets_does_not_bring_in_a_foreign_signing_key(
    fresh: Server, order: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    attacker = Cert()
    attacker.user_id("Mallory <mallory@example.org>")
    victim = Key()  # someone else's signing key: the attacker holds only its public part
    attacker.subkey(victim, [flags(value) for value in order], backsig=False)
    answer = fresh.vks_upload(attacker.armored().decode())
    assert answer.status < 500, answer.text
    if answer.status == 200:
        served = packets_of(fresh.served(attacker.fingerprint))
        subkeys = [
            PublicKey.parse(p.body).fingerprint for p in served if p.tag == Tag.PUBLIC_SUBKEY
        ]
        assert victim.public.fingerprint not in subkeys, (
            "the foreign signing key is served as the attacker's subkey without a "
            "back-signature (its binding carries two key-flags subpackets)"
        )
    lookup = fresh.request(f"/vks/v1/by-fingerprint/{victim.public.fingerprint}")
    assert lookup.status == 404, "a lookup of the foreign key answers the attacker's key"
    if shutil.which("gpg") and answer.status == 200:
        for home in gnupg_home(tmp_path_factory.mktemp("gpg") / "home"):
            seen = show_keys(home, fresh.served(attacker.fingerprint))
            assert seen, "gpg cannot read the served key"
            assert victim.public.fingerprint not in seen[0].subkeys, "gpg sees the foreign subkey"
