"""What a server process writes to its log at info level: no tokens, no key material, no
unconfirmed address, whatever requests it served."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from sqlalchemy import Engine

from tests.conftest import read_data
from tests.mailutil import SmtpServer
from tests.serverutil import running_server
from tests.webutil import post_form


def _call(url: str, body: bytes | None = None, content_type: str = "application/json") -> str:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode("latin-1")
    except urllib.error.HTTPError as error:
        with error:
            return error.read().decode("latin-1")


def test_server_log_holds_no_tokens_addresses_or_keys(
    database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with running_server(
        tmp_path,
        log,
        KEYDIR_DATABASE_URL=database[0],
        KEYDIR_AUTO_MIGRATE="false",
        KEYDIR_SMTP_HOST="127.0.0.1",
        KEYDIR_SMTP_PORT=str(smtp.port),
    ) as base:
        keytext = read_data("rsa_multi_uid.asc").decode()
        uploaded = json.loads(
            _call(f"{base}/vks/v1/upload", json.dumps({"keytext": keytext}).encode())
        )
        _call(
            f"{base}/vks/v1/request-verify",
            json.dumps({"token": uploaded["token"], "addresses": ["rita@example.org"]}).encode(),
        )
        deadline = time.monotonic() + 60
        while not smtp.inbox.to("rita@example.org") and time.monotonic() < deadline:
            time.sleep(0.05)
        _, token = smtp.inbox.link(smtp.inbox.to("rita@example.org")[0])
        with post_form(base, f"/verify/{token}", f"/verify/{token}"):
            pass
        for address in ("rita@example.net", "rita.work@example.com", "rita@example.org"):
            _call(f"{base}/vks/v1/by-email/{urllib.parse.quote(address)}")
            _call(f"{base}/pks/lookup?op=get&search={urllib.parse.quote(address)}")
            _call(f"{base}/search?q={urllib.parse.quote(address)}")
        _call(
            f"{base}/pks/add",
            urllib.parse.urlencode({"keytext": keytext}).encode(),
            "application/x-www-form-urlencoded",
        )
        _call(
            f"{base}/vks/v1/upload",
            json.dumps({"keytext": read_data("ed25519.sec.asc").decode()}).encode(),
        )
    written = log.read_text()
    assert "Application startup complete" in written  # the log is there and was read
    # One line per request, naming the route template.
    assert "GET /vks/v1/by-email/{address} 200 " in written
    assert "POST /verify/{token} 200 " in written
    for secret in (
        uploaded["token"],
        token,
        "rita@example.net",
        "rita.work@example.com",
        "rita@example.org",
        "BEGIN PGP",
        "PRIVATE KEY",
    ):
        assert secret not in written, secret
