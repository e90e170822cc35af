"""The operator commands on SQLite and PostgreSQL: each once as the real `keydir` program (as
an operator runs it), the rest through the same entry point in this process (faster)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from service.cli import main
from service.core.admin import Admin
from service.core.directory import Directory, KeyBlocked
from service.db.models import CertRow
from service.db.session import make_sessionmaker
from tests import keyforge
from tests.conftest import read_data
from tests.serverutil import KEYDIR

Runner = Callable[..., subprocess.CompletedProcess[str]]
EDDIE = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
# As gpg prints it, and as people paste it.
EDDIE_SPACED = " ".join(EDDIE[i : i + 4] for i in range(0, 40, 4))


def keydir(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `keydir` program."""
    return subprocess.run(
        [KEYDIR, *args],
        env={**os.environ, "KEYDIR_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    """`keydir ARGS` through ``service.cli.main`` in this process, answered like ``keydir``."""

    def in_process(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("KEYDIR_DATABASE_URL", url)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["keydir", *args], code, out, err)

    return in_process


def keys_stored(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(CertRow.fingerprint)))


def test_delete(database: tuple[str, Engine], directory: Directory, run: Runner) -> None:
    url, engine = database
    directory.upload(read_data("ed25519.asc"))
    directory.upload(read_data("rsa_multi_uid.asc"))

    done = keydir(url, "delete", *EDDIE_SPACED.split())  # unquoted groups
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"keydir: deleted key {EDDIE}: 2 subkeys, 2 addresses (0 of them published), "
        "1 tokens, 0 unsent mails.\n"
    )
    assert EDDIE not in keys_stored(engine)
    assert len(keys_stored(engine)) == 1

    again = run(url, "delete", f"0x{EDDIE.lower()}")
    assert again.returncode == 1
    assert again.stderr == f"keydir: No key with the fingerprint {EDDIE} is stored.\n"
    assert again.stdout == ""

    bad = run(url, "delete", "0x1234")
    assert bad.returncode == 2
    assert "A fingerprint is 40 (version 4 key) or 64 (version 6 key)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_block_list_and_unblock(
    database: tuple[str, Engine], directory: Directory, run: Runner
) -> None:
    url, engine = database
    directory.upload(read_data("ed25519.asc"))

    blocked = keydir(url, "block", EDDIE_SPACED, "--reason", "court order 7")
    assert blocked.returncode == 0, blocked.stderr
    assert f"keydir: blocked {EDDIE}; uploads of it are refused." in blocked.stdout
    assert f"keydir: deleted key {EDDIE}:" in blocked.stdout
    assert keys_stored(engine) == set()
    with pytest.raises(KeyBlocked, match="is blocked"):
        directory.upload(read_data("ed25519.asc"))

    listed = run(url, "block", "--list")
    assert listed.returncode == 0, listed.stderr
    line = listed.stdout.strip()
    assert line.startswith(EDDIE)
    assert line.endswith("court order 7")
    assert "1 blocked" in listed.stderr

    twice = run(url, "block", EDDIE)
    assert twice.returncode == 0
    assert "was already blocked" in twice.stdout

    lifted = run(url, "unblock", EDDIE.lower())
    assert lifted.returncode == 0, lifted.stderr
    assert f"unblocked {EDDIE}" in lifted.stdout
    assert directory.upload(read_data("ed25519.asc")).keys[0].new

    not_blocked = run(url, "unblock", EDDIE)
    assert not_blocked.returncode == 1
    assert not_blocked.stderr == f"keydir: The fingerprint {EDDIE} is not blocked.\n"

    assert run(url, "block").returncode == 2
    assert run(url, "block", "--list", EDDIE).returncode == 2


def test_stats(database: tuple[str, Engine], directory: Directory, run: Runner) -> None:
    url, engine = database
    directory.upload(read_data("ed25519_revoked.asc"))
    directory.upload(read_data("rsa_multi_uid.asc"))
    Admin(make_sessionmaker(engine)).block("AB" * 32)

    as_json = keydir(url, "stats", "--json")
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert figures == {
        "keys": 2,
        "keys_revoked": 1,
        "addresses": {"unpublished": 5, "pending": 0, "published": 0, "revoked": 0},
        "published_by_domain": [],
        "outbox": {"pending": 0, "failed": 0},
        "blocked": 1,
    }
    assert figures == Admin(make_sessionmaker(engine)).stats().as_dict()

    as_text = run(url, "stats", "--top", "3")
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout.splitlines() == [
        "keys: 2 (1 revoked)",
        "addresses: 5 unpublished, 0 pending, 0 published, 0 revoked",
        "published addresses by domain (top 3):",
        "  (none)",
        "outbox: 0 pending, 0 failed (retrying)",
        "blocked: 1",
    ]
    assert run(url, "stats", "--top", "0").returncode == 2


def test_commands_refuse_a_database_file_that_is_not_there(tmp_path: Path, run: Runner) -> None:
    path = tmp_path / "elsewhere.sqlite3"
    result = run(f"sqlite:///{path}", "stats")
    assert result.returncode == 2
    assert result.stderr.startswith("keydir: there is no database file at sqlite:///")
    assert not path.exists()  # and none was made


def test_commands_refuse_a_database_without_the_schema(tmp_path: Path, run: Runner) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    sqlite3.connect(tmp_path / "elsewhere.sqlite3").close()
    for args in (("stats",), ("delete", EDDIE), ("block", EDDIE), ("block", "--list")):
        result = run(url, *args)
        assert result.returncode == 2, args
        assert "run `keydir migrate`" in result.stderr
        assert "Traceback" not in result.stderr


def test_commands_say_when_the_database_is_unreachable(run: Runner) -> None:
    result = run("postgresql+psycopg://postgres@127.0.0.1:9/keydir", "stats")
    assert result.returncode == 2
    assert result.stderr.startswith("keydir: the database cannot be reached (")


def test_repair_as_the_real_program(database: tuple[str, Engine]) -> None:
    """`keydir repair` reports what it checked; a second run repairs nothing."""
    url, engine = database
    directory = Directory(make_sessionmaker(engine))
    directory.upload(read_data("rsa_multi_uid.asc"))
    directory.upload(read_data("ed25519_revoked.asc"))
    dry = keydir(url, "repair", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("keydir: 2 keys checked, would repair 0")
    done = keydir(url, "repair")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("keydir: 2 keys checked, repaired 0")


@pytest.mark.parametrize(
    "domain", ["../x", "../../../../escaped", "{tmp}/absolute", "a/b", "", ".", "..", "a..b"]
)
def test_export_wkd_refuses_a_domain_that_is_not_a_domain_name(
    database: tuple[str, Engine], tmp_path: Path, run: Runner, domain: str
) -> None:
    # `--domain` names a directory under DIR: a path in it must write nothing anywhere.
    domain = domain.format(tmp=tmp_path)
    out = tmp_path / "site" / "www"
    out.mkdir(parents=True)
    result = run(database[0], "export-wkd", str(out), f"--domain={domain}")
    assert result.returncode == 2
    assert result.stderr == f"keydir: --domain {domain!r} is not a domain name.\n"
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [
        Path("site"),
        Path("site/www"),
    ]


def test_repair_names_keys_it_cannot_read_and_goes_on(
    database: tuple[str, Engine], run: Runner
) -> None:
    """A key stored before its material was refused (an RSA exponent over 2^32) is listed
    for the operator, not a crash in the middle of the repair."""
    url, engine = database
    directory = Directory(make_sessionmaker(engine))
    directory.upload(read_data("ed25519.asc"))
    directory.upload(read_data("rsa_multi_uid.asc"))
    huge = keyforge.rsa_key(2048, exponent=(1 << 33) + 1)
    unreadable = keyforge.certificate(huge, [b"Old <old@example.org>"])
    with engine.begin() as conn:
        conn.execute(
            update(CertRow).where(CertRow.fingerprint == EDDIE).values(full_data=unreadable)
        )
    result = run(url, "repair")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("keydir: 2 keys checked, repaired 0")
    assert "1 keys cannot be read" in result.stdout
    assert f"  {EDDIE}\n" in result.stdout
