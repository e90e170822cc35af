"""A real `keydir serve` as its clients meet it: HTTP, the mail round trip, GnuPG users."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from service.db.models import Base, OutboxRow
from tests.attackutil import GpgView, gpg_view
from tests.gpgutil import gpg
from tests.mailutil import SmtpServer
from tests.webutil import post_form


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    smtp: SmtpServer
    engine: Engine

    @property
    def hkp(self) -> str:
        return "hkp://" + self.url.removeprefix("http://")

    def reset(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        self.smtp.inbox.messages.clear()

    # -- HTTP -------------------------------------------------------------------------------

    def request(
        self, path: str, data: bytes | None = None, content_type: str | None = None
    ) -> Answer:
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, error.read())

    def vks_upload(self, keytext: str | bytes) -> Answer:
        text = keytext.decode() if isinstance(keytext, bytes) else keytext
        body = json.dumps({"keytext": text}).encode()
        return self.request("/vks/v1/upload", body, "application/json")

    def hkp_add(self, keytext: str | bytes) -> Answer:
        text = keytext.decode() if isinstance(keytext, bytes) else keytext
        body = urllib.parse.urlencode({"keytext": text}).encode()
        return self.request("/pks/add", body, "application/x-www-form-urlencoded")

    def form(self, page: str, action: str, **fields: str) -> Answer:
        """Submit the form of ``page`` to ``action`` as a browser would (CSRF cookie and field)."""
        try:
            with post_form(self.url, page, action, **fields) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, error.read())

    def web_upload(self, keytext: str | bytes) -> Answer:
        text = keytext.decode() if isinstance(keytext, bytes) else keytext
        return self.form("/upload", "/upload", keytext=text)

    def request_verify(self, token: str, addresses: list[str]) -> Answer:
        body = json.dumps({"token": token, "addresses": addresses}).encode()
        return self.request("/vks/v1/request-verify", body, "application/json")

    def served(self, fingerprint: str) -> bytes:
        """The armored key lookups serve for ``fingerprint``; fails if there is none."""
        answer = self.request(f"/vks/v1/by-fingerprint/{fingerprint}")
        assert answer.status == 200, (answer.status, answer.text)
        return answer.body

    # -- the mail round trip ------------------------------------------------------------------

    def link(self, address: str, kind: str) -> str:
        """The token of the newest ``kind`` link (verify, manage) mailed to ``address``."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            links = [self.smtp.inbox.link(m) for m in self.smtp.inbox.to(address)]
            tokens = [token for found, token in links if found == kind]
            if tokens:
                return tokens[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} mail to {address}")

    def confirm(self, address: str) -> None:
        """Wait for the newest confirmation mail to ``address`` and press its button."""
        token = self.link(address, "verify")
        with post_form(self.url, f"/verify/{token}", f"/verify/{token}") as response:
            assert response.status == 200

    def publish(self, keytext: bytes, addresses: list[str]) -> str:
        """Upload a key as its owner and confirm ``addresses``; the upload token."""
        answer = self.vks_upload(keytext)
        assert answer.status == 200, answer.text
        token: str = answer.json()["token"]
        if addresses:
            asked = self.request_verify(token, addresses)
            assert asked.status == 200, asked.text
            for address in addresses:
                self.confirm(address)
        return token

    def mails_queued_to(self, address: str) -> int:
        """Rows in the outbox for ``address`` (sent or not): what the service decided to mail."""
        with self.engine.connect() as conn:
            count = conn.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.recipient == address)
            )
        return count or 0


@dataclass
class Client:
    """A GnuPG user with an empty keyring who fetches keys from the server."""

    home: Path
    server: Server

    def import_served(self, fingerprint: str) -> GpgView | None:
        """`gpg --import` of what the server serves for ``fingerprint``; what gpg then holds."""
        gpg(self.home, "--import", stdin=self.server.served(fingerprint))
        return gpg_view(self.home, fingerprint)

    def recv_keys(self, fingerprint: str) -> GpgView | None:
        """`gpg --recv-keys` from the server over HKP; what gpg then holds."""
        gpg(self.home, "--keyserver", self.server.hkp, "--recv-keys", fingerprint)
        return gpg_view(self.home, fingerprint)
