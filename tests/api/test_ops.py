"""/healthz, /readyz, /metrics, the request id and HSTS, in process, on both databases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from service.app import create_app, wrap
from service.core.lookups import LookupUnavailable
from service.core.wkd import local_part_hash
from service.db.session import make_sessionmaker
from service.mail.dispatcher import Dispatcher
from service.mail.senders import SendFailed
from service.metrics import Metrics
from service.settings import Settings
from tests.api.test_verification import confirm_from_mail, request_verify, upload
from tests.conftest import read_data
from tests.mailutil import SmtpServer

EDDIE_FPR = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
LOOPBACK = ("127.0.0.1", 40000)


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        series_name, _, label_text = series.partition("{")
        if series_name != name:
            continue
        found = ",".join(sorted(p for p in label_text.rstrip("}").split(",") if p))
        if found == wanted:
            return float(value)
    return None


class Ops:
    """A test client that scrapes from loopback, and the application behind it."""

    def __init__(self, app: FastAPI, client: TestClient) -> None:
        self.app = app
        self.client = client

    def scrape(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return response.text


def _client(
    settings: Settings, peer: tuple[str, int] = LOOPBACK, base_url: str | None = None
) -> Iterator[Ops]:
    app = create_app(settings)
    with TestClient(
        wrap(app, settings), base_url=base_url or settings.base_url, client=peer
    ) as client:
        yield Ops(app, client)


@pytest.fixture
def ops(mail_settings: Settings) -> Iterator[Ops]:
    yield from _client(mail_settings)


def _with(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update=changes)


def test_healthz_answers_without_the_database(ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    engine: Engine = ops.app.state.engine

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("connect", {}, Exception("database is away"))

    monkeypatch.setattr(engine, "connect", unreachable)
    monkeypatch.setattr(engine, "raw_connection", unreachable)

    async def away(*_args: object) -> None:
        raise LookupUnavailable("database is away")

    for name in ("by_fingerprint", "by_key_id", "by_address", "wkd"):  # the lookups' reader
        monkeypatch.setattr(ops.app.state.lookups._reader, name, away)
    health = ops.client.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert health.headers["cache-control"] == "no-store"
    ready = ops.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.text == "Not ready: The database does not answer.\n"
    # Lookups say the same, and a scrape still answers (without the stored-data gauges).
    assert ops.client.get(f"/vks/v1/by-fingerprint/{EDDIE_FPR}").status_code == 503
    scraped = ops.scrape()
    assert sample(scraped, "keydir_keys") is None
    assert sample(
        scraped, "keydir_http_requests_total", method="GET", route="/healthz", status="200"
    )


def test_readyz_is_ready_on_a_current_schema_and_not_on_an_old_one(
    ops: Ops, database: tuple[str, Engine]
) -> None:
    ready = ops.client.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ok\n")
    engine = database[1]
    with engine.begin() as conn:
        current = conn.scalar(text("SELECT version_num FROM alembic_version"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        stale = ops.client.get("/readyz")
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": current})
    assert stale.status_code == 503
    assert "keydir migrate" in stale.text
    assert ops.client.get("/readyz").status_code == 200


def test_metrics_are_for_loopback_only_by_default(mail_settings: Settings) -> None:
    refused_sentence = "The metrics are not public"
    for peer in (("203.0.113.9", 1), ("10.0.0.1", 1), ("testclient", 1)):
        for ops in _client(mail_settings, peer):
            refused = ops.client.get("/metrics")
            assert refused.status_code == 403
            assert refused.text.startswith(refused_sentence)
    for peer in (("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)):
        for ops in _client(mail_settings, peer):
            assert ops.client.get("/metrics").status_code == 200, peer
            # A proxy on loopback that is not trusted speaks for someone unknown: refused.
            forwarded = ops.client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
            assert forwarded.status_code == 403
            assert (
                ops.client.get("/metrics", headers={"Forwarded": "for=1.2.3.4"}).status_code == 403
            )


def test_metrics_allow_and_trusted_proxies(mail_settings: Settings) -> None:
    public = _with(mail_settings, metrics_allow=["0.0.0.0/0", "::/0"])
    for ops in _client(public, ("203.0.113.9", 1)):
        assert ops.client.get("/metrics").status_code == 200
    closed = _with(mail_settings, metrics_allow=[])
    for ops in _client(closed):
        assert ops.client.get("/metrics").status_code == 403
    # Behind a trusted proxy the forwarded client decides.
    proxied = _with(mail_settings, metrics_allow=["10.1.0.0/16"], trusted_proxies=["127.0.0.1"])
    for ops in _client(proxied):
        inside = ops.client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
        assert inside.status_code == 200
        outside = ops.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert outside.status_code == 403
        assert ops.client.get("/metrics").status_code == 403  # the proxy itself is not allowed


def test_a_bad_network_in_metrics_allow_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not an IP network"):
        Settings(metrics_allow=["localhost"])


def test_uploads_lookups_mails_and_gauges_are_counted(ops: Ops, smtp: SmtpServer) -> None:
    client = ops.client
    first = upload(client, "ed25519.asc")
    upload(client, "ed25519.asc")  # the same again
    upload(client, "ed25519_newer.asc")  # a new self-signature
    assert client.post("/vks/v1/upload", json={"keytext": "no key"}).status_code == 400
    hkp_add = client.post("/pks/add", data={"keytext": read_data("rsa_multi_uid.asc").decode()})
    assert hkp_add.status_code == 200
    scraped = ops.scrape()
    uploads = {
        r: sample(scraped, "keydir_uploads_total", result=r)
        for r in ("created", "updated", "unchanged", "rejected")
    }
    assert uploads == {"created": 2.0, "updated": 1.0, "unchanged": 1.0, "rejected": 1.0}
    assert sample(scraped, "keydir_keys") == 2.0
    # The HKP upload offered confirmation to the new key's three addresses.
    assert sample(scraped, "keydir_outbox_depth") == 3.0
    assert sample(scraped, "keydir_published_addresses") == 0.0

    request_verify(client, first["token"], "eddie@example.org")
    assert sample(ops.scrape(), "keydir_outbox_depth") == 4.0
    dispatcher: Dispatcher = ops.app.state.dispatcher
    assert dispatcher.run_once().sent == 4
    confirm_from_mail(client, smtp, "eddie@example.org")
    scraped = ops.scrape()
    assert sample(scraped, "keydir_mails_total", result="sent") == 4.0
    assert sample(scraped, "keydir_mails_total", result="failed") == 0.0
    assert sample(scraped, "keydir_outbox_depth") == 0.0
    assert sample(scraped, "keydir_published_addresses") == 1.0

    found = client.get(f"/vks/v1/by-fingerprint/{EDDIE_FPR}")
    assert found.status_code == 200
    cached = client.get(
        f"/vks/v1/by-fingerprint/{EDDIE_FPR}", headers={"If-None-Match": found.headers["etag"]}
    )
    assert cached.status_code == 304
    assert client.get("/vks/v1/by-email/eddie@example.org").status_code == 200
    assert client.head("/vks/v1/by-email/nobody@example.org").status_code == 404
    assert client.get("/vks/v1/by-keyid/ABCD").status_code == 400
    assert client.get("/pks/lookup?op=get&search=eddie@example.org").status_code == 200
    assert client.get("/pks/lookup?op=get&search=0x" + "AB" * 20).status_code == 404
    wkd = f"/.well-known/openpgpkey/example.org/hu/{local_part_hash('eddie')}"
    assert client.get(wkd, headers={"Host": "openpgpkey.example.org"}).status_code == 200
    missing = f"/.well-known/openpgpkey/hu/{local_part_hash('nobody')}"
    assert client.get(missing, headers={"Host": "example.org"}).status_code == 404
    assert client.get("/search?q=eddie@example.org").status_code == 200
    assert client.get("/.well-known/openpgpkey/example.org/policy").status_code in (200, 404)
    scraped = ops.scrape()
    expected = {
        ("vks", "found"): 2.0,
        ("vks", "not_modified"): 1.0,
        ("vks", "not_found"): 1.0,
        ("vks", "invalid"): 1.0,
        ("hkp", "found"): 1.0,
        ("hkp", "not_found"): 1.0,
        ("wkd", "found"): 1.0,
        ("wkd", "not_found"): 1.0,
        ("web", "found"): 1.0,
        ("web", "not_found"): 0.0,
    }
    counted = {
        key: sample(scraped, "keydir_lookups_total", protocol=key[0], result=key[1])
        for key in expected
    }
    assert counted == expected
    assert (
        sample(
            scraped,
            "keydir_http_requests_total",
            method="HEAD",
            route="/vks/v1/by-email/{address}",
            status="404",
        )
        == 1.0
    )
    assert (
        sample(
            scraped,
            "keydir_http_requests_total",
            method="POST",
            route="/verify/{token}",
            status="200",
        )
        == 1.0
    )
    # Templates only: no address, fingerprint or token is a label value.
    assert "@" not in scraped
    assert EDDIE_FPR not in scraped
    assert str(first["token"]) not in scraped


def test_failed_mails_are_counted(database: tuple[str, Engine], mail_settings: Settings) -> None:
    class Refusing:
        def send(self, message: object) -> None:
            raise SendFailed("mail server says no")

    for ops in _client(mail_settings):
        body = upload(ops.client, "ed25519.asc")
        request_verify(ops.client, body["token"], "eddie@example.org")
        metrics: Metrics = ops.app.state.metrics
        refusing = Dispatcher(
            make_sessionmaker(database[1]), Refusing(), "k@example.org", metrics=metrics
        )
        assert refusing.run_once().failed == 1
        scraped = ops.scrape()
        assert sample(scraped, "keydir_mails_total", result="failed") == 1.0
        assert sample(scraped, "keydir_outbox_depth") == 1.0


def test_unknown_paths_share_one_label_and_refused_requests_keep_their_route(
    ops: Ops, mail_settings: Settings
) -> None:
    client = ops.client
    for path in ("/nothing", "/alice@example.org/secret-token", "/vks/v2/by-email/a@b.org"):
        assert client.get(path).status_code == 404
    preflight = client.options(
        "/vks/v1/by-email/alice@example.org",
        headers={"Origin": "https://mail.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204
    too_large = client.post(
        "/vks/v1/upload",
        content=b"x" * (mail_settings.max_upload_bytes + 1),
        headers={"Content-Type": "application/json"},
    )
    assert too_large.status_code == 413
    scraped = ops.scrape()
    assert (
        sample(scraped, "keydir_http_requests_total", method="GET", route="unmatched", status="404")
        == 3.0
    )
    assert (
        sample(
            scraped,
            "keydir_http_requests_total",
            method="OPTIONS",
            route="/vks/v1/by-email/{address}",
            status="204",
        )
        == 1.0
    )
    assert (
        sample(
            scraped,
            "keydir_http_requests_total",
            method="POST",
            route="/vks/v1/upload",
            status="413",
        )
        == 1.0
    )
    assert "secret-token" not in scraped
    assert "@" not in scraped


def test_request_id_is_taken_when_sane_and_made_otherwise(ops: Ops) -> None:
    client = ops.client
    given = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a:01.2_x"})
    assert given.headers["x-request-id"] == "edge-7f3a:01.2_x"
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3
    assert all(re.fullmatch(r"[0-9a-f]{24}", made_id) for made_id in made)
    for insane in ("alice@example.org", "a b", "x" * 129, "-leading", "new\tline"):
        answered = client.get("/healthz", headers={"X-Request-ID": insane})
        assert answered.headers["x-request-id"] != insane
        assert re.fullmatch(r"[0-9a-f]{24}", answered.headers["x-request-id"])
    # On errors and refusals too.
    assert "x-request-id" in client.get("/nothing").headers


def test_hsts_over_https_or_behind_a_tls_proxy(mail_settings: Settings) -> None:
    plain = "http://keys.example.org"
    for ops in _client(mail_settings, base_url=plain):
        assert "strict-transport-security" not in ops.client.get("/").headers
    # Served over TLS (uvicorn with a certificate: the scope's scheme is https).
    for ops in _client(mail_settings, base_url="https://keys.example.org"):
        assert ops.client.get("/").headers["strict-transport-security"] == "max-age=31536000"
    for ops in _client(_with(mail_settings, tls_proxy=True), base_url=plain):
        for path in ("/", "/nothing", f"/vks/v1/by-fingerprint/{EDDIE_FPR}", "/healthz"):
            answer = ops.client.get(path)
            assert answer.headers["strict-transport-security"] == "max-age=31536000", path


def test_ops_endpoints_are_not_in_the_public_api_document(ops: Ops) -> None:
    paths = ops.client.get("/api/openapi.json").json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


def test_metrics_parse_with_the_prometheus_parser_and_move(ops: Ops) -> None:
    def families() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(ops.scrape()):
            for s in family.samples:
                parsed.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return parsed

    route = "/vks/v1/by-fingerprint/{fingerprint}"
    key = (("method", "GET"), ("route", route), ("status", "404"))
    before = families()
    for _ in range(3):
        assert ops.client.get("/vks/v1/by-fingerprint/" + "AB" * 20).status_code == 404
    after = families()
    requests = after["keydir_http_requests_total"]
    assert requests[key] - before.get("keydir_http_requests_total", {}).get(key, 0.0) == 3
    lookups = after["keydir_lookups_total"]
    assert lookups[(("protocol", "vks"), ("result", "not_found"))] >= 3
    assert after["keydir_keys"][()] == 0.0
    histogram = after["keydir_http_request_duration_seconds_count"]
    assert histogram[(("route", route),)] >= 3
