"""Attacks through the addresses in user IDs, against a real `keydir serve` process with its
own outbox dispatcher and a real SMTP server, on both databases: addresses that stopped every
mail, a user ID with two addresses (read with real GnuPG), and IDNA 2003 folding."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pysequoia
import pytest
from sqlalchemy import Engine, select

from service.db.models import OutboxRow, utcnow
from service.db.session import make_sessionmaker
from tests.conftest import read_data
from tests.gpgutil import gnupg_home, gpg, import_key
from tests.mailutil import SmtpServer
from tests.serverutil import running_server
from tests.webutil import post_form

# Local parts that passed the old checks: the mail builder's header parser decodes the
# encoded word into a line break and raised, and the row stayed first in the queue.
UNBUILDABLE = "=?utf-8?q?a{}=0ab?=@example.org"


@dataclass
class Answer:
    status: int
    text: str

    def json(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.text)
        return body


@dataclass
class Server:
    url: str
    smtp: SmtpServer
    log: Path

    def call(self, path: str, body: bytes | None = None, kind: str = "application/json") -> Answer:
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": kind})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            with error:
                answer = Answer(error.code, error.read().decode())
        assert answer.status < 500, answer
        return answer

    def upload(self, keytext: str) -> dict[str, object]:
        answer = self.call("/vks/v1/upload", json.dumps({"keytext": keytext}).encode())
        assert answer.status == 200, answer
        return answer.json()

    def request_verify(self, token: object, *addresses: str) -> Answer:
        payload = {"token": token, "addresses": list(addresses)}
        return self.call("/vks/v1/request-verify", json.dumps(payload).encode())

    def hkp_add(self, keytext: str) -> Answer:
        body = urllib.parse.urlencode({"keytext": keytext}).encode()
        return self.call("/pks/add", body, "application/x-www-form-urlencoded")

    def wait_for_mail(self, address: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not self.smtp.inbox.to(address) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.smtp.inbox.to(address), f"no mail to {address} within {seconds} s"

    def confirm(self, address: str) -> None:
        self.wait_for_mail(address)
        kind, token = self.smtp.inbox.link(self.smtp.inbox.to(address)[-1])
        assert kind == "verify"
        with post_form(self.url, f"/verify/{token}", f"/verify/{token}") as response:
            assert response.status == 200


@pytest.fixture
def server(database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path) -> Iterator[Server]:
    log = tmp_path / "server.log"
    with running_server(
        tmp_path,
        log,
        KEYDIR_DATABASE_URL=database[0],
        KEYDIR_AUTO_MIGRATE="false",
        KEYDIR_SMTP_HOST="127.0.0.1",
        KEYDIR_SMTP_PORT=str(smtp.port),
    ) as url:
        yield Server(url, smtp, log)


def make_key(*user_ids: str) -> tuple[str, str]:
    """(fingerprint, armored certificate) of a fresh key with these user IDs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cert = pysequoia.Tsk.generate(user_ids=list(user_ids)).extract_certificate()
    return cert.fingerprint.upper(), str(cert)


def offers(uploaded: dict[str, object]) -> list[str]:
    """The addresses an upload answer lists."""
    status = uploaded["status"]
    assert isinstance(status, dict)
    return list(status)


def recipients(smtp: SmtpServer) -> set[str]:
    return {str(message["To"]) for message in smtp.inbox.messages}


# -- one bad address stopped all mail ------------------------------------------------------


def test_addresses_that_stopped_the_outbox_are_never_offered_and_mail_flows(
    server: Server,
) -> None:
    # The attacker: four new keys over HKP (which offers a confirmation to every address of
    # a new key), 400 addresses that cannot be mailed, and one more key over VKS asking for
    # a mail to whatever its upload answer offers.
    for key in range(4):
        _fpr, keytext = make_key(
            *(f"Bad {key}-{i} <{UNBUILDABLE.format(f'{key}x{i}')}>" for i in range(100))
        )
        added = server.hkp_add(keytext)
        assert added.status == 200, added
    _fpr, keytext = make_key(f"Bad <{UNBUILDABLE.format('vks')}>", "Named only")
    uploaded = server.upload(keytext)
    offered = offers(uploaded)
    if offered:
        server.request_verify(uploaded["token"], *offered)
    # Someone else, right after: their confirmation mail arrives.
    body = server.upload(read_data("ed25519.asc").decode())
    assert server.request_verify(body["token"], "eddie@example.org").status == 200
    server.wait_for_mail("eddie@example.org")
    assert recipients(server.smtp) == {"eddie@example.org"}
    # Nothing was offered for the bad addresses, nor can it be asked for.
    assert offered == []
    refused = server.request_verify(uploaded["token"], UNBUILDABLE.format("vks"))
    assert refused.status == 400, refused


def test_an_outbox_row_that_cannot_be_built_does_not_stop_the_queue(
    server: Server, database: tuple[str, Engine]
) -> None:
    # Such a row cannot be made through the API any more (a row left from before, say).
    bad = UNBUILDABLE.format("old")
    with make_sessionmaker(database[1]).begin() as session:
        session.add(
            OutboxRow(
                kind="verify",
                recipient=bad,
                subject="Confirm",
                text_body="Open the link.\n",
                html_body=None,
                message_id=f"<{secrets.token_hex(8)}@keys.example.org>",
                created_at=utcnow(),
                next_attempt_at=utcnow() - timedelta(minutes=1),  # first in the queue
                attempts=0,
            )
        )
    body = server.upload(read_data("ed25519.asc").decode())
    assert server.request_verify(body["token"], "eddie@example.org").status == 200
    server.wait_for_mail("eddie@example.org")
    with make_sessionmaker(database[1])() as session:
        row = session.scalars(select(OutboxRow).where(OutboxRow.recipient == bad)).one()
        assert row.given_up_at is not None
        assert row.claimed_until is None
        assert row.last_error == "ValueError"
    assert "a=0ab" not in server.log.read_text()


# -- a user ID with two addresses ----------------------------------------------------------


@pytest.mark.gpg
@pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")
def test_a_user_id_with_two_addresses_is_never_offered_confirmed_or_found(
    server: Server, tmp_path: Path
) -> None:
    victim = "Victim <victim@bank.example> <me@evil.example>"
    fpr, keytext = make_key("Mallory <mallory@evil.example>", victim)
    uploaded = server.upload(keytext)
    # The attacker confirms every address the upload answer offers.
    offered = offers(uploaded)
    assert server.request_verify(uploaded["token"], *offered).status == 200
    for address in offered:
        server.confirm(address)
    hkp = "hkp://" + server.url.removeprefix("http://")
    for home in gnupg_home(tmp_path / "gpg"):
        served = server.call(f"/vks/v1/by-fingerprint/{fpr}")
        assert served.status == 200
        keys = import_key(home, served.text.encode())
        # GnuPG never files the key under the victim's address.
        assert gpg(home, "--list-keys", "victim@bank.example").returncode != 0
        assert gpg(home, "--list-keys", "<victim@bank.example>").returncode != 0
        assert [k.user_ids for k in keys] == [["Mallory <mallory@evil.example>"]]
        searched = gpg(home, "--keyserver", hkp, "--search-keys", "victim@bank.example")
        assert searched.returncode != 0
        assert fpr not in searched.stdout.decode()
        located = gpg(
            home,
            "--auto-key-locate",
            "clear,nodefault,keyserver",
            "--keyserver",
            hkp,
            "--locate-keys",
            "victim@bank.example",
        )
        assert located.returncode != 0
        assert "victim@bank.example" not in located.stdout.decode()

    # Only the address that is plainly the attacker's was offered; the others cannot be
    # asked for.
    assert offered == ["mallory@evil.example"]
    for address in ("me@evil.example", "victim@bank.example"):
        refused = server.request_verify(uploaded["token"], address)
        assert refused.status == 400, refused
    # Over HKP, a new key with such a user ID gets no offer for it either (the mail after
    # it, queued later, arrives only after every earlier one was sent).
    _fpr2, keytext2 = make_key("victim@bank.example <me@evil.example>")
    assert server.hkp_add(keytext2).status == 200
    body = server.upload(read_data("ed25519.asc").decode())
    server.request_verify(body["token"], "eddie@example.org")
    server.wait_for_mail("eddie@example.org")
    assert recipients(server.smtp) == {"mallory@evil.example", "eddie@example.org"}


# -- IDNA 2003 folding ---------------------------------------------------------------------


def test_sharp_s_and_ss_domains_are_two_addresses(server: Server) -> None:
    sharp_fpr, sharp = make_key("User <user@straße.de>")
    ss_fpr, ss = make_key("User <user@strasse.de>")
    sharp_upload = server.upload(sharp)
    # Whatever address the upload answer offers is confirmed by whoever receives its mail.
    (offered,) = offers(sharp_upload)
    assert server.request_verify(sharp_upload["token"], offered).status == 200
    server.confirm(offered)

    # The owner of user@strasse.de confirmed nothing, and that spelling finds nothing.
    for spelling in ("user@strasse.de", "user@STRASSE.de"):
        quoted = urllib.parse.quote(spelling)
        assert server.call(f"/vks/v1/by-email/{quoted}").status == 404, spelling
        assert server.call(f"/pks/lookup?op=get&search={quoted}").status == 404, spelling
    assert offered == "user@xn--strae-oqa.de"
    refused = server.request_verify(sharp_upload["token"], "user@strasse.de")
    assert refused.status == 400, refused

    ss_upload = server.upload(ss)
    assert ss_upload["status"] == {"user@strasse.de": "unpublished"}
    assert server.request_verify(ss_upload["token"], "user@strasse.de").status == 200
    server.confirm("user@strasse.de")

    # Each spelling finds its own key, on every lookup path.
    for spelling, fpr in (
        ("user@straße.de", sharp_fpr),
        ("user@STRAßE.de", sharp_fpr),
        ("user@xn--strae-oqa.de", sharp_fpr),
        ("user@strasse.de", ss_fpr),
    ):
        expected = server.call(f"/vks/v1/by-fingerprint/{fpr}").text
        quoted = urllib.parse.quote(spelling)
        assert server.call(f"/vks/v1/by-email/{quoted}").text == expected, spelling
        assert server.call(f"/pks/lookup?op=get&search={quoted}").text == expected, spelling
