"""`keydir serve` as a newcomer runs it: a real server process on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db.session import make_engine
from tests.conftest import POSTGRES_URL
from tests.serverutil import KEYDIR, free_port, running_server
from tests.webutil import post_form


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "server.log"


@pytest.fixture
def server(tmp_path: Path, server_log: Path) -> Iterator[str]:
    with running_server(
        tmp_path, server_log, KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'new.sqlite3'}"
    ) as base:
        yield base


def test_fresh_start_on_sqlite_answers_404_sentence(server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server}/vks/v1/by-fingerprint/{'AB' * 20}", timeout=10)
    with caught.value as response:
        assert response.status == 404
        assert response.headers["content-type"].startswith("text/plain")
        assert response.read().decode() == f"No key found for fingerprint {'AB' * 20}.\n"


def _refused(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYDIR_DATABASE_URL": url, "KEYDIR_AUTO_MIGRATE": "false"}
    return subprocess.run(
        [KEYDIR, "serve", "--port", str(free_port())],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_outdated_schema_and_says_what_to_run(tmp_path: Path) -> None:
    result = _refused(f"sqlite:///{tmp_path / 'empty.sqlite3'}", tmp_path)
    assert result.returncode == 2
    assert "keydir migrate" in result.stderr


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_DATABASE_URL")
def test_serve_refuses_outdated_postgres_schema(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    engine = make_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS outdated CASCADE"))
        conn.execute(text("CREATE SCHEMA outdated"))
    engine.dispose()
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3Doutdated"
    result = _refused(url, tmp_path)
    assert result.returncode == 2
    assert "keydir migrate" in result.stderr
    # And `keydir migrate` then makes it start-able: the schema becomes current.
    migrate = subprocess.run(
        [KEYDIR, "migrate"],
        env={**os.environ, "KEYDIR_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "now current" in migrate.stdout


def _post_json(url: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def test_without_smtp_the_mail_and_its_link_appear_on_the_console(
    server: str, server_log: Path
) -> None:
    """The embedded default: no mail server, yet a person can follow the link."""
    keytext = (Path(__file__).parent / "data" / "ed25519.asc").read_text()
    uploaded = _post_json(f"{server}/vks/v1/upload", {"keytext": keytext})
    _post_json(
        f"{server}/vks/v1/request-verify",
        {"token": uploaded["token"], "addresses": ["eddie@example.org"]},
    )
    deadline = time.monotonic() + 60
    while "/verify/" not in server_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    printed = server_log.read_text()
    assert "To: eddie@example.org" in printed
    link = next(w for w in printed.split() if "/verify/" in w)
    assert link.startswith("http://localhost:8080/verify/")
    token = link.rsplit("/", 1)[1]
    with post_form(server, f"/verify/{token}", f"/verify/{token}") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{server}/vks/v1/by-email/eddie@example.org", timeout=30) as found:
        assert found.status == 200
