"""Bulk import: streamed, verified like uploads, never publishing, idempotent, never fatal."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import pytest
from sqlalchemy import Engine, func, select

from service.core.admin import Admin
from service.core.directory import Directory
from service.core.importer import Importer, ImportReport, Rejection
from service.db.models import AddressRow, AddressState, CertRow
from service.db.session import make_sessionmaker
from service.openpgp import load, read_upload
from service.openpgp.armor import armor_public_key, dearmor
from tests.conftest import read_data

ED25519 = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
RSA = "CD63BCDF6D92644A6856D92ED0B1DE8F99F115F2"
SHA1 = "84BB9A8563293A163EB69150E2A784169750BB8C"
GOOD = ["ed25519.asc", "rsa_multi_uid.asc", "dsa_elg.asc", "v6_ed25519.asc", "nistp256.asc"]


def binary(name: str) -> bytes:
    return dearmor(read_data(name))


def stream(data: bytes) -> BinaryIO:
    return io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]


@pytest.fixture(params=[0, 2], ids=["in-process", "two-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def run(
    directory: Directory, files: dict[str, bytes], workers: int, **kwargs: int
) -> tuple[ImportReport, list[Rejection]]:
    rejections: list[Rejection] = []
    report = Importer(directory, workers=workers, **kwargs).run(
        ((name, stream(data)) for name, data in files.items()), on_reject=rejections.append
    )
    return report, rejections


def counts(engine: Engine) -> tuple[int, int, int]:
    with make_sessionmaker(engine)() as session:
        keys = session.scalar(select(func.count()).select_from(CertRow)) or 0
        addresses = session.scalar(select(func.count()).select_from(AddressRow)) or 0
        published = (
            session.scalar(
                select(func.count())
                .select_from(AddressRow)
                .where(AddressRow.state != AddressState.UNPUBLISHED.value)
            )
            or 0
        )
    return keys, addresses, published


def test_import_stores_verified_keys_and_publishes_no_address(
    directory: Directory, database: tuple[str, Engine], workers: int
) -> None:
    keyring = b"".join(binary(n) for n in GOOD)
    report, rejections = run(directory, {"ring.gpg": keyring}, workers)
    assert (report.read, report.new, report.rejected) == (5, 5, 0)
    assert rejections == []
    keys, addresses, published = counts(database[1])
    assert keys == 5 and addresses >= 5 and published == 0
    # Served by fingerprint without any user ID, and not at all by address.
    stored = directory.by_fingerprint(RSA)
    assert stored is not None
    served = load(dearmor(stored.armor.encode()))
    assert served.fingerprint == RSA and served.user_ids == ()
    address = read_upload(read_data("rsa_multi_uid.asc")).certificates[0].user_ids[0].address
    assert address and directory.by_address(address) is None
    entry = directory.index(RSA)
    assert entry is not None and entry.user_ids == []


def test_running_the_same_import_again_changes_nothing(
    directory: Directory, database: tuple[str, Engine], workers: int
) -> None:
    files = {"ring.asc": armor_public_key(b"".join(binary(n) for n in GOOD)).encode()}
    run(directory, files, workers)
    before = directory.by_fingerprint(ED25519)
    report, _ = run(directory, files, workers)
    assert (report.new, report.updated, report.unchanged) == (0, 0, 5)
    assert directory.by_fingerprint(ED25519) == before
    assert counts(database[1])[0] == 5


def test_a_newer_copy_updates_and_an_older_copy_changes_nothing(
    directory: Directory, workers: int
) -> None:
    run(directory, {"old": binary("ed25519.asc")}, workers)
    report, _ = run(directory, {"new": binary("ed25519_newer.asc")}, workers)
    assert (report.updated, report.unchanged) == (1, 0)
    newer = directory.by_fingerprint(ED25519)
    report, _ = run(directory, {"old": binary("ed25519.asc")}, workers)
    assert (report.updated, report.unchanged) == (0, 1)
    assert directory.by_fingerprint(ED25519) == newer


def test_bad_keys_are_reported_counted_and_never_fatal(
    directory: Directory, database: tuple[str, Engine], workers: int
) -> None:
    lines = read_data("ed25519.sec.asc").decode().splitlines()
    files = {
        "mixed.gpg": binary("sha1_only.asc") + binary("ed25519.asc") + binary("dsa_elg.asc"),
        "secret.asc": read_data("ed25519.sec.asc"),
        "cut.gpg": binary("rsa_multi_uid.asc")[:-20],
        "good.asc": read_data("nistp256.asc"),
    }
    report, rejections = run(directory, files, workers)
    assert report.new == 3
    assert report.rejected == 3
    by_source = {r.source: r for r in rejections}
    assert set(by_source) == {"mixed.gpg", "secret.asc", "cut.gpg"}
    assert by_source["mixed.gpg"].fingerprint == SHA1
    assert "SHA-1" in by_source["mixed.gpg"].reason
    assert by_source["mixed.gpg"].number == 1
    assert "PRIVATE KEY" in by_source["secret.asc"].reason
    assert "cut off" in by_source["cut.gpg"].reason
    assert sum(report.reasons.values()) == 3
    # Nothing of the secret key was stored.
    secret_body = "".join(ln for ln in lines[2:] if ln and not ln.startswith(("=", "-----")))
    with make_sessionmaker(database[1])() as session:
        for row in session.scalars(select(CertRow)):
            assert secret_body[:40].encode() not in row.full_data
    assert counts(database[1])[0] == 3


def test_small_batches_commit_as_they_go(
    directory: Directory, database: tuple[str, Engine]
) -> None:
    keyring = b"".join(binary(n) for n in GOOD)
    seen: list[int] = []
    Importer(directory, workers=0, batch_size=2).run(
        [("ring", stream(keyring))], on_progress=lambda r: seen.append(r.stored)
    )
    assert seen == [2, 4, 5]


def test_a_key_that_exceeds_the_limits_after_merging_is_refused(
    directory: Directory, database: tuple[str, Engine]
) -> None:
    Importer(directory, workers=0).run([("a", stream(binary("ed25519.asc")))])
    strict = Directory(
        make_sessionmaker(database[1]),
        directory.limits.__class__(key=directory.limits.key.__class__(max_subkeys=1)),
    )
    rejections: list[Rejection] = []
    report = Importer(strict, workers=0, limits=directory.limits.key).run(
        [("b", stream(binary("ed25519_newer.asc")))], on_reject=rejections.append
    )
    assert report.rejected == 1
    assert "subkeys" in rejections[0].reason
    assert rejections[0].fingerprint == ED25519


def test_import_reads_files_from_disk(directory: Directory, tmp_path: Path) -> None:
    path = tmp_path / "ring.gpg"
    path.write_bytes(b"".join(binary(n) for n in GOOD))
    with path.open("rb") as handle:
        report = Importer(directory, workers=0).run([(str(path), handle)])
    assert report.new == 5
    assert report.bytes_read == path.stat().st_size


def test_a_blocked_key_is_not_imported(directory: Directory, database: tuple[str, Engine]) -> None:
    Admin(make_sessionmaker(database[1])).block(ED25519, "legal request")
    rejections: list[Rejection] = []
    report = Importer(directory, workers=0).run(
        [("ring", stream(binary("ed25519.asc") + binary("dsa_elg.asc")))],
        on_reject=rejections.append,
    )
    assert (report.new, report.rejected) == (1, 1)
    assert rejections[0].fingerprint == ED25519 and "blocked" in rejections[0].reason
    assert directory.by_fingerprint(ED25519) is None
