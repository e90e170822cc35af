"""One real `keydir serve` per test module (and database), as an attacker meets it.

Each test starts from empty tables and an empty inbox; per-client rate limits are off, since
every request comes from one test client and the attacks need many of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.attacks.live import Client, Server
from tests.attackutil import Keysmith
from tests.gpgutil import gnupg_home
from tests.mailutil import SmtpServer
from tests.serverutil import running_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    _engines: dict[str, tuple[str, Engine]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    if request.param not in _engines:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (set by .ci/run)")
    url, engine = _engines[request.param]
    workdir = tmp_path_factory.mktemp(f"server-{request.param}")
    smtp = SmtpServer()
    smtp.start()
    try:
        with running_server(
            workdir,
            workdir / "server.log",
            KEYDIR_DATABASE_URL=url,
            KEYDIR_AUTO_MIGRATE="false",
            KEYDIR_SMTP_HOST="127.0.0.1",
            KEYDIR_SMTP_PORT=str(smtp.port),
            KEYDIR_RATE_UPLOADS_PER_HOUR="0",
            KEYDIR_RATE_MAIL_REQUESTS_PER_HOUR="0",
            KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE="0",
        ) as base:
            yield Server(base, smtp, engine)
    finally:
        smtp.stop()


@pytest.fixture
def fresh(server: Server) -> Server:
    """The module's server with empty tables and an empty inbox."""
    server.reset()
    return server


@pytest.fixture(scope="module")
def keysmith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keysmith]:
    for home in gnupg_home(tmp_path_factory.mktemp("keysmith") / "gnupg"):
        yield Keysmith(home)


@pytest.fixture
def new_client(fresh: Server, tmp_path: Path) -> Iterator[Callable[[], Client]]:
    """Makes GnuPG users with empty keyrings; their agents and dirmngrs stop afterwards."""
    homes: list[Iterator[Path]] = []

    def make() -> Client:
        homes.append(gnupg_home(tmp_path / f"gnupg-{len(homes)}"))
        return Client(next(homes[-1]), fresh)

    yield make
    for home in homes:
        next(home, None)
