"""The SMTP sender against a real SMTP server: plain, STARTTLS with login, implicit TLS."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from service.mail.senders import SendFailed, SmtpSender, build_email
from service.settings import SmtpTls
from tests.mailutil import Inbox, free_port
from tests.tlsutil import make_certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def authenticator(
    _server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"keydir", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca, key, crt = make_certificates(tmp_path, "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(crt, key)
    client = ssl.create_default_context(cafile=str(ca))
    return server, client


def message() -> Any:
    return build_email(
        sender="keydir@example.org",
        recipient="alice@example.org",
        subject="Hello",
        text="Body\n",
        html="<p>Body</p>",
        message_id="<1@example.org>",
    )


@pytest.fixture
def starttls_server(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="localhost",
        port=port,
        tls_context=certificates[0],
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    yield inbox, port
    controller.stop()


def test_starttls_with_login(
    starttls_server: tuple[Inbox, int], certificates: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    inbox, port = starttls_server
    SmtpSender(
        "localhost",
        port,
        tls=SmtpTls.STARTTLS,
        username="keydir",
        password="s3cret",
        ssl_context=certificates[1],
    ).send(message())
    assert [m["To"] for m in inbox.messages] == ["alice@example.org"]


def test_wrong_password_or_no_tls_fail_cleanly(
    starttls_server: tuple[Inbox, int], certificates: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    inbox, port = starttls_server
    with pytest.raises(SendFailed):
        SmtpSender(
            "localhost",
            port,
            tls=SmtpTls.STARTTLS,
            username="keydir",
            password="wrong",
            ssl_context=certificates[1],
        ).send(message())
    with pytest.raises(SendFailed):  # the server insists on STARTTLS
        SmtpSender("localhost", port, username="keydir", password="s3cret").send(message())
    with pytest.raises(SendFailed):  # a certificate we do not trust
        SmtpSender(
            "localhost", port, tls=SmtpTls.STARTTLS, username="keydir", password="s3cret"
        ).send(message())
    assert inbox.messages == []


def test_implicit_tls(certificates: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="localhost", port=port, ssl_context=certificates[0])
    controller.start()
    try:
        SmtpSender("localhost", port, tls=SmtpTls.TLS, ssl_context=certificates[1]).send(message())
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
