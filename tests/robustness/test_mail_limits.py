"""Mail is limited where it is caused: every mail counts against its client's hourly mail
limit, one HKP upload mails at most a few offers, one recipient domain gets at most so many
offers an hour from all clients together, and a cross-site form post mails nobody.

End to end: real `keydir serve` processes (two of them, on one database, so the counts are
shown to be shared), a real SMTP server (aiosmtpd), keys made by Sequoia in the test and,
for the HKP client, the real `gpg --send-keys`. The attack these tests replay: one 360 KB
`/pks/add` with hundreds of new keys mailed every address on them, and any web page could
make its visitors send such posts.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pysequoia
import pytest
from sqlalchemy import Engine, func, select

from service.db.models import OutboxRow
from tests.gpgutil import gnupg_home, gpg, import_key
from tests.mailutil import SmtpServer
from tests.serverutil import running_server

Servers = Callable[..., list[str]]


@pytest.fixture
def servers(database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path) -> Iterator[Servers]:
    """Start ``count`` server processes on the test database with extra settings; each
    sends its mails to ``smtp``; a proxy on loopback is trusted (for X-Forwarded-For)."""
    started: list[Any] = []

    def start(count: int = 2, **env: str) -> list[str]:
        settings = {
            "KEYDIR_DATABASE_URL": database[0],
            "KEYDIR_AUTO_MIGRATE": "false",
            "KEYDIR_SMTP_HOST": "127.0.0.1",
            "KEYDIR_SMTP_PORT": str(smtp.port),
            "KEYDIR_DISPATCH_MAIL": "true",
            "KEYDIR_BASE_URL": "https://keys.example.org",
            "KEYDIR_TRUSTED_PROXIES": '["127.0.0.1"]',
            "KEYDIR_PARSE_WORKERS": "1",
            "KEYDIR_MAX_KEYS_PER_UPLOAD": "300",
            **env,
        }
        urls = []
        for number in range(count):
            server = running_server(tmp_path, tmp_path / f"server{number}.log", **settings)
            started.append(server)
            urls.append(server.__enter__())
        return urls

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


def new_keys(addresses: list[str]) -> str:
    """One brand-new Sequoia key (v4, Ed25519) per address, armored one after another."""
    return "\n".join(
        str(pysequoia.Tsk.generate(user_ids=[f"Someone <{a}>"]).extract_certificate())
        for a in addresses
    )


def hkp_add(
    base: str, keytext: str, *, client: str | None = None, **headers: str
) -> tuple[int, str]:
    """POST /pks/add as a form; ``client`` is named in X-Forwarded-For (trusted proxy)."""
    if client is not None:
        headers["X-Forwarded-For"] = client
    request = urllib.request.Request(
        f"{base}/pks/add",
        data=urllib.parse.urlencode({"keytext": keytext}).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def vks(base: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}/vks/v1/{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def queued(engine: Engine) -> list[str]:
    """The recipient of every mail queued so far (queued in the request's transaction)."""
    with engine.connect() as conn:
        return sorted(conn.scalars(select(OutboxRow.recipient)))


def delivered(engine: Engine, smtp: SmtpServer) -> list[str]:
    """Wait until the dispatchers have sent every queued mail; the recipients received."""
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            unsent = conn.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
            )
        if unsent == 0:
            return sorted(str(m["To"]) for m in smtp.inbox.messages)
        assert time.monotonic() < deadline, "mails stayed unsent"
        time.sleep(0.05)


def test_one_hkp_upload_of_200_new_keys_mails_at_most_the_cap_then_the_budget_is_spent(
    servers: Servers, database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    a, b = servers(KEYDIR_HKP_OFFERS_PER_REQUEST="20", KEYDIR_RATE_MAIL_REQUESTS_PER_HOUR="30")
    engine = database[1]
    mailed: list[int] = []
    for number, base in enumerate((a, b, a)):  # the client's budget is shared by both
        addresses = [f"user{number}-{i}@example{i % 7}.org" for i in range(200)]
        status, body = hkp_add(base, new_keys(addresses))
        # Always 200 (OpenKeychain): the keys are stored whatever happens to the mails.
        assert status == 200, body[-300:]
        lines = body.splitlines()
        assert sum(line.startswith("Stored: ") for line in lines) == 200
        mailed.append(len(queued(engine)) - sum(mailed))
        assert mailed[-1] == [20, 10, 0][number], mailed  # the cap, then the budget of 30
        assert lines[-1].startswith(f"{200 - mailed[-1]} confirmation mails were not sent")
        assert "@" not in lines[-1]
    assert len(delivered(engine, smtp)) == 30
    # Once spent, the budget also stops request-verify (a 429 with Retry-After).
    status, uploaded = vks(a, "upload", {"keytext": new_keys(["late@example.org"])})
    assert status == 200
    status, refused = vks(
        b, "request-verify", {"token": uploaded["token"], "addresses": ["late@example.org"]}
    )
    assert status == 429, refused


def test_request_verify_counts_each_address_mailed(
    servers: Servers, database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    a, b = servers(KEYDIR_RATE_MAIL_REQUESTS_PER_HOUR="4")
    addresses = [f"many{i}@example.org" for i in range(6)]
    tsk = pysequoia.Tsk.generate(user_ids=[f"Many <{address}>" for address in addresses])
    status, uploaded = vks(a, "upload", {"keytext": str(tsk.extract_certificate())})
    assert status == 200, uploaded
    status, asked = vks(b, "request-verify", {"token": uploaded["token"], "addresses": addresses})
    # One request, six addresses: four mails fit the budget; the others stay unpublished.
    assert status == 200, asked
    states = sorted(asked["status"].values())
    assert states == ["pending"] * 4 + ["unpublished"] * 2
    assert len(queued(database[1])) == 4
    status, _ = vks(a, "request-verify", {"token": uploaded["token"], "addresses": addresses})
    assert status == 429
    assert len(delivered(database[1], smtp)) == 4


@pytest.mark.gpg
@pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")
def test_a_cross_site_post_stores_the_key_and_mails_nobody_while_gpg_still_gets_offers(
    servers: Servers, database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path
) -> None:
    (a,) = servers(count=1)
    engine = database[1]
    foreign = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": "http://evil.example/page.html"},
        # A DNS-rebinding page talks to us under its own name: Origin and Host agree.
        {"Origin": "https://evil.example", "Host": "evil.example"},
    ]
    for number, headers in enumerate(foreign):
        cert = pysequoia.Tsk.generate(
            user_ids=[f"Victim <victim{number}@example.org>"]
        ).extract_certificate()
        status, body = hkp_add(a, str(cert), **headers)
        assert status == 200, (headers, body)
        assert "this upload came from another web site" in body, headers
        fpr = cert.fingerprint.upper()
        with urllib.request.urlopen(f"{a}/vks/v1/by-fingerprint/{fpr}", timeout=30) as stored:
            assert stored.status == 200  # the key itself is stored
    assert queued(engine) == []

    # Our own origin (the public URL) may post; so may gpg, which sends no such header.
    own = pysequoia.Tsk.generate(user_ids=["Own <own@example.org>"])
    status, body = hkp_add(
        a,
        str(own.extract_certificate()),
        Origin="https://keys.example.org",
        **{"Sec-Fetch-Site": "same-origin"},
    )
    assert status == 200
    assert "web site" not in body
    for home in gnupg_home(tmp_path / "gnupg"):
        sent = pysequoia.Tsk.generate(user_ids=["Gus <gus@example.org>"]).extract_certificate()
        import_key(home, str(sent).encode())
        hkp = "hkp://" + a.removeprefix("http://")
        result = gpg(home, "--keyserver", hkp, "--send-keys", sent.fingerprint.upper())
        assert result.returncode == 0, result.stderr.decode()
    assert queued(engine) == ["gus@example.org", "own@example.org"]
    assert delivered(engine, smtp) == ["gus@example.org", "own@example.org"]


def test_one_domain_gets_at_most_its_hourly_offers_from_all_clients_together(
    servers: Servers, database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    a, b = servers(KEYDIR_RATE_HKP_OFFERS_PER_DOMAIN_PER_HOUR="5")
    engine = database[1]
    # Two clients (a trusted proxy names them), each on its own server process.
    first = [f"staff{i}@bigcorp.example" for i in range(4)] + ["x@other.example"]
    status, body = hkp_add(a, new_keys(first), client="198.51.100.1")
    assert status == 200, body
    assert "not sent" not in body
    second = [f"staff{i}@bigcorp.example" for i in range(4, 8)] + ["y@other.example"]
    status, body = hkp_add(b, new_keys(second), client="198.51.100.2")
    assert status == 200, body
    recipients = queued(engine)
    assert sum(r.endswith("@bigcorp.example") for r in recipients) == 5, recipients
    assert body.splitlines()[-1].startswith("3 confirmation mails were not sent"), body
    # Other domains are not held back by a full one.
    assert [r for r in recipients if r.endswith("@other.example")] == [
        "x@other.example",
        "y@other.example",
    ]
    assert delivered(engine, smtp) == recipients
