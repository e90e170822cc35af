"""The operator commands on SQLite and PostgreSQL: each once as the real `keydir` program (as
an operator runs it), the rest through the same entry point in this process (faster)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from service.cli import WKD_ROOT, main
from service.core.admin import Admin
from service.core.directory import Directory, KeyBlocked
from service.core.wkd import local_part_hash
from service.db.models import CertRow
from service.db.session import make_sessionmaker
from tests import keyforge
from tests.api.test_verification import publish
from tests.conftest import read_data
from tests.mailutil import SmtpServer
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


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def hu(site: Path, domain: str = "example.org") -> Path:
    return site / ".well-known" / "openpgpkey" / domain / "hu"


@pytest.fixture
def published(mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]) -> str:
    """eddie@ and joerg@example.org published (two keys); the url of their database."""
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    publish(mail_client, smtp, database[1], "weird_uid.asc", "joerg@example.org")
    return database[0]


def test_export_wkd_removes_what_is_no_longer_published(
    published: str, tmp_path: Path, run: Runner
) -> None:
    # A cron re-export must withdraw a deleted key's address, not keep serving it.
    site = tmp_path / "site"
    first = keydir(published, "export-wkd", str(site))
    assert first.returncode == 0, first.stderr
    before = tree(site)
    eddie, joerg = local_part_hash("eddie"), local_part_hash("joerg")
    assert sorted(p.name for p in hu(site).iterdir()) == sorted([eddie, joerg])

    assert run(published, "delete", EDDIE).returncode == 0
    again = run(published, "export-wkd", str(site))
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"keydir: wrote 1 keys for 1 domains under {site / WKD_ROOT}\n"
    after = tree(site)
    gone = f".well-known/openpgpkey/example.org/hu/{eddie}"
    assert set(before) - set(after) == {gone}
    assert after == {k: v for k, v in before.items() if k != gone}  # the rest byte for byte
    # Nothing of the build is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    # A domain no longer exported goes too.
    net = run(published, "export-wkd", str(site), "--domain=example.net")
    assert net.returncode == 0, net.stderr
    assert tree(site) == {
        ".well-known": None,
        ".well-known/openpgpkey": None,
        ".well-known/openpgpkey/example.net": None,
        ".well-known/openpgpkey/example.net/hu": None,
        ".well-known/openpgpkey/example.net/policy": b"",
    }


def test_a_failed_export_leaves_the_previous_tree(
    published: str, tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    assert run(published, "export-wkd", str(site)).returncode == 0
    before = tree(site)

    unreachable = run("postgresql+psycopg://postgres@127.0.0.1:9/keydir", "export-wkd", str(site))
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith("keydir: the database cannot be reached (")
    assert tree(site) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    # The disk fills up half-way through writing the new tree.
    real_write = Path.write_bytes
    calls = []

    def fill_up(path: Path, data: bytes) -> int:
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    full = run(published, "export-wkd", str(site))
    monkeypatch.undo()
    assert full.returncode == 2
    assert full.stderr == (
        f"keydir: cannot write the WKD tree beside {site} (No space left on device); "
        "the previous export is unchanged.\n"
    )
    assert len(calls) == 2
    assert tree(site) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_export_wkd_through_a_symbolic_link(published: str, tmp_path: Path, run: Runner) -> None:
    # An operator who deploys by switching a link: the link moves, their own tree stays.
    mine = tmp_path / "wkd-by-hand"
    (mine / ".well-known" / "openpgpkey").mkdir(parents=True)
    site = tmp_path / "site"
    site.symlink_to(mine.name)
    assert run(published, "export-wkd", str(site)).returncode == 0
    assert site.is_symlink()
    first = site.resolve()
    assert first.parent == tmp_path.resolve()
    assert first.name.startswith("site.export-")
    assert len(list(hu(site).iterdir())) == 2
    assert tree(mine) == {".well-known": None, ".well-known/openpgpkey": None}

    assert run(published, "delete", EDDIE).returncode == 0
    assert run(published, "export-wkd", str(site)).returncode == 0
    assert [p.name for p in hu(site).iterdir()] == [local_part_hash("joerg")]
    assert not first.exists()  # an earlier export's tree is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["site", "wkd-by-hand", site.resolve().name]
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("index.html", "index.html"),
        (".well-known/security.txt", ".well-known/security.txt"),
        ("blog/post.html", "blog"),
    ],
)
def test_export_wkd_refuses_a_directory_holding_other_files(
    database: tuple[str, Engine], tmp_path: Path, run: Runner, extra: str, named: str
) -> None:
    # Each export replaces the whole directory: pointed at a web root, it would delete the site.
    root = tmp_path / "www"
    (root / extra).parent.mkdir(parents=True, exist_ok=True)
    (root / extra).write_bytes(b"the operator's own")
    before = tree(root)
    result = run(database[0], "export-wkd", str(root))
    assert result.returncode == 2
    assert result.stderr == (
        f"keydir: {root} holds {named}, which keydir export-wkd did not write; each export "
        "replaces the whole directory, so give it a directory of its own.\n"
    )
    assert tree(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["www"]


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--port", "99999"], "keydir: --port 99999 is not a TCP port (1 to 65535).\n"),
        (["--port", "65536"], "keydir: --port 65536 is not a TCP port (1 to 65535).\n"),
        (["--port", "0"], "keydir: --port 0 is not a TCP port (1 to 65535).\n"),
        (["--port=-80"], "keydir: --port -80 is not a TCP port (1 to 65535).\n"),
        (["--workers", "0"], "keydir: --workers must be at least 1.\n"),
        (["--workers=-2"], "keydir: --workers must be at least 1.\n"),
    ],
)
def test_serve_refuses_a_port_or_worker_count_out_of_range(
    tmp_path: Path, args: list[str], sentence: str
) -> None:
    # uvicorn would listen on port 99999 mod 65536 = 34463 without a word.
    url = f"sqlite:///{tmp_path / 'keydir.sqlite3'}"
    result = subprocess.run(
        [KEYDIR, "serve", *args],
        env={**os.environ, "KEYDIR_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (2, sentence)
    assert not (tmp_path / "keydir.sqlite3").exists()  # stopped before touching anything
