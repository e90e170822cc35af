"""What an upload may learn and cause, and repairing keys stored before normalisation.

On SQLite and PostgreSQL, through the core: an upload's answer names only addresses the
upload carried, its token mails only those, a lone signature that adds nothing answers like
an unknown key, `repair` normalises keys stored in an older form, and a subkey that might
be someone's primary key does not capture lookups of that key.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, update

from service import openpgp
from service.core.directory import AddressState, Directory, UploadRejected, VerifyRejected
from service.db.models import AddressRow, CertRow, OutboxRow, utcnow
from service.openpgp.armor import dearmor
from service.openpgp.packets import Packet, Tag
from tests.conftest import read_data
from tests.core.test_admin import RITA, RITA_ADDRESSES, publish
from tests.keymaker import Cert, Key, flags, signatures, subpacket, with_unhashed


def served(directory: Directory, fingerprint: str) -> bytes:
    key = directory.by_fingerprint(fingerprint)
    assert key is not None
    return key.armor.encode()


def mailed(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(OutboxRow.recipient).order_by(OutboxRow.id)))


def test_reupload_of_the_served_copy_shows_only_its_addresses(
    directory: Directory, database: tuple[str, Engine]
) -> None:
    engine = database[1]
    publish(directory, engine, "rsa_multi_uid.asc", RITA_ADDRESSES[0])
    result = directory.upload(served(directory, RITA))
    assert result.keys[0].status == {RITA_ADDRESSES[0]: AddressState.PUBLISHED}
    assert result.token is not None
    before = mailed(engine)
    for hidden in RITA_ADDRESSES[1:]:
        with pytest.raises(VerifyRejected, match="not on the key you uploaded"):
            directory.request_verify(result.token, [hidden])
    assert mailed(engine) == before
    # The owner's own full upload still shows (and may mail) every address of the key.
    full = directory.upload(read_data("rsa_multi_uid.asc"))
    assert set(full.keys[0].status) == set(RITA_ADDRESSES)
    assert full.token is not None
    directory.request_verify(full.token, [RITA_ADDRESSES[1]])
    assert mailed(engine)[-1] == RITA_ADDRESSES[1]


def test_a_garbage_signature_naming_a_stored_key_answers_like_an_unknown_key(
    directory: Directory,
) -> None:
    directory.upload(read_data("rsa_multi_uid.asc"))

    def garbage(key_id: bytes) -> bytes:
        # 26 bytes: a v4 "signature" whose only content is an issuer subpacket.
        body = b"\x04\x20\x01\x08\x00\x0a" + subpacket(16, key_id) + b"\x00\x00\xab\xcd\x00\x00"
        return bytes([0xC2, len(body)]) + body

    assert len(garbage(bytes(8))) == 24
    with pytest.raises(UploadRejected) as stored_key:
        directory.upload(garbage(bytes.fromhex(RITA[-16:])))
    with pytest.raises(UploadRejected) as unknown_key:
        directory.upload(garbage(b"\x01" * 8))
    assert str(stored_key.value) == str(unknown_key.value)
    assert "adds nothing" in str(stored_key.value)


def test_a_lone_revocation_shows_no_address(directory: Directory) -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    revocation = cert.primary.sign(0x20, cert.primary.public.hash_prefix)
    directory.upload(cert.armored())
    result = directory.upload(bytes([0xC2, len(revocation)]) + revocation)
    assert [(k.fingerprint, k.status, k.changed) for k in result.keys] == [
        (cert.fingerprint, {}, True)
    ]
    with pytest.raises(UploadRejected, match="adds nothing"):
        directory.upload(bytes([0xC2, len(revocation)]) + revocation)


def test_repair_normalises_keys_stored_in_an_older_form(
    directory: Directory, database: tuple[str, Engine]
) -> None:
    engine = database[1]
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    revocation = cert.revoke_key(code=1)
    directory.upload(cert.armored())
    clean = served(directory, cert.fingerprint)
    # What an older keydir stored after an attack: copies of the revocation with edited
    # unhashed areas beside the original.
    copies = [
        Packet(Tag.SIGNATURE, with_unhashed(revocation, subpacket(99, bytes([i]), critical=True)))
        for i in range(20)
    ]
    with engine.begin() as conn:
        full = conn.scalar(select(CertRow.full_data).where(CertRow.fingerprint == cert.fingerprint))
        assert full is not None
        flooded = full + b"".join(p.serialize() for p in copies)
        conn.execute(
            update(CertRow).where(CertRow.fingerprint == cert.fingerprint).values(full_data=flooded)
        )
    report = directory.repair(dry_run=True)
    assert (report.checked, report.repaired) == (1, 1)
    report = directory.repair()
    assert (report.checked, report.repaired) == (1, 1)
    assert report.bytes_after < report.bytes_before
    with engine.connect() as conn:
        repaired = conn.scalar(
            select(CertRow.full_data).where(CertRow.fingerprint == cert.fingerprint)
        )
    assert repaired is not None
    assert len([s for s in signatures(repaired) if s.sig_type == 0x20]) == 1
    assert served(directory, cert.fingerprint) == clean
    assert directory.repair().repaired == 0


def test_someones_primary_key_bound_as_a_subkey_does_not_answer_for_it(
    directory: Directory,
) -> None:
    victim = Cert()
    victim.user_id("Victim <victim@example.org>")
    attacker = Cert()
    attacker.user_id("Mallory <mallory@example.org>")
    # Bound as a subkey for authentication only: no back-signature is needed for that.
    attacker.subkey(victim.primary, [flags(0x20)], backsig=False)
    stored = directory.upload(attacker.armored()).keys[0]
    assert stored.fingerprint == attacker.fingerprint
    assert directory.by_fingerprint(victim.fingerprint) is None
    # A key id is ambiguous by nature: it still finds the only holder, ranked last.
    by_id = directory.by_key_id(victim.primary.public.key_id)
    assert by_id is not None
    assert by_id.fingerprint == attacker.fingerprint
    directory.upload(victim.armored())
    for found in (
        directory.by_fingerprint(victim.fingerprint),
        directory.by_key_id(victim.primary.public.key_id),
    ):
        assert found is not None
        assert found.fingerprint == victim.fingerprint


def test_a_proven_signing_subkey_is_found_by_its_own_id(directory: Directory) -> None:
    cert = Cert()
    cert.user_id("Alice <alice@example.org>")
    sub = Key()
    cert.subkey(sub, [flags(0x02)], backsig=True)
    directory.upload(cert.armored())
    found = directory.by_fingerprint(sub.public.fingerprint)
    assert found is not None
    assert found.fingerprint == cert.fingerprint
    assert openpgp.load(dearmor(found.armor.encode())).subkeys[0].findable


def test_repair_drops_addresses_no_user_id_names_any_more(
    directory: Directory, database: tuple[str, Engine]
) -> None:
    """An older keydir took the last address of `Victim <victim@…> <me@evil…>` (GnuPG files
    the key under the first) and may have published it; today that user ID names no address,
    and repair withdraws the stored one."""
    engine = database[1]
    cert = Cert()
    cert.user_id("Victim <victim@bank.example> <me@evil.example>")
    cert.user_id("Mallory <me@evil.example>")
    directory.upload(cert.armored())
    with engine.begin() as conn:
        conn.execute(
            AddressRow.__table__.insert().values(
                cert_fingerprint=cert.fingerprint,
                address="victim@bank.example",
                user_id="Victim <victim@bank.example> <me@evil.example>",
                state=AddressState.PUBLISHED.value,
                verified_at=utcnow(),
                domain="bank.example",
                wkd_hash="x" * 32,
            )
        )
    assert directory.by_address("victim@bank.example") is not None
    report = directory.repair()
    assert report.repaired == 1
    assert directory.by_address("victim@bank.example") is None
    with engine.connect() as conn:
        left = set(conn.scalars(select(AddressRow.address)))
    assert left == {"me@evil.example"}
    assert directory.repair().repaired == 0
