"""A stored signature sent back alone, a signature naming many keys, a cleaned export.

Found by reviewing the normalisation: a lone revocation must be verified over each
component it is offered to (a stored copy is trusted only where it is stored), a lone
signature must not make the server read many keys, and a revoked user ID that arrives with
its revocation only (GnuPG's export-clean, Debian's keyrings) must still revoke. Each test
drives the core with keys and revocations made by the real gpg, and reads the result back
with a fresh gpg.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service import openpgp
from service.core.directory import Directory, UploadRejected
from service.db import certs as cert_repo
from service.openpgp.packets import PublicKey, Tag
from tests.attackutil import GpgView, Keysmith, gpg_view, lone_signature, packets_of
from tests.gpgutil import gpg
from tests.keymaker import Cert, subpacket

T0, T1, T2 = "20250101T000000!", "20250102T000000!", "20250103T000000!"


@pytest.fixture
def smith(tmp_path: Path) -> Keysmith:
    home = tmp_path / "owner"
    home.mkdir(mode=0o700)
    return Keysmith(home)


def stored(directory: Directory, fingerprint: str) -> bytes:
    """The full stored key (every user ID), as keydir keeps it."""
    with directory._sessions() as session:
        row = cert_repo.get(session, fingerprint)
        assert row is not None
        return row.full_data


def fresh_gpg(tmp_path: Path, name: str, data: bytes, fingerprint: str) -> GpgView:
    home = tmp_path / name
    home.mkdir(mode=0o700)
    assert gpg(home, "--import", stdin=data).returncode == 0
    view = gpg_view(home, fingerprint)
    assert view is not None
    return view


def signature_after(data: bytes, tag: int, match: Callable[[bytes], bool], sig_type: int) -> bytes:
    current = None
    for packet in packets_of(data):
        if packet.tag == tag:
            current = packet.body
        elif (
            packet.tag == Tag.SIGNATURE
            and packet.body[1] == sig_type
            and current is not None
            and match(current)
        ):
            return packet.body
    raise AssertionError("signature not found")


def test_a_user_id_revocation_sent_back_alone_revokes_nothing_else(
    directory: Directory, smith: Keysmith, tmp_path: Path
) -> None:
    bob, carol = "Bob <bob@example.org>", "Carol <carol@example.org>"
    smith.clock = T0
    fpr = smith.new_key("Alice <alice@example.org>", bob, carol)
    smith.clock = T1
    smith.revoke_user_id(fpr, bob)
    smith.clock = T2
    smith.revoke_user_id(fpr, carol)
    exported = smith.export(fpr)
    directory.upload(exported)
    before = stored(directory, fpr)
    assert fresh_gpg(tmp_path, "before", before, fpr).user_ids[bob] == "r"
    # Carol's revocation (newer than Bob's, same reason), as anyone reads it from the key.
    carol_revocation = signature_after(before, Tag.USER_ID, carol.encode().__eq__, 0x30)
    with pytest.raises(UploadRejected, match="adds nothing"):
        directory.upload(lone_signature(carol_revocation))
    directory.upload(exported)
    after = stored(directory, fpr)
    assert after == before
    assert fresh_gpg(tmp_path, "after", after, fpr).user_ids[bob] == "r"
    uid = next(u for u in openpgp.load(after).user_ids if u.text == bob)
    assert uid.revoked
    assert not uid.valid


def test_a_subkey_revocation_sent_back_alone_revokes_nothing_else(
    directory: Directory, smith: Keysmith, tmp_path: Path
) -> None:
    smith.clock = T0
    fpr = smith.new_key("Alice <alice@example.org>", signing_subkey=True)
    smith.clock = T1
    encryption = smith.revoke_subkey(fpr, 1)
    smith.clock = T2
    signing = smith.revoke_subkey(fpr, 2)
    directory.upload(smith.export(fpr))
    before = stored(directory, fpr)
    assert fresh_gpg(tmp_path, "before", before, fpr).subkeys[encryption] == "r"
    revocation = signature_after(
        before,
        Tag.PUBLIC_SUBKEY,
        lambda body: PublicKey.parse(body).fingerprint == signing,
        0x28,
    )
    with pytest.raises(UploadRejected, match="adds nothing"):
        directory.upload(lone_signature(revocation))
    directory.upload(smith.export(fpr))
    after = stored(directory, fpr)
    assert after == before
    assert fresh_gpg(tmp_path, "after", after, fpr).subkeys[encryption] == "r"


def test_a_lone_signature_naming_many_keys_reads_none_of_them(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fingerprints = []
    for _ in range(30):
        cert = Cert()
        cert.user_id("Someone <someone@example.org>")
        directory.upload(cert.armored())
        fingerprints.append(cert.fingerprint)
    area = b"".join(subpacket(33, b"\x04" + bytes.fromhex(f)) for f in fingerprints)
    body = (
        bytes([4, 0x1F, 22, 8, 0, 0])
        + len(area).to_bytes(2, "big")
        + area
        + b"\xab\xcd\x00\x01\x01\x00\x01\x01"
    )
    loads: list[bytes] = []
    real_load = openpgp.load

    def counting(data: bytes) -> openpgp.Certificate:
        loads.append(data)
        return real_load(data)

    monkeypatch.setattr(openpgp, "load", counting)
    with pytest.raises(UploadRejected, match="adds nothing"):
        directory.upload(bytes([0xC2, 0xFF]) + len(body).to_bytes(4, "big") + body)
    assert loads == []


def test_too_many_lone_signatures_are_refused(directory: Directory) -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    directory.upload(cert.armored())
    revocations = [
        cert.primary.sign(0x20, cert.primary.public.hash_prefix, created=cert.primary.created + i)
        for i in range(1, 11)
    ]
    data = b"".join(bytes([0xC2, len(r)]) + r for r in revocations)
    with pytest.raises(UploadRejected, match="at most 8 are accepted"):
        directory.upload(data)


def test_a_user_id_revocation_in_a_cleaned_export_revokes_it(
    directory: Directory, smith: Keysmith, tmp_path: Path
) -> None:
    """GnuPG's export-clean (and Debian's keyrings) carry a revoked user ID with its
    revocation only, without the certification it revokes."""
    old = "Old <old@example.org>"
    smith.clock = T0
    fpr = smith.new_key("Alice <alice@example.org>", old)
    directory.upload(smith.export(fpr))
    smith.clock = T1
    smith.revoke_user_id(fpr, old)
    cleaned = smith("--export", "--armor", "--export-options", "export-clean", fpr)
    result = directory.upload(cleaned)
    assert result.keys[0].changed
    after = stored(directory, fpr)
    assert fresh_gpg(tmp_path, "after", after, fpr).user_ids[old] == "r"
