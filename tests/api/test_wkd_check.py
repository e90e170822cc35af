"""/wkd/check against real TLS servers on loopback: one deadline, one resolution, its own
threads, a rate limit.

The name `openpgpkey.<domain>` is made to resolve to those servers by replacing
`socket.getaddrinfo` for the test's names only (a resolver of our own would need root); the
servers' certificates come from a throwaway CA that `SSL_CERT_FILE` makes trusted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.api.wkd import CHECKS_AT_ONCE
from service.app import build
from service.core.wkd_check import check_domain
from service.settings import Settings
from tests.serverutil import free_port
from tests.tlsutil import make_certificates

SITE = "keys.example.org"
NAMES = ("openpgpkey.drip.example", "openpgpkey.good.example")


class TlsServer:
    """A TLS server on loopback. ``drip``: after the request, the answer goes out one byte a
    second, for ever; otherwise a policy answer from ``SITE`` at once."""

    def __init__(self, certificate: tuple[Path, Path], *, drip: bool) -> None:
        self.drip = drip
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificate[0], certificate[1])
        self.context.sni_callback = self._sni
        self.server_names: list[str | None] = []
        self.bytes_sent = 0
        self.open = 0
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with self.changed:
            self.open += 1
            self.changed.notify_all()
        try:
            connection.settimeout(30)
            with self.context.wrap_socket(connection, server_side=True) as tls:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                if not self.drip:
                    tls.sendall(f"HTTP/1.1 200 OK\r\nX-Keydir-Site: {SITE}\r\n\r\n".encode())
                    return
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:
                    if self.stop.wait(1):
                        return
                    tls.sendall(bytes([byte]))
                    self.bytes_sent += 1
        except OSError:
            return
        finally:
            with self.changed:
                self.open -= 1
                self.changed.notify_all()

    def wait_for_open(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.open >= count, timeout)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@dataclass
class Resolver:
    """Answers for the test's names: a list of ports on 127.0.0.1, one per lookup (the last
    one repeats); other names go to the real resolver."""

    real: Any
    answers: dict[str, list[int]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: object, *args: object, **kwargs: object) -> list[Any]:
        if host not in self.answers and not host.endswith(".example"):
            return list(self.real(host, port, *args, **kwargs))
        self.lookups.append(host)
        ports = self.answers.get(host)
        if not ports:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        chosen = ports.pop(0) if len(ports) > 1 else ports[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", chosen))]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca, key, crt = make_certificates(tmp_path_factory.mktemp("wkd-check-tls"), *NAMES)
    return ca, crt, key


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path, Path]) -> Resolver:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    fake = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture
def dripping(certificate: tuple[Path, Path, Path]) -> Iterator[TlsServer]:
    server = TlsServer(certificate[1:], drip=True)
    yield server
    server.close()


@pytest.fixture
def policy_server(certificate: tuple[Path, Path, Path]) -> Iterator[TlsServer]:
    server = TlsServer(certificate[1:], drip=False)
    yield server
    server.close()


def test_a_dripping_server_gets_no_more_than_the_deadline(
    resolver: Resolver, dripping: TlsServer
) -> None:
    # The server sends a byte every second: a timeout per read never fires. The whole
    # check must still end at its deadline, with a sentence saying so.
    resolver.answers["openpgpkey.drip.example"] = [dripping.port]
    results: list[Any] = []
    started = time.monotonic()
    worker = threading.Thread(
        target=lambda: results.append(
            check_domain("drip.example", SITE, allow_private=True, timeout=4)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the check outlived its deadline by a minute"
    assert elapsed < 30  # 4 s, with all the slack a loaded machine may need
    assert dripping.bytes_sent >= 2  # it was dripping, not silent
    [result] = results
    assert result.dns_ok is True
    assert result.policy_ok is False
    assert result.problem == (
        "https://openpgpkey.drip.example/.well-known/openpgpkey/drip.example/policy "
        "did not answer within 4 seconds."
    )


def test_the_name_is_resolved_once_and_the_checked_address_is_contacted(
    resolver: Resolver, policy_server: TlsServer
) -> None:
    # DNS rebinding: the first answer is checked, a second one would point elsewhere (here a
    # listener standing for a service inside our own network).
    with socket.create_server(("127.0.0.1", 0)) as inside:
        inside.settimeout(0)
        resolver.answers["openpgpkey.good.example"] = [
            policy_server.port,
            inside.getsockname()[1],
        ]
        result = check_domain("good.example", SITE, allow_private=True, timeout=20)
        with pytest.raises(BlockingIOError):
            inside.accept()  # nobody knocked
    assert resolver.lookups == ["openpgpkey.good.example"]
    assert result.resolved == ["127.0.0.1"]
    assert (result.policy_ok, result.served_here, result.problem) == (True, True, None)
    # TLS was for the name, not the address (SNI).
    assert policy_server.server_names == ["openpgpkey.good.example"]


def test_the_certificate_must_be_for_the_name(resolver: Resolver, policy_server: TlsServer) -> None:
    resolver.answers["openpgpkey.other.example"] = [policy_server.port]
    result = check_domain("other.example", SITE, allow_private=True, timeout=20)
    assert result.policy_ok is False
    assert result.problem is not None
    assert "valid TLS certificate for openpgpkey.other.example" in result.problem
    assert "certificate verify failed" in result.problem


def test_checks_are_rate_limited_per_client(settings: Settings, resolver: Resolver) -> None:
    limited = settings.model_copy(update={"rate_wkd_checks_per_hour": 2})
    with TestClient(build(limited)) as client:
        assert client.get("/wkd/check/not a domain").status_code == 400  # not counted
        for _ in range(2):
            answer = client.get("/wkd/check/nowhere.example")
            assert answer.status_code == 200
            assert answer.json()["problem"].startswith("openpgpkey.nowhere.example does not")
        refused = client.get("/wkd/check/nowhere.example")
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/plain")
    assert "Try again in" in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 3601
    assert resolver.lookups == ["openpgpkey.nowhere.example"] * 2


@pytest.fixture
def served(settings: Settings, resolver: Resolver) -> Iterator[str]:
    """The application behind a real uvicorn server in this process (where the test's
    resolver applies); its base URL."""
    configured = settings.model_copy(
        update={
            "wkd_check_allow_private": True,
            "wkd_check_timeout_seconds": 60,
            "rate_wkd_checks_per_hour": 0,
        }
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build(configured), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(60)


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_many_slow_checks_at_once_leave_the_other_routes_alone(
    served: str, resolver: Resolver, dripping: TlsServer
) -> None:
    # 60 checks of a dripping server at once: more than the 40 threads every synchronous
    # route shares. The pages must still answer while they hang.
    resolver.answers["openpgpkey.drip.example"] = [dripping.port]
    answers: list[tuple[int, str]] = []

    def ask() -> None:
        answers.append(_get(f"{served}/wkd/check/drip.example", timeout=180))

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(60)]
    for asker in askers:
        asker.start()
    assert dripping.wait_for_open(CHECKS_AT_ONCE, timeout=60)
    started = time.monotonic()
    page = _get(f"{served}/about", timeout=30)
    assert page[0] == 200
    assert time.monotonic() - started < 15  # milliseconds when idle; generous under load
    assert dripping.open <= CHECKS_AT_ONCE  # the checks hold their own few threads only
    dripping.close()  # the slow server goes away: every check ends
    for asker in askers:
        asker.join(180)
    assert len(answers) == 60
    assert {status for status, _ in answers} <= {200, 429}
    assert sum(status == 200 for status, _ in answers) >= CHECKS_AT_ONCE
