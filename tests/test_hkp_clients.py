"""Real GnuPG and Sequoia against a real `keydir serve` process on loopback, both databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import read_data
from tests.gpgutil import gnupg_home, gpg, import_key, list_keys
from tests.mailutil import SmtpServer
from tests.serverutil import running_server
from tests.webutil import post_form

pytestmark = [pytest.mark.gpg, pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")]
MANIFEST: dict[str, list[str]] = json.loads(read_data("keys.json"))


@dataclass
class Server:
    url: str
    smtp: SmtpServer

    @property
    def hkp(self) -> str:
        return "hkp://" + self.url.removeprefix("http://")

    def confirm(self, address: str) -> None:
        """Wait for the confirmation mail to ``address`` and press its button."""
        deadline = time.monotonic() + 60
        while not self.smtp.inbox.to(address) and time.monotonic() < deadline:
            time.sleep(0.05)
        messages = self.smtp.inbox.to(address)
        assert messages, f"no mail to {address}"
        kind, token = self.smtp.inbox.link(messages[-1])
        assert kind == "verify"
        with post_form(self.url, f"/verify/{token}", f"/verify/{token}") as response:
            assert response.status == 200


@pytest.fixture
def server(database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path) -> Iterator[Server]:
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        KEYDIR_DATABASE_URL=database[0],
        KEYDIR_AUTO_MIGRATE="false",
        KEYDIR_SMTP_HOST="127.0.0.1",
        KEYDIR_SMTP_PORT=str(smtp.port),
    ) as url:
        yield Server(url, smtp)


@pytest.fixture
def sender(tmp_path: Path) -> Iterator[Path]:
    yield from gnupg_home(tmp_path / "sender")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Path]:
    yield from gnupg_home(tmp_path / "receiver")


def test_gpg_send_recv_and_search(server: Server, sender: Path, receiver: Path) -> None:
    fpr = MANIFEST["rsa_multi_uid.asc"][0]
    import_key(sender, read_data("rsa_multi_uid.asc"))
    sent = gpg(sender, "--keyserver", server.hkp, "--send-keys", fpr)
    assert sent.returncode == 0, sent.stderr.decode()

    # A brand-new key sent by gpg gets a confirmation offer per address; confirm two.
    server.confirm("rita@example.org")
    server.confirm("rita.work@example.com")

    received = gpg(receiver, "--keyserver", server.hkp, "--recv-keys", fpr)
    assert received.returncode == 0, received.stderr.decode()
    keys = list_keys(receiver)
    assert [k.fingerprint for k in keys] == [fpr]
    assert sorted(keys[0].user_ids) == [
        "Rita Rsa <rita@example.org>",
        "Rita at Work <rita.work@example.com>",
    ]
    subkeys = keys[0].subkeys
    assert len(subkeys) == 2

    # By long key id of the primary key and of each subkey, into fresh homes.
    for number, key_id in enumerate([fpr[-16:], *(s[-16:] for s in subkeys)]):
        for fresh in gnupg_home(receiver.parent / f"by-id-{number}"):
            result = gpg(fresh, "--keyserver", server.hkp, "--recv-keys", key_id)
            assert result.returncode == 0, (key_id, result.stderr.decode())
            assert [k.fingerprint for k in list_keys(fresh)] == [fpr]

    found = gpg(receiver, "--keyserver", server.hkp, "--search-keys", "rita@example.org")
    assert found.returncode == 0, found.stderr.decode()
    listing = found.stdout.decode()
    assert f"pub:{fpr}:" in listing
    uid_lines = sorted(
        line.split(":")[1] for line in listing.splitlines() if line.startswith("uid:")
    )
    assert uid_lines == ["Rita Rsa <rita@example.org>", "Rita at Work <rita.work@example.com>"]

    hidden = gpg(receiver, "--keyserver", server.hkp, "--search-keys", "rita@example.net")
    assert hidden.returncode != 0
    assert "rita@example.net" not in hidden.stdout.decode().replace("search-keys", "")


def test_index_with_colon_percent_and_non_ascii_parses_back(
    server: Server, sender: Path, receiver: Path
) -> None:
    fpr = MANIFEST["weird_uid.asc"][0]
    import_key(sender, read_data("weird_uid.asc"))
    assert gpg(sender, "--keyserver", server.hkp, "--send-keys", fpr).returncode == 0
    server.confirm("joerg@example.org")
    # gpg's human listing shows the user ID as it decoded our %XX escapes. It then asks
    # which keys to import: the answer "q" on the command fd quits.
    found = subprocess.run(
        [
            "gpg",
            "--no-tty",
            "--command-fd",
            "0",
            "--keyserver",
            server.hkp,
            "--search-keys",
            "joerg@example.org",
        ],
        input=b"q\n",
        env={**os.environ, "GNUPGHOME": str(receiver)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    listing = found.stdout.decode("utf-8") + found.stderr.decode("utf-8")
    assert "Jörg Müller: 100% <joerg@example.org>" in listing, listing


@pytest.mark.skipif(shutil.which("sq") is None, reason="sq is not installed")
def test_sq_keyserver_get(server: Server, tmp_path: Path) -> None:
    fpr = MANIFEST["ed25519.asc"][0]
    request = urllib.request.Request(
        f"{server.url}/pks/add",
        data=urllib.parse.urlencode({"keytext": read_data("ed25519.asc").decode()}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    server.confirm("eddie@example.org")
    env = {**os.environ, "HOME": str(tmp_path)}
    for query in (fpr, "eddie@example.org"):
        result = subprocess.run(
            ["sq", "keyserver", "-p", "insecure", "-s", server.hkp, "get", query],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        assert b"-----BEGIN PGP PUBLIC KEY BLOCK-----" in result.stdout
        inspected = subprocess.run(
            ["sq", "inspect"],
            input=result.stdout,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert fpr in inspected.stdout.decode()
        assert "eddie@example.org" in inspected.stdout.decode()
        assert "eddie2@example.org" not in inspected.stdout.decode()


def _post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8", "replace")


def test_hostile_add_bodies_get_4xx_sentences_and_store_nothing(server: Server) -> None:
    armored = read_data("rsa_multi_uid.asc")
    form = "application/x-www-form-urlencoded"
    cases = [
        (b"keytext=" + urllib.parse.quote_from_bytes(armored[: len(armored) // 2]).encode(), form),
        (b"keytext=" + urllib.parse.quote_from_bytes(bytes(range(256)) * 4).encode(), form),
        (b"keytext=" + urllib.parse.quote_from_bytes(read_data("ed25519.sec.asc")).encode(), form),
        (
            b"keytext=" + urllib.parse.quote_from_bytes(read_data("ed25519.pub.bin")[:-7]).encode(),
            form,
        ),
        (b"keytext", form),
        (b"%%%&&&=", form),
        (bytes(range(256)), form),
        (
            b'--x\r\nContent-Disposition: form-data; name="keytext"\r\n\r\nabc',
            "multipart/form-data; boundary=x",
        ),
        (b"{}", "application/json"),
    ]
    for body, content_type in cases:
        status, text = _post(f"{server.url}/pks/add", body, content_type)
        assert 400 <= status < 500, (body[:40], status, text)
        assert len(text.strip()) > 10, (body[:40], text)
    for name in ("rsa_multi_uid.asc", "ed25519.asc"):
        status, _ = _get(f"{server.url}/pks/lookup?op=get&search=0x{MANIFEST[name][0]}")
        assert status == 404


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
