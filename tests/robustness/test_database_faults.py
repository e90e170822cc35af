"""PostgreSQL out of reach under load: fast 503s with a sentence, no partial writes, and
recovery on its own when it is back. The fault is a real one: the server talks to the
database through a TCP relay that the test cuts and restores."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.app import build
from service.db.models import CertRow
from service.settings import Settings
from tests.conftest import NO_RATE_LIMITS, POSTGRES_URL, read_data

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_DATABASE_URL")


class Relay:
    """Forwards TCP connections to the database until cut; cutting drops every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def relayed(database: tuple[str, Engine]) -> Iterator[tuple[TestClient, Relay]]:
    if not database[0].startswith("postgresql"):
        pytest.skip("the fault is cut between the server and PostgreSQL")
    parts = urlsplit(database[0])
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = (
        f"{parts.username}@127.0.0.1:{relay.port}"
        if parts.username
        else (f"127.0.0.1:{relay.port}")
    )
    url = urlunsplit(parts._replace(netloc=netloc))
    settings = Settings(database_url=url, auto_migrate=False, dispatch_mail=False, **NO_RATE_LIMITS)
    with TestClient(build(settings)) as client:
        yield client, relay
    relay.close()


def test_database_away_gives_fast_503_and_recovers(
    relayed: tuple[TestClient, Relay], database: tuple[str, Engine]
) -> None:
    client, relay = relayed
    keytext = read_data("ed25519.asc").decode()
    assert client.get("/vks/v1/by-fingerprint/" + "AB" * 20).status_code == 404
    relay.cut()
    started = time.monotonic()
    for _ in range(5):
        lookup = client.get("/vks/v1/by-fingerprint/" + "AB" * 20)
        assert lookup.status_code == 503
        assert "database is unavailable" in lookup.text
        assert lookup.headers["retry-after"] == "30"
        upload = client.post("/vks/v1/upload", json={"keytext": keytext})
        assert upload.status_code == 503
        assert "database is unavailable" in upload.json()["error"]
        hkp = client.post("/pks/add", data={"keytext": keytext})
        assert hkp.status_code == 503
    # Under load: many requests at once while the database is away, all refused cleanly.
    codes: list[int] = []

    def hammer() -> None:
        for _ in range(10):
            codes.append(client.get("/vks/v1/by-keyid/" + "CD" * 8).status_code)
            codes.append(client.post("/vks/v1/upload", json={"keytext": keytext}).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert codes == [503] * 160
    # Each refusal came at once, not after a long hang (a generous bound, not a benchmark).
    assert time.monotonic() - started < 60
    with database[1].connect() as conn:  # nothing half-written
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0
    relay.restore()
    recovered = client.post("/vks/v1/upload", json={"keytext": keytext})
    assert recovered.status_code == 200
    fpr = recovered.json()["key_fpr"]
    assert client.get(f"/vks/v1/by-fingerprint/{fpr}").status_code == 200
