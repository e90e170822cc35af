"""`keydir worker` as its own process sends what the server queued, on both databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.api.test_verification import request_verify, upload
from tests.mailutil import SmtpServer
from tests.serverutil import KEYDIR


def test_worker_process_sends_queued_mail_and_stops_cleanly(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], tmp_path: Path
) -> None:
    body = upload(mail_client, "ed25519.asc")
    request_verify(mail_client, body["token"], "eddie@example.org", "eddie2@example.org")
    assert smtp.inbox.messages == []
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "KEYDIR_DATABASE_URL": database[0],
        "KEYDIR_SMTP_HOST": "127.0.0.1",
        "KEYDIR_SMTP_PORT": str(smtp.port),
        "KEYDIR_LOG_FORMAT": "json",
    }
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [KEYDIR, "worker", "--poll", "0.2"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while len(smtp.inbox.messages) < 2 and time.monotonic() < deadline:
                assert worker.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
    assert code == 0, log.read_text()
    assert sorted(m["To"] for m in smtp.inbox.messages) == [
        "eddie2@example.org",
        "eddie@example.org",
    ]
    # No address appears in the worker's log; its log lines are JSON, as the server's.
    written = log.read_text()
    assert "example.org" not in written
    logged = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    assert any(e["message"] == "outbox: 2 sent, 0 failed" for e in logged), written
