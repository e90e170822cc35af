"""Per-client rate limits on every protocol, counted in the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.app import build
from service.core.ratelimit import client_address, rate_limit_key
from service.core.wkd import local_part_hash
from service.db.models import RateCounterRow
from service.db.session import make_engine
from service.settings import Settings
from tests.conftest import read_data
from tests.webutil import form


def limited(settings: Settings, **limits: object) -> Settings:
    return settings.model_copy(
        update={
            "rate_uploads_per_hour": 2,
            "rate_mail_requests_per_hour": 2,
            "rate_address_lookups_per_minute": 3,
            **limits,
        }
    )


@pytest.fixture
def strict(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build(limited(settings, trusted_proxies=["testclient"]))) as client:
        yield client


def test_uploads_are_limited_across_vks_hkp_and_the_page(strict: TestClient) -> None:
    keytext = read_data("ed25519.asc").decode()
    assert strict.post("/vks/v1/upload", json={"keytext": keytext}).status_code == 200
    assert strict.post("/pks/add", data={"keytext": keytext}).status_code == 200
    vks = strict.post("/vks/v1/upload", json={"keytext": keytext})
    assert vks.status_code == 429
    assert "Try again in" in vks.json()["error"]
    assert 0 < int(vks.headers["retry-after"]) <= 3601
    assert vks.headers["access-control-allow-origin"] == "*"
    hkp = strict.post("/pks/add", data={"keytext": keytext})
    assert hkp.status_code == 429
    assert hkp.headers["content-type"].startswith("text/plain")
    page = strict.post("/upload", data=form(strict, keytext=keytext))
    assert page.status_code == 429
    assert "Too many requests" in page.text


def test_lookups_by_address_are_limited_on_every_protocol(strict: TestClient) -> None:
    paths = [
        "/vks/v1/by-email/a%40example.org",
        "/pks/lookup?op=get&search=a%40example.org",
        f"/.well-known/openpgpkey/hu/{local_part_hash('a')}",
    ]
    codes = [strict.get(path, headers={"host": "example.org"}).status_code for path in paths]
    codes.append(strict.get("/search?q=a%40example.org").status_code)
    assert codes == [404, 404, 404, 429]
    # Lookups by fingerprint are not counted.
    assert strict.get("/vks/v1/by-fingerprint/" + "AB" * 20).status_code == 404


def test_mail_requests_are_limited(strict: TestClient) -> None:
    for expected in (200, 200, 429):
        response = strict.post("/manage", data=form(strict, address="a@example.org"))
        assert response.status_code == expected
    verify = strict.post("/vks/v1/request-verify", json={"token": "x", "addresses": []})
    assert verify.status_code == 429


def test_clients_are_counted_apart_and_forwarded_for_only_from_trusted_proxies(
    strict: TestClient,
) -> None:
    keytext = json.dumps({"keytext": read_data("ed25519.asc").decode()})
    headers = {"content-type": "application/json"}
    for client in ("192.0.2.1", "192.0.2.2"):
        for _ in range(2):
            response = strict.post(
                "/vks/v1/upload", content=keytext, headers={**headers, "x-forwarded-for": client}
            )
            assert response.status_code == 200, client
    over = strict.post(
        "/vks/v1/upload", content=keytext, headers={**headers, "x-forwarded-for": "192.0.2.1"}
    )
    assert over.status_code == 429


def test_two_server_instances_share_the_counters(settings: Settings) -> None:
    keytext = {"keytext": read_data("ed25519.asc").decode()}
    with (
        TestClient(build(limited(settings))) as first,
        TestClient(build(limited(settings))) as second,
    ):
        assert first.post("/vks/v1/upload", json=keytext).status_code == 200
        assert second.post("/vks/v1/upload", json=keytext).status_code == 200
        assert first.post("/vks/v1/upload", json=keytext).status_code == 429
        assert second.post("/vks/v1/upload", json=keytext).status_code == 429


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # untrusted peer: ignored
        ("10.0.0.2", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.3", ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", None, ["10.0.0.0/8"], "10.0.0.2"),
        ("::1", "2001:db8::5", ["::1"], "2001:db8::5"),
    ],
)
def test_client_address(
    peer: str, forwarded: str | None, trusted: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, trusted) == expected


def test_counters_in_redis_are_shared_by_two_instances(settings: Settings, redis_url: str) -> None:
    keytext = {"keytext": read_data("ed25519.asc").decode()}
    configured = limited(settings, redis_url=redis_url)
    with TestClient(build(configured)) as first, TestClient(build(configured)) as second:
        assert first.post("/vks/v1/upload", json=keytext).status_code == 200
        assert second.post("/vks/v1/upload", json=keytext).status_code == 200
        refused = first.post("/vks/v1/upload", json=keytext)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 3601
    # Nothing was counted in the database: Redis holds the state.
    with configured_engine(configured) as engine, engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RateCounterRow)) == 0


@contextmanager
def configured_engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_ipv6_clients_share_a_budget_per_64_and_ipv4_stays_per_address(strict: TestClient) -> None:
    # One /64 is what a single customer line gets: counting per address would hand that
    # customer 2^64 budgets. The addresses arrive as a trusted proxy's X-Forwarded-For.
    keytext = json.dumps({"keytext": read_data("ed25519.asc").decode()})

    def upload(client: str) -> int:
        headers = {"content-type": "application/json", "x-forwarded-for": client}
        return strict.post("/vks/v1/upload", content=keytext, headers=headers).status_code

    assert [upload("2001:db8:1:2::1"), upload("2001:db8:1:2:ffff:ffff:ffff:ffff")] == [200, 200]
    assert upload("2001:db8:1:2:abcd::7") == 429  # same /64, another address
    assert upload("2001:db8:1:3::1") == 200  # the neighbouring /64 has its own budget
    assert [upload("192.0.2.7"), upload("192.0.2.8"), upload("192.0.2.8")] == [200, 200, 200]
    # An IPv4 peer seen through a dual-stack socket is the IPv4 address, not a /64 of them.
    assert upload("::ffff:192.0.2.7") == 200
    assert upload("::ffff:192.0.2.7") == 429
    assert upload("192.0.2.9") == 200


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("198.51.100.4", "198.51.100.4"),
        ("testclient", "testclient"),
    ],
)
def test_rate_limit_key(client: str, key: str) -> None:
    assert rate_limit_key(client) == key
