"""Several server processes on one PostgreSQL, hit at once: no lost update, one publication."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service import openpgp
from service.db.models import CertRow
from tests.conftest import POSTGRES_URL, read_data
from tests.mailutil import SmtpServer
from tests.serverutil import running_server
from tests.webutil import post_form

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_DATABASE_URL")


@pytest.fixture
def two_servers(
    database: tuple[str, Engine], smtp: SmtpServer, tmp_path: Path
) -> Iterator[list[str]]:
    if not database[0].startswith("postgresql"):
        pytest.skip("several server processes share one PostgreSQL")
    env = {
        "KEYDIR_DATABASE_URL": database[0],
        "KEYDIR_AUTO_MIGRATE": "false",
        "KEYDIR_SMTP_HOST": "127.0.0.1",
        "KEYDIR_SMTP_PORT": str(smtp.port),
    }
    with (
        running_server(tmp_path, tmp_path / "a.log", **env) as first,
        running_server(tmp_path, tmp_path / "b.log", **env) as second,
    ):
        yield [first, second]


def _upload(base: str, name: str) -> int:
    body = json.dumps({"keytext": read_data(name).decode()}).encode()
    request = urllib.request.Request(
        f"{base}/vks/v1/upload", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_different_versions_at_once_end_merged(
    two_servers: list[str], database: tuple[str, Engine]
) -> None:
    versions = [
        "ed25519.asc",
        "ed25519_newer.asc",
        "ed25519_revocation_only.asc",
        "ed25519_revoked.asc",
    ]
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def send(index: int) -> None:
        barrier.wait(timeout=30)
        statuses.append(_upload(two_servers[index % 2], versions[index % 2 if index < 4 else 1]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # The lone revocation may race ahead of its key (then it is refused with 400); every
    # other answer is a success, none a server error.
    assert all(status in (200, 400) for status in statuses), statuses
    assert statuses.count(200) >= 6
    # Whatever the interleaving, the stored key holds everything the two versions carry.
    expected = openpgp.merge(
        openpgp.read_upload(read_data("ed25519.asc")).certificates[0],
        openpgp.read_upload(read_data("ed25519_newer.asc")).certificates[0],
    )
    with database[1].connect() as conn:
        data = conn.execute(CertRow.__table__.select()).one().full_data
    merged = openpgp.load(data)
    assert {s.fingerprint for s in merged.subkeys} == {s.fingerprint for s in expected.subkeys}
    assert merged.expires == expected.expires


def test_one_link_clicked_many_times_on_two_servers_publishes_once(
    two_servers: list[str], smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    body = json.dumps({"keytext": read_data("ed25519.asc").decode()}).encode()
    request = urllib.request.Request(
        f"{two_servers[0]}/vks/v1/upload", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        token = json.loads(response.read())["token"]
    ask = json.dumps({"token": token, "addresses": ["eddie@example.org"]}).encode()
    urllib.request.urlopen(
        urllib.request.Request(
            f"{two_servers[1]}/vks/v1/request-verify",
            data=ask,
            headers={"Content-Type": "application/json"},
        ),
        timeout=60,
    ).close()
    deadline = time.monotonic() + 60
    while not smtp.inbox.to("eddie@example.org") and time.monotonic() < deadline:
        time.sleep(0.05)
    _, link_token = smtp.inbox.link(smtp.inbox.to("eddie@example.org")[0])
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def click(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            with post_form(
                two_servers[index % 2], f"/verify/{link_token}", f"/verify/{link_token}"
            ) as answer:
                codes.append(answer.status)
        except urllib.error.HTTPError as error:
            with error:
                codes.append(error.code)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(codes) == [200] + [409] * 5
