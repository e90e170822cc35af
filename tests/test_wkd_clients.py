"""WKD as real clients use it: GnuPG and sq over TLS with real DNS names, and nginx serving
the static export.

The TLS test builds its own little world (TESTING.md): a network namespace whose /etc/hosts
points example.org and openpgpkey.example.org at its loopback, a throwaway CA added to its
trust store, and the server on port 443 with a certificate for both names. It needs root
and `ip`; CI runs as root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.app import build
from service.core.wkd import local_part_hash
from service.db.migrate import upgrade
from service.db.session import make_engine
from service.openpgp.packets import Tag, parse_packets
from service.settings import Settings
from tests.api.test_verification import publish
from tests.api.test_wkd import export
from tests.mailutil import SmtpServer
from tests.serverutil import free_port
from tests.tlsutil import make_certificates

BIN = Path(sys.executable).parent
EDDIE = local_part_hash("eddie")


def user_ids(data: bytes) -> list[bytes]:
    return [p.body for p in parse_packets(data, max_packets=1000) if p.tag == Tag.USER_ID]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_exported_tree_served_by_nginx_gives_the_same_bytes(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], tmp_path: Path
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    publish(mail_client, smtp, database[1], "weird_uid.asc", "joerg@example.org")
    site = tmp_path / "site"
    export(database[0], site)
    port = free_port()
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    # Run as root, nginx's workers would drop to another user that cannot read pytest's
    # private temporary directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        user + "daemon off; pid nginx.pid; error_log logs/error.log;\n"
        "events {}\n"
        "http { access_log off; default_type application/octet-stream;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {site}; }} }}\n"
    )
    process = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        for local in ("eddie", "joerg", "nobody"):
            path = f"/.well-known/openpgpkey/example.org/hu/{local_part_hash(local)}"
            served = mail_client.get(path, headers={"host": "openpgpkey.example.org"})
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    static = (r.status, r.read())
            except urllib.error.HTTPError as error:
                with error:
                    static = (error.code, b"")
            if local == "nobody":
                assert (served.status_code, static[0]) == (404, 404)
            else:
                assert static == (200, served.content), local
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/.well-known/openpgpkey/example.org/policy", timeout=10
        ) as policy:
            assert policy.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def _can_make_namespaces() -> bool:
    return (
        os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("openssl") is not None
    )


def run(*command: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


class Namespace:
    """A network namespace with its own /etc/hosts and CA bundle (`ip netns exec` binds
    /etc/netns/<name>/* over /etc/*)."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self.workdir = workdir

    def create(self, ca_cert: Path) -> None:
        run("ip", "netns", "del", self.name)
        assert run("ip", "netns", "add", self.name).returncode == 0
        assert self.exec("ip", "link", "set", "lo", "up").returncode == 0
        shutil.rmtree(self.etc, ignore_errors=True)
        self.etc.mkdir(parents=True)
        (self.etc / "hosts").write_text("127.0.0.1 localhost example.org openpgpkey.example.org\n")
        shutil.copytree("/etc/ssl", self.etc / "ssl", symlinks=True)
        bundle = self.etc / "ssl" / "certs" / "ca-certificates.crt"
        if bundle.is_symlink():
            bundle.unlink()
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca_cert.read_bytes())

    def exec(
        self, *command: str, env: dict[str, str] | None = None, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return run(
            "ip", "netns", "exec", self.name, *command, env=env or dict(os.environ), input=stdin
        )

    def remove(self) -> None:
        run("ip", "netns", "del", self.name)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture
def wkd_world(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Namespace, Path]]:
    """A published address (eddie@example.org; eddie2@ on the same key stays unconfirmed)
    and the server answering https://openpgpkey.example.org inside a namespace."""
    if not _can_make_namespaces():
        if os.environ.get("CI"):
            pytest.fail("the WKD TLS test must run in CI (root, ip and openssl needed)")
        pytest.skip("needs root, ip (iproute2) and openssl for a network namespace")
    url = f"sqlite:///{tmp_path / 'wkd.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    settings = Settings(
        database_url=url, dispatch_mail=False, smtp_host="127.0.0.1", smtp_port=smtp.port
    )
    with TestClient(build(settings)) as client:
        publish(client, smtp, engine, "ed25519.asc", "eddie@example.org")
    engine.dispose()

    ca_crt, key, crt = make_certificates(tmp_path, "openpgpkey.example.org", "example.org")
    namespace = Namespace(f"kd{os.getpid()}", tmp_path)
    namespace.create(ca_crt)
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "KEYDIR_DATABASE_URL": url,
        "KEYDIR_DISPATCH_MAIL": "false",
        "KEYDIR_BASE_URL": "https://keys.example.org",
        # The namespace's names resolve to its loopback: let the domain check contact them.
        "KEYDIR_WKD_CHECK_ALLOW_PRIVATE": "true",
    }
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespace.name,
                str(BIN / "uvicorn"),
                "service.app:app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                "443",
                "--ssl-keyfile",
                str(key),
                "--ssl-certfile",
                str(crt),
                "--no-access-log",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"Application startup complete" not in log.read_bytes():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield namespace, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)
        namespace.remove()


@pytest.mark.gpg
def test_gpg_locates_a_confirmed_address_over_wkd(wkd_world: tuple[Namespace, Path]) -> None:
    namespace, workdir = wkd_world
    home = workdir / "gnupg"
    home.mkdir(mode=0o700)
    (home / "dirmngr.conf").write_text("standard-resolver\ndisable-ipv6\n")
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        found = namespace.exec(
            "gpg",
            "--batch",
            "--auto-key-locate",
            "clear,nodefault,wkd",
            "--locate-keys",
            "eddie@example.org",
            env=env,
        )
        assert found.returncode == 0, found.stderr.decode()
        listing = namespace.exec("gpg", "--batch", "--with-colons", "--list-keys", env=env)
        uids = [
            line.split(":")[9]
            for line in listing.stdout.decode().splitlines()
            if line.startswith("uid:")
        ]
        assert uids == ["Eddie <eddie@example.org>"]
        hidden = namespace.exec(
            "gpg",
            "--batch",
            "--auto-key-locate",
            "clear,nodefault,wkd",
            "--locate-keys",
            "eddie2@example.org",
            env=env,
        )
        assert hidden.returncode != 0
    finally:
        namespace.exec("gpgconf", "--kill", "all", env=env)


@pytest.mark.skipif(shutil.which("sq") is None, reason="sq is not installed")
def test_sq_wkd_get_finds_only_the_confirmed_address(wkd_world: tuple[Namespace, Path]) -> None:
    namespace, workdir = wkd_world
    env = {**os.environ, "HOME": str(workdir)}
    found = namespace.exec("sq", "wkd", "get", "--binary", "eddie@example.org", env=env)
    assert found.returncode == 0, found.stderr.decode()
    assert user_ids(found.stdout) == [b"Eddie <eddie@example.org>"]
    hidden = namespace.exec("sq", "wkd", "get", "eddie2@example.org", env=env)
    assert hidden.returncode != 0 or b"eddie2" not in hidden.stdout
    assert b"BEGIN PGP" not in hidden.stdout


def test_domain_check_sees_this_server_behind_the_name(wkd_world: tuple[Namespace, Path]) -> None:
    namespace, workdir = wkd_world
    script = (
        "import json, ssl, sys, urllib.request\n"
        f"context = ssl.create_default_context(cafile={str(workdir / 'ca.crt')!r})\n"
        "url = 'https://openpgpkey.example.org/wkd/check/example.org'\n"
        "print(urllib.request.urlopen(url, context=context, timeout=30).read().decode())\n"
    )
    result = namespace.exec(sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["host"] == "openpgpkey.example.org"
    assert report["resolved"] == ["127.0.0.1"]
    assert report["dns_ok"] and report["policy_ok"] and report["served_here"]
    assert report["published_addresses"] == 1
    assert report["problem"] is None
    assert "eddie" not in result.stdout.decode()
