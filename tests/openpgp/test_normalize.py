"""What we keep of a signature: its signer's statement, once, with a rebuilt unhashed area.

The unhashed area of a signature is not signed: anyone can edit it. These tests edit it as
an attacker would and check that nothing of the edit is stored, that a copy of a signature
we hold adds nothing, and that the number of self-signatures per component is bounded.
"""

from __future__ import annotations

import pytest

from service import openpgp
from service.openpgp import cert as cert_module
from service.openpgp.packets import (
    SUB_EMBEDDED_SIGNATURE,
    SUB_ISSUER_KEY_ID,
    Packet,
    Signature,
    SigType,
    Tag,
    parse_packets,
    user_id_hash_prefix,
)
from tests.keymaker import Cert, Key, flags, reason, signatures, subpacket, with_unhashed

NOTATION = 20


def critical_notation() -> bytes:
    name, value = b"evil@example.org", b"x"
    body = b"\x80\0\0\0" + len(name).to_bytes(2, "big") + len(value).to_bytes(2, "big")
    return subpacket(NOTATION, body + name + value, critical=True)


EDITS = {
    "critical unknown subpacket": subpacket(99, b"boom", critical=True),
    "critical notation": critical_notation(),
    "issuer removed": b"",
    "60 KB of padding": subpacket(100, b"A" * 60_000),
}


def stored(cert: Cert) -> openpgp.Certificate:
    return openpgp.load(openpgp.read_upload(cert.data()).certificates[0].data)


def unhashed_types(sig: Signature) -> list[int]:
    return [s.type for s in sig.unhashed]


def test_unhashed_area_is_rebuilt_to_the_issuer() -> None:
    cert = Cert()
    sig = cert.user_id("Alice <alice@example.org>")
    junk = EDITS["critical unknown subpacket"] + critical_notation() + subpacket(101, b"x" * 500)
    cert.packets[-1] = Packet(Tag.SIGNATURE, with_unhashed(sig, junk))
    kept = signatures(openpgp.read_upload(cert.data()).certificates[0].data)
    assert len(kept) == 1
    assert kept[0].identity == Signature.parse(sig).identity
    # The hashed area names the issuer fingerprint already; the key id is what GnuPG 2.2
    # looks for, so that is all the unhashed area holds.
    assert [(s.type, s.critical) for s in kept[0].unhashed] == [(SUB_ISSUER_KEY_ID, False)]
    assert kept[0].unhashed[0].body.hex().upper() == cert.primary.public.key_id


def test_issuer_is_added_when_no_area_names_it() -> None:
    cert = Cert()
    sig = cert.user_id("Alice <alice@example.org>")
    cert.packets[-1] = Packet(Tag.SIGNATURE, with_unhashed(sig, b""))
    kept = signatures(openpgp.read_upload(cert.data()).certificates[0].data)
    assert unhashed_types(kept[0]) == [SUB_ISSUER_KEY_ID]


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edited_copy_of_a_revocation_adds_nothing(edit: bytes) -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    revocation = cert.revoke_key(code=2)
    key = stored(cert)
    assert key.revoked
    copy = with_unhashed(revocation, edit)
    # As a lone signature ...
    assert openpgp.attach_signatures(key, [copy]).data == key.data
    # ... and inside the key, in place of the original.
    cert.packets[1] = Packet(Tag.SIGNATURE, copy)
    update = openpgp.read_upload(cert.data()).certificates[0]
    assert update.data == key.data
    assert openpgp.merge(key, update).data == key.data


def test_a_hundred_copies_do_not_grow_the_key() -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    revocation = cert.revoke_key(code=1)
    key = stored(cert)
    copies = [
        with_unhashed(revocation, subpacket(100, i.to_bytes(4, "big") * 200)) for i in range(100)
    ]
    for copy in copies:
        key = openpgp.attach_signatures(key, [copy])
    assert key.data == stored(cert).data
    assert openpgp.attach_signatures(key, copies).data == key.data


def test_a_poisoned_first_copy_is_served_clean() -> None:
    """Uploaded before the owner, a copy with a critical unknown subpacket in the unhashed
    area would make GnuPG reject the user ID; what we keep carries none of it."""
    cert = Cert()
    sig = cert.user_id("Bob <bob@example.org>")
    cert.packets[-1] = Packet(
        Tag.SIGNATURE, with_unhashed(sig, EDITS["critical unknown subpacket"])
    )
    poisoned = openpgp.read_upload(cert.data()).certificates[0]
    assert all(not s.critical for sig in signatures(poisoned.data) for s in sig.unhashed)
    cert.packets[-1] = Packet(Tag.SIGNATURE, sig)
    owners = openpgp.read_upload(cert.data()).certificates[0]
    assert openpgp.merge(poisoned, owners).data == poisoned.data == owners.data


def test_a_revocation_is_not_dropped_for_an_unhashed_foreign_issuer() -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    revocation = cert.revoke_key()
    key = openpgp.read_upload(Cert(cert.primary, cert.packets[:1] + cert.packets[2:]).data())
    plain = key.certificates[0]
    assert not plain.revoked
    foreign = subpacket(SUB_ISSUER_KEY_ID, bytes(8))
    revoked = openpgp.attach_signatures(plain, [with_unhashed(revocation, foreign)])
    assert revoked.revoked
    assert revoked.data == stored(cert).data


def test_binding_with_two_key_flags_subpackets_is_refused() -> None:
    """We read the first key-flags subpacket, GnuPG and Sequoia the last: with encrypt first
    and sign last, a foreign signing key would pass without a back-signature."""
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    cert.subkey(Key(), [flags(0x0C), flags(0x02)], backsig=False)
    assert openpgp.read_upload(cert.data()).certificates[0].subkeys == ()


@pytest.mark.parametrize(
    ("value", "backsig", "kept"), [(0x0C, False, False), (0x02, True, True), (0x02, False, False)]
)
def test_subkey_flags_must_fit_its_algorithm(value: int, backsig: bool, kept: bool) -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    sub = Key()
    cert.subkey(sub, [flags(value)], backsig=backsig)
    subkeys = openpgp.read_upload(cert.data()).certificates[0].subkeys
    assert [s.fingerprint for s in subkeys] == ([sub.public.fingerprint] if kept else [])


def test_back_signature_is_kept_normalised() -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    sub = Key()
    binding = cert.subkey(sub, [flags(0x02)], backsig=True)
    parsed = Signature.parse(binding)
    back = next(s.body for s in parsed.unhashed if s.type == SUB_EMBEDDED_SIGNATURE)
    junk = subpacket(100, b"J" * 300)
    edited_back = with_unhashed(back, junk)
    cert.packets[-1] = Packet(
        Tag.SIGNATURE,
        with_unhashed(binding, junk + subpacket(SUB_EMBEDDED_SIGNATURE, edited_back) + junk),
    )
    data = openpgp.read_upload(cert.data()).certificates[0].data
    kept = signatures(data)[-1]
    assert unhashed_types(kept) == [SUB_ISSUER_KEY_ID, SUB_EMBEDDED_SIGNATURE]
    embedded = Signature.parse(kept.unhashed[1].body)
    assert embedded.identity == Signature.parse(back).identity
    assert unhashed_types(embedded) == [SUB_ISSUER_KEY_ID]
    assert embedded.unhashed[0].body.hex().upper() == sub.public.key_id


def test_self_signatures_per_component_are_bounded() -> None:
    cert = Cert()
    start = cert.primary.created + 10
    cert.user_id("Alice <alice@example.org>", created=start)
    made = [cert.user_id("Alice <alice@example.org>", created=start + i) for i in range(1, 10)]
    for code in (0, 1, 1, 3):
        sig = cert.primary.sign(
            SigType.CERT_REVOCATION,
            cert.primary.public.hash_prefix,
            user_id_hash_prefix(b"Alice <alice@example.org>"),
            hashed=[reason(code)],
            created=start + 100 + len(cert.packets),
        )
        cert.packets.append(Packet(Tag.SIGNATURE, sig))
    data = openpgp.read_upload(cert.data()).certificates[0].data
    kept = signatures(data)
    certifications = [s for s in kept if s.sig_type == SigType.POSITIVE_CERT]
    revocations = [s for s in kept if s.sig_type == SigType.CERT_REVOCATION]
    assert len(certifications) == cert_module.MAX_SELF_SIGNATURES
    assert {s.identity for s in certifications} == {
        Signature.parse(sig).identity for sig in made[-cert_module.MAX_SELF_SIGNATURES :]
    }
    # One per reason: 0, 1 (the newer of two) and 3.
    assert sorted(s.revocation_reason or 0 for s in revocations) == [0, 1, 3]
    assert len([p for p in parse_packets(data, max_packets=100) if p.tag == Tag.USER_ID]) == 1


def test_lone_user_id_and_subkey_revocations_find_their_component() -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    cert.user_id("Alice <alice@work.example>")
    sub = Key()
    cert.subkey(sub, [flags(0x02)], backsig=True)
    key = stored(cert)
    assert [s.fingerprint for s in key.subkeys] == [sub.public.fingerprint]
    uid_revocation = cert.primary.sign(
        SigType.CERT_REVOCATION,
        cert.primary.public.hash_prefix,
        user_id_hash_prefix(b"Alice <alice@work.example>"),
        hashed=[reason(32)],
    )
    sub_revocation = cert.primary.sign(
        SigType.SUBKEY_REVOCATION,
        cert.primary.public.hash_prefix,
        sub.public.hash_prefix,
        hashed=[reason(3)],
    )
    updated = openpgp.attach_signatures(key, [uid_revocation, sub_revocation])
    assert updated.data != key.data
    revoked = {u.text: u.revoked for u in updated.user_ids}
    assert revoked == {"Alice <alice@example.org>": False, "Alice <alice@work.example>": True}
    assert len(signatures(updated.data)) == len(signatures(key.data)) + 2


def test_attaching_a_signature_verifies_only_that_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert = Cert()
    for i in range(20):
        cert.user_id(f"Alice <alice{i}@example.org>")
    for _ in range(5):
        cert.subkey(Key(), [flags(0x02)], backsig=True)
    revocation = cert.primary.sign(
        SigType.KEY_REVOCATION, cert.primary.public.hash_prefix, hashed=[reason(0)]
    )
    key = stored(cert)
    calls = []
    real = cert_module.verify_over

    def counting(*args: object) -> bool:
        calls.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cert_module, "verify_over", counting)
    updated = openpgp.attach_signatures(key, [revocation, with_unhashed(revocation, b"")])
    assert updated.revoked
    assert len(calls) == 1
