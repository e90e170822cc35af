"""Two `keydir serve` processes on one PostgreSQL act as one service.

A person may upload through one process and click the mailed link on another (a load
balancer picks); the rate limits and the per-address mail limit hold across processes,
and the mail dispatchers of both processes send each mail once. Real SMTP (aiosmtpd) takes
the mails. With TEST_DATABASE_URL set but PostgreSQL away, these tests fail (the database
fixture cannot reset it); they skip only without TEST_DATABASE_URL.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from service import openpgp
from service.db.models import OutboxRow
from tests.conftest import POSTGRES_URL, read_data
from tests.mailutil import SmtpServer
from tests.serverutil import running_server
from tests.webutil import post_form

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_DATABASE_URL")

UPLOADS_PER_HOUR = 3
EDDIE = "eddie@example.org"


@pytest.fixture
def servers(
    database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """Two server processes on the test database, each with its own mail dispatcher."""
    if not database[0].startswith("postgresql"):
        pytest.skip("several server processes share one PostgreSQL")
    env = {
        "KEYDIR_DATABASE_URL": database[0],
        "KEYDIR_AUTO_MIGRATE": "false",
        "KEYDIR_SMTP_HOST": "127.0.0.1",
        "KEYDIR_SMTP_PORT": str(smtp.port),
        "KEYDIR_DISPATCH_MAIL": "true",
        "KEYDIR_RATE_UPLOADS_PER_HOUR": str(UPLOADS_PER_HOUR),
        "KEYDIR_PARSE_WORKERS": "1",
    }
    with (
        running_server(tmp_path, tmp_path / "a.log", **env) as first,
        running_server(tmp_path, tmp_path / "b.log", **env) as second,
    ):
        yield first, second


def call(method: str, url: str, payload: dict[str, Any] | None = None) -> tuple[int, Any, Any]:
    """(status, body, headers); JSON bodies decoded."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        with error:
            status, raw, headers = error.code, error.read(), error.headers
    is_json = headers.get("content-type", "").startswith("application/json")
    return status, json.loads(raw) if is_json else raw.decode(), headers


def upload(base: str, name: str = "ed25519.asc") -> tuple[int, Any, Any]:
    return call("POST", f"{base}/vks/v1/upload", {"keytext": read_data(name).decode()})


def wait_for_mail(smtp: SmtpServer, address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not smtp.inbox.to(address):
        assert time.monotonic() < deadline, f"no mail to {address}"
        time.sleep(0.05)


def wait_until_outbox_is_empty(engine: Engine, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            unsent = conn.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
            )
        if unsent == 0:
            return
        assert time.monotonic() < deadline, "mails stayed unsent"
        time.sleep(0.1)


def test_upload_on_one_confirm_on_the_other_find_on_the_first(
    servers: tuple[str, str], smtp: SmtpServer
) -> None:
    a, b = servers
    status, uploaded, _ = upload(a)
    assert status == 200, uploaded
    status, asked, _ = call(
        "POST", f"{a}/vks/v1/request-verify", {"token": uploaded["token"], "addresses": [EDDIE]}
    )
    assert status == 200, asked
    assert asked["status"][EDDIE] == "pending"
    # Not published yet, on either process.
    for base in servers:
        assert call("GET", f"{base}/vks/v1/by-email/{EDDIE}")[0] == 404

    wait_for_mail(smtp, EDDIE)
    kind, token = smtp.inbox.link(smtp.inbox.to(EDDIE)[0])
    assert kind == "verify"
    # The link names the public URL; behind it, the balancer sends this click to the other.
    with post_form(b, f"/verify/{token}", f"/verify/{token}") as confirmed:
        assert confirmed.status == 200
        assert "confirmed" in confirmed.read().decode()

    status, armored, headers = call("GET", f"{a}/vks/v1/by-email/{EDDIE}")
    assert status == 200
    assert headers["content-type"].startswith("application/pgp-keys")
    served = openpgp.read_upload(armored.encode()).certificates[0]
    assert served.fingerprint == uploaded["key_fpr"]
    assert [uid.address for uid in served.user_ids] == [EDDIE]  # eddie2@ stays unpublished
    status, index, _ = call("GET", f"{a}/pks/lookup?op=index&options=mr&search={EDDIE}")
    assert status == 200
    assert "uid:Eddie <eddie@example.org>" in index
    # And the other process agrees, byte for byte.
    assert call("GET", f"{b}/vks/v1/by-email/{EDDIE}")[1] == armored


def test_an_upload_limit_used_up_on_one_is_used_up_on_the_other(
    servers: tuple[str, str],
) -> None:
    a, b = servers
    for _ in range(UPLOADS_PER_HOUR):
        assert upload(a)[0] == 200
    status, body, headers = upload(b)
    assert status == 429
    assert body["error"].startswith("Too many requests of this kind from your address.")
    assert 0 < int(headers["retry-after"]) <= 3600
    # Every upload path counts together, on every process.
    hkp = urllib.request.Request(
        f"{b}/pks/add",
        data=urllib.parse.urlencode({"keytext": read_data("ed25519.asc").decode()}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(hkp, timeout=60)
    with refused.value as error:
        assert error.code == 429
    assert upload(a)[0] == 429


def test_a_second_mail_request_on_the_other_process_sends_no_second_mail(
    servers: tuple[str, str], smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    a, b = servers
    status, uploaded, _ = upload(a)
    assert status == 200
    for base in (a, b):
        status, asked, _ = call(
            "POST",
            f"{base}/vks/v1/request-verify",
            {"token": uploaded["token"], "addresses": [EDDIE]},
        )
        assert status == 200, asked
        assert asked["status"][EDDIE] == "pending"
    wait_for_mail(smtp, EDDIE)
    wait_until_outbox_is_empty(database[1])
    time.sleep(1)  # room for a wrongly queued second mail to arrive
    assert len(smtp.inbox.to(EDDIE)) == 1
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(OutboxRow)) == 1
