"""The lookup fast path answers exactly what the routes answer, byte for byte."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from service.app import build
from service.core import wkd
from service.db.models import CertRow
from service.settings import Settings
from tests.api.test_verification import publish, upload
from tests.mailutil import SmtpServer

ED = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
V6 = "5B4845DCE4A72778DE83B79559DF2FC19525372904C679731D317532046C7EFF"
RITA = "CD63BCDF6D92644A6856D92ED0B1DE8F99F115F2"
VARYING = {"x-request-id", "date"}


def requests() -> list[tuple[str, str, dict[str, str]]]:
    eddie = wkd.hashes_for("Eddie <eddie@example.org>", "eddie@example.org")[0]
    vera = wkd.hashes_for("Vera Six <vera@example.org>", "vera@example.org")[0]
    wkd_host = {"host": "openpgpkey.example.org"}
    plain = {"host": "keys.example.org"}
    out: list[tuple[str, str, dict[str, str]]] = []
    for method in ("GET", "HEAD"):
        out += [
            (method, f"/vks/v1/by-fingerprint/{ED}", plain),
            (method, f"/vks/v1/by-fingerprint/{ED.lower()}", plain),
            (method, f"/vks/v1/by-fingerprint/0x{ED}", plain),
            (method, f"/vks/v1/by-fingerprint/{V6}", plain),
            (method, f"/vks/v1/by-fingerprint/{RITA}", plain),  # stored, nothing confirmed
            (method, "/vks/v1/by-fingerprint/" + "AB" * 20, plain),
            (method, "/vks/v1/by-fingerprint/xyz", plain),
            (method, f"/vks/v1/by-fingerprint/{ED}/more", plain),
            (method, f"/vks/v1/by-keyid/{ED[-16:]}", plain),
            (method, f"/vks/v1/by-keyid/{ED[-8:]}", plain),
            (method, "/vks/v1/by-email/eddie@example.org", plain),
            (method, "/vks/v1/by-email/eddie%40example.org", plain),
            (method, "/vks/v1/by-email/EDDIE@Example.org", plain),
            (method, "/vks/v1/by-email/rita@example.org", plain),  # unconfirmed: 404
            (method, "/vks/v1/by-email/not-an-address", plain),
            (method, "/vks/v1/by-nothing/x", plain),
            (method, f"/pks/lookup?op=get&search=0x{ED}", plain),
            (method, f"/pks/lookup?op=get&options=mr&search=0x{ED[-16:]}", plain),
            (method, "/pks/lookup?op=get&search=eddie@example.org", plain),
            (method, "/pks/lookup?op=get&search=Eddie+%3Ceddie@example.org%3E", plain),
            (method, f"/pks/lookup?op=get&search=0x{V6[-16:]}", plain),  # v6 only by 64-hex
            (method, f"/pks/lookup?op=get&search={V6}", plain),
            (method, "/pks/lookup?op=index&options=mr&search=eddie@example.org", plain),
            (method, "/pks/lookup?op=vindex&search=eddie@example.org", plain),
            (method, "/pks/lookup?op=get&search=eddie", plain),
            (method, "/pks/lookup?op=get&search=0x12345678", plain),
            (method, "/pks/lookup?op=stats", plain),
            (method, "/pks/lookup?op=frobnicate&search=x", plain),
            (method, "/pks/lookup?search=x", plain),
            (method, "/pks/lookup?op=get", plain),
            (method, "/pks/lookup?op=get&op=index&options=mr&search=eddie@example.org", plain),
            (method, f"/.well-known/openpgpkey/example.org/hu/{eddie}?l=eddie", wkd_host),
            (method, f"/.well-known/openpgpkey/example.org/hu/{vera}", wkd_host),
            (method, f"/.well-known/openpgpkey/example.org/hu/{eddie}", plain),  # wrong host
            (method, f"/.well-known/openpgpkey/example.org/hu/{eddie}", {"host": "keys.x"}),
            (method, f"/.well-known/openpgpkey/EXAMPLE.org/hu/{eddie}", wkd_host),
            (method, "/.well-known/openpgpkey/example.org/hu/nothash", wkd_host),
            (method, f"/.well-known/openpgpkey/hu/{eddie}", {"host": "example.org"}),
            (method, f"/.well-known/openpgpkey/hu/{eddie}", {"host": "example.net"}),
            (method, "/.well-known/openpgpkey/example.org/policy", wkd_host),
            (method, "/.well-known/openpgpkey/example.org/hu/", wkd_host),
            (method, "/.well-known/openpgpkey/example.org/hu/a/b", wkd_host),
        ]
    return out


@pytest.fixture
def clients(mail_settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    slow = mail_settings.model_copy(update={"lookup_fast_path": False})
    base = "https://keys.example.org"
    loopback = ("127.0.0.1", 50000)  # /metrics answers loopback only
    with (
        TestClient(build(mail_settings), base_url=base, client=loopback) as fast,
        TestClient(build(slow), base_url=base, client=loopback) as routed,
    ):
        yield fast, routed


def test_fast_path_and_routes_give_the_same_answers(
    clients: tuple[TestClient, TestClient], smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fast, routed = clients
    publish(fast, smtp, database[1], "ed25519.asc", "eddie@example.org")
    publish(fast, smtp, database[1], "v6_ed25519.asc", "vera@example.org")
    upload(fast, "rsa_multi_uid.asc")
    etag = fast.get(f"/vks/v1/by-fingerprint/{ED}").headers["etag"]
    cases = [
        *requests(),
        ("GET", f"/vks/v1/by-fingerprint/{ED}", {"if-none-match": etag}),
        ("GET", f"/vks/v1/by-keyid/{ED[-16:]}", {"if-none-match": f'"x", W/{etag}'}),
        ("GET", f"/pks/lookup?op=get&search=0x{ED}", {"if-none-match": etag}),
        ("GET", f"/vks/v1/by-fingerprint/{ED}", {"origin": "https://mail.example"}),
    ]
    statuses = set()
    for method, path, headers in cases:
        a = fast.request(method, path, headers=headers)
        b = routed.request(method, path, headers=headers)
        where = f"{method} {path} {headers}"
        assert a.status_code == b.status_code, where
        assert a.content == b.content, where
        strip = lambda h: {k: v for k, v in h.items() if k not in VARYING}  # noqa: E731
        assert strip(a.headers) == strip(b.headers), where
        statuses.add(a.status_code)
    # The cases reach every kind of answer, so the comparison means something.
    assert {200, 304, 400, 404, 501} <= statuses


def test_lookups_are_counted_under_their_route_on_the_fast_path(
    clients: tuple[TestClient, TestClient], smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fast, _ = clients
    publish(fast, smtp, database[1], "ed25519.asc", "eddie@example.org")
    fast.get(f"/vks/v1/by-fingerprint/{ED}")
    fast.get("/vks/v1/by-fingerprint/" + "AB" * 20)
    metrics = fast.get("/metrics").text
    route = 'route="/vks/v1/by-fingerprint/{fingerprint}"'
    assert any(route in line and 'status="200"' in line for line in metrics.splitlines())
    assert any(route in line and 'status="404"' in line for line in metrics.splitlines())
    assert 'keydir_lookups_total{protocol="vks",result="found"}' in metrics


def test_a_short_lived_cache_serves_repeat_lookups_and_forgets_them(
    mail_settings: Settings, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    cached = mail_settings.model_copy(
        update={"lookup_cache_seconds": 3600.0, "lookup_cache_entries": 2}
    )
    with TestClient(build(cached), base_url="https://keys.example.org") as client:
        publish(client, smtp, database[1], "ed25519.asc", "eddie@example.org")
        before = client.get(f"/vks/v1/by-fingerprint/{ED}").text
        upload(client, "ed25519_revocation_only.asc")  # changes the served key
        assert client.get(f"/vks/v1/by-fingerprint/{ED}").text == before  # still cached
        # Two other lookups push it out of a cache of two entries.
        client.get("/vks/v1/by-fingerprint/" + "AB" * 20)
        client.get("/vks/v1/by-fingerprint/" + "CD" * 20)
        assert client.get(f"/vks/v1/by-fingerprint/{ED}").text != before


def test_the_index_made_at_storage_equals_the_one_made_from_the_key(
    clients: tuple[TestClient, TestClient], smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fast, _ = clients
    publish(fast, smtp, database[1], "rsa_multi_uid.asc", "rita@example.org")
    publish(fast, smtp, database[1], "uid_revoked.asc", "una@example.org")
    paths = [
        "/pks/lookup?op=index&options=mr&search=rita@example.org",
        "/pks/lookup?op=vindex&search=rita@example.org",
        "/pks/lookup?op=index&options=mr&search=una@example.org",
    ]
    made = [fast.get(path).text for path in paths]
    assert "uid:Rita Rsa <rita@example.org>:" in made[0]
    assert "rita.work@example.com" not in made[0]  # not confirmed, never listed
    with database[1].begin() as conn:  # as rows stored before the index was made at storage
        assert conn.execute(update(CertRow).values(published_uids=None)).rowcount == 2
    assert [fast.get(path).text for path in paths] == made
