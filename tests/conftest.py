"""Shared fixtures: the same suite runs on SQLite and, when TEST_DATABASE_URL is set, PostgreSQL.

The schema is always made by the Alembic migrations. Each test starts from empty tables.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from service.app import build
from service.core.directory import Directory
from service.db.migrate import upgrade
from service.db.models import Base
from service.db.session import make_engine, make_sessionmaker
from service.settings import Settings
from tests.gpgutil import gnupg_home
from tests.mailutil import SmtpServer

DATA = Path(__file__).parent / "data"
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"]
NO_RATE_LIMITS = {
    "rate_uploads_per_hour": 0,
    "rate_mail_requests_per_hour": 0,
    "rate_address_lookups_per_minute": 0,
    # In-process parsing: a pool of worker processes per test client would cost seconds.
    # The real server processes started by tests parse in workers, as in production, and
    # tests/robustness/test_parsing.py tests the bounded parser itself.
    "parse_workers": 0,
}


def _reset_postgres(url: str) -> Engine:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    return engine


@pytest.fixture(scope="session")
def _engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, Engine]]]:
    engines: dict[str, tuple[str, Engine]] = {}
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'keydir.sqlite3'}"
    engines["sqlite"] = (sqlite_url, make_engine(sqlite_url))
    if POSTGRES_URL:
        # A set TEST_DATABASE_URL that does not answer is a failure, never a skip: CI must
        # not pass with the PostgreSQL half of the suite silently missing.
        engines["postgresql"] = (POSTGRES_URL, _reset_postgres(POSTGRES_URL))
    for _url, engine in engines.values():
        upgrade(engine)
    yield engines
    for _url, engine in engines.values():
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database(
    request: pytest.FixtureRequest, _engines: dict[str, tuple[str, Engine]]
) -> tuple[str, Engine]:
    """(url, engine) of a migrated, empty database; once per backend."""
    if request.param not in _engines:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (set by .ci/run)")
    url, engine = _engines[request.param]
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return url, engine


@pytest.fixture
def settings(database: tuple[str, Engine]) -> Settings:
    # Tests send mail by calling the dispatcher themselves, not from a background thread.
    # Per-client rate limits are off here (every request comes from one test client);
    # tests/robustness/test_rate_limits.py turns them on.
    return Settings(
        database_url=database[0], auto_migrate=False, dispatch_mail=False, **NO_RATE_LIMITS
    )


@pytest.fixture
def directory(database: tuple[str, Engine]) -> Directory:
    return Directory(make_sessionmaker(database[1]))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build(settings)) as test_client:
        yield test_client


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis (this kind of machine runs one; CI must have it), database 15 emptied."""
    url = "redis://127.0.0.1:6379/15"
    connection = redis.Redis.from_url(url)
    try:
        connection.flushdb()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis on 127.0.0.1:6379 is needed in CI")
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield url
    connection.flushdb()
    connection.close()


def read_data(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def gnupghome(tmp_path: Path) -> Iterator[Path]:
    """A fresh, empty GnuPG home; its agent and dirmngr are stopped afterwards."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    yield from gnupg_home(tmp_path / "gnupg")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail_settings(database: tuple[str, Engine], smtp: SmtpServer) -> Settings:
    return Settings(
        database_url=database[0],
        auto_migrate=False,
        dispatch_mail=False,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        base_url="https://keys.example.org",
        **NO_RATE_LIMITS,
    )


@pytest.fixture
def mail_client(mail_settings: Settings) -> Iterator[TestClient]:
    # Served at its public https name, so the Secure CSRF cookie travels as in a browser.
    with TestClient(build(mail_settings), base_url=mail_settings.base_url) as test_client:
        yield test_client
