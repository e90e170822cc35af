"""`keydir import` as an operator runs it: real-world keys, progress, a summary, a rerun."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from service.db.models import AddressRow, AddressState, CertRow
from service.db.session import make_sessionmaker
from tests.serverutil import KEYDIR

# Real keys of Debian's developers and maintainers (Debian's debian-keyring package, which
# .ci/run installs): RSA, DSA and EdDSA keys of all ages, with many third-party certifications.
REAL_KEYRINGS = [
    Path("/usr/share/keyrings/debian-maintainers.gpg"),
    Path("/usr/share/keyrings/debian-nonupload.gpg"),
]
SUMMARY = re.compile(
    r"read ([\d,]+) keys in [\d.]+ s \(([\d,]+) keys/s\): ([\d,]+) imported, ([\d,]+) updated, "
    r"([\d,]+) unchanged, ([\d,]+) rejected\."
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def run_import(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYDIR_DATABASE_URL": url, "KEYDIR_AUTO_MIGRATE": "false"}
    return subprocess.run(
        [KEYDIR, "import", "--progress-every", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def real_keyrings() -> list[str]:
    missing = [str(p) for p in REAL_KEYRINGS if not p.exists()]
    if missing:
        pytest.skip(f"install Debian's debian-keyring package for {missing} (.ci/run does)")
    return [str(p) for p in REAL_KEYRINGS]


def test_importing_real_keys_prints_progress_and_a_summary_and_reruns_unchanged(
    database: tuple[str, Engine], real_keyrings: list[str]
) -> None:
    url, engine = database
    first = run_import(url, *real_keyrings)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "keys read" in first.stderr and "keys/s" in first.stderr  # progress lines
    summary = SUMMARY.search(first.stdout)
    assert summary is not None, first.stdout
    read, _rate, new, updated, unchanged, rejected = (number(g) for g in summary.groups())
    assert read >= 250
    assert new + updated + unchanged + rejected == read
    assert new > 200 and rejected > 0 and unchanged == 0
    # Every refusal is listed with its key and reason, and the reasons are totalled.
    refusals = [line for line in first.stderr.splitlines() if ": key " in line]
    assert len(refusals) == rejected
    assert re.search(r"^\s+[\d,]+ rejected: .*SHA-1", first.stdout, re.MULTILINE)
    assert "stay unpublished" in first.stdout

    with make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(CertRow)) == new
        assert (
            session.scalar(
                select(func.count())
                .select_from(AddressRow)
                .where(AddressRow.state != AddressState.UNPUBLISHED.value)
            )
            == 0
        )

    second = run_import(url, "--quiet", *real_keyrings)
    assert second.returncode == 0, second.stderr[-2000:]
    again = SUMMARY.search(second.stdout)
    assert again is not None, second.stdout
    assert [number(g) for g in again.groups()[2:]] == [0, 0, new, rejected]
    assert "nothing in the database changed" in second.stdout
    assert second.stderr == ""  # --quiet: only the summary


def test_import_of_a_missing_file_says_so(database: tuple[str, Engine], tmp_path: Path) -> None:
    result = run_import(database[0], str(tmp_path / "nothing.gpg"))
    assert result.returncode == 2
    assert "no such file" in result.stderr
