"""Running it for real: `keydir serve` over TLS, with several workers, logging JSON lines."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest
from prometheus_client.mmap_dict import MmapedDict
from sqlalchemy import Engine

from tests.api.test_ops import sample
from tests.conftest import read_data
from tests.mailutil import SmtpServer
from tests.serverutil import KEYDIR, free_port, running_server
from tests.tlsutil import make_certificates
from tests.webutil import post_form

EDDIE_FPR = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"


def _request(
    url: str, body: dict[str, object] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), dict(error.headers)


def test_json_log_lines_name_routes_never_addresses_or_tokens(
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
        KEYDIR_LOG_FORMAT="json",
    ) as base:
        status, body, _ = _request(
            f"{base}/vks/v1/upload", {"keytext": read_data("ed25519.asc").decode()}
        )
        assert status == 200
        upload_token = json.loads(body)["token"]
        status, _, _ = _request(
            f"{base}/vks/v1/request-verify",
            {"token": upload_token, "addresses": ["eddie@example.org"]},
        )
        assert status == 200
        deadline = time.monotonic() + 60
        while not smtp.inbox.to("eddie@example.org") and time.monotonic() < deadline:
            time.sleep(0.05)
        _, token = smtp.inbox.link(smtp.inbox.to("eddie@example.org")[0])
        with post_form(base, f"/verify/{token}", f"/verify/{token}") as confirmed:
            assert confirmed.status == 200
        status, _, headers = _request(
            f"{base}/vks/v1/by-email/eddie@example.org?secret=q",
            headers={"X-Request-ID": "probe-0042"},
        )
        assert status == 200
        assert headers["x-request-id"] == "probe-0042"
        status, _, _ = _request(f"{base}/vks/v1/by-email/nobody@example.org")
        assert status == 404
        # The request line is written after the answer: wait for the last one.
        deadline = time.monotonic() + 30
        while log.read_text().count('"keydir.request"') < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    written = log.read_text()
    entries = [json.loads(line) for line in written.splitlines() if line.strip()]  # all JSON
    assert any("Application startup complete" in e["message"] for e in entries)
    requests = [e for e in entries if e["logger"] == "keydir.request"]
    seen = [(e["method"], e["route"], e["status"]) for e in requests]
    assert seen == [
        ("POST", "/vks/v1/upload", 200),
        ("POST", "/vks/v1/request-verify", 200),
        ("GET", "/verify/{token}", 200),
        ("POST", "/verify/{token}", 200),
        ("GET", "/vks/v1/by-email/{address}", 200),
        ("GET", "/vks/v1/by-email/{address}", 404),
    ]
    assert requests[4]["request_id"] == "probe-0042"
    assert len({e["request_id"] for e in requests}) == len(requests)
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in requests)
    for secret in (upload_token, token, "eddie@example.org", "nobody@example.org", "secret=q"):
        assert secret not in written, secret


def _pids_that_counted(directory: Path, route: str) -> set[str]:
    """Worker processes whose metric files hold a request to ``route``."""
    pids = set()
    for path in directory.glob("counter_*.db"):
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if f'"{route}"' in key and value > 0:
                pids.add(path.stem.rsplit("_", 1)[1])
    return pids


def test_metrics_add_up_across_worker_processes(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    temp = tmp_path / "temp"
    temp.mkdir()
    with running_server(
        tmp_path,
        log,
        args=["--workers", "2"],
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'k.sqlite3'}",
        KEYDIR_PARSE_WORKERS="0",
        TMPDIR=str(temp),  # where `keydir serve` makes the metrics directory
    ) as base:
        made = list(temp.glob("keydir-metrics-*"))
        assert len(made) == 1, made
        sent = 0
        # New connections land on either worker once both run (the second may still be
        # starting when the first answers); go on until both have answered some, within a
        # generous bound.
        deadline = time.monotonic() + 120
        while sent < 20 or len(_pids_that_counted(made[0], "/healthz")) < 2:
            if time.monotonic() > deadline:
                break
            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
                assert response.status == 200
            sent += 1
        assert len(_pids_that_counted(made[0], "/healthz")) == 2, "one worker took everything"
        for _ in range(6):  # whichever worker answers the scrape, the sum is the same
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                scraped = response.read().decode()
            counted = sample(
                scraped, "keydir_http_requests_total", method="GET", route="/healthz", status="200"
            )
            assert counted == sent
        assert sample(scraped, "keydir_keys") == 0.0
    assert not made[0].exists(), "the metrics directory is removed at exit"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certificates(tmp_path_factory.mktemp("tls"), "localhost", "127.0.0.1")


def test_serves_https_with_hsts(certificates: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, key, cert = certificates
    port = free_port()
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        port=port,
        args=["--tls-cert", str(cert), "--tls-key", str(key)],
        scheme="https",
        host="localhost",
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'k.sqlite3'}",
    ) as base:
        assert base == f"https://localhost:{port}"
        with httpx2.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
            for url in (f"{base}/healthz", f"https://127.0.0.1:{port}/readyz"):
                answer = client.get(url)
                assert (answer.status_code, answer.text) == (200, "ok\n")
                assert answer.headers["strict-transport-security"] == "max-age=31536000"
            missing = client.get(f"{base}/vks/v1/by-fingerprint/{EDDIE_FPR}")
            assert missing.status_code == 404
            assert missing.headers["strict-transport-security"] == "max-age=31536000"
            uploaded = client.post(
                f"{base}/vks/v1/upload", json={"keytext": read_data("ed25519.asc").decode()}
            )
            assert uploaded.status_code == 200
            assert client.get(f"{base}/vks/v1/by-fingerprint/{EDDIE_FPR}").status_code == 200
        # Not trusted without the CA, and no plain HTTP on the TLS port.
        with httpx2.Client() as untrusting, pytest.raises(httpx2.ConnectError):
            untrusting.get(f"{base}/healthz")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)


def _serve_refusal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYDIR_DATABASE_URL": f"sqlite:///{tmp_path / 'k.sqlite3'}"}
    return subprocess.run(
        [KEYDIR, "serve", "--port", str(free_port()), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_missing_or_mismatched_tls_files(
    certificates: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _ca, key, cert = certificates
    other = tmp_path / "other"
    other.mkdir()
    _other_ca, other_key, _other_cert = make_certificates(other, "localhost")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(key),
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
    )
    cases = {
        "does not exist": ("--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(key)),
        "does not belong to the certificate": (
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(other_key),
        ),
        "are not a PEM certificate": ("--tls-cert", str(key), "--tls-key", str(key)),
        "is encrypted": ("--tls-cert", str(cert), "--tls-key", str(encrypted)),
        "go together": ("--tls-cert", str(cert)),
    }
    for sentence, args in cases.items():
        result = _serve_refusal(tmp_path, *args)
        assert result.returncode == 2, (sentence, result.stderr)
        assert result.stderr.startswith("keydir: "), result.stderr
        assert sentence in result.stderr, (sentence, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_bad_setting_is_one_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "KEYDIR_METRICS_ALLOW": '["everyone"]', "KEYDIR_LOG_FORMAT": "xml"}
    result = subprocess.run(
        [KEYDIR, "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "keydir: a setting is invalid: KEYDIR_" in result.stderr
    assert "KEYDIR_METRICS_ALLOW" in result.stderr and "KEYDIR_LOG_FORMAT" in result.stderr
    assert "Traceback" not in result.stderr
