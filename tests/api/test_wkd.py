"""WKD over HTTP on both databases; the static export; the draft's hash vectors."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.app import build
from service.core.wkd import hashes_for, local_part_hash
from service.openpgp.packets import Tag, parse_packets
from service.settings import Settings
from tests.api.test_verification import dispatcher, publish, upload
from tests.mailutil import SmtpServer
from tests.serverutil import KEYDIR
from tests.webutil import form

EDDIE = local_part_hash("eddie")
EDDIE2 = local_part_hash("eddie2")
ADVANCED = "openpgpkey.example.org"


def test_hash_vectors_from_the_draft() -> None:
    assert local_part_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    assert local_part_hash("test1") == "stnkabub89rpcphiz4ppbxixkwyt1pic"


def test_non_ascii_local_part_is_indexed_both_ways() -> None:
    draft, alt = hashes_for("Jörg <JÖRG@example.org>", "jörg@example.org")
    assert draft == local_part_hash("JÖRG")  # GnuPG: only ASCII letters lower-cased
    assert alt == local_part_hash("jörg")  # most other clients: every letter
    assert draft != alt
    assert hashes_for("a <Alice@example.org>", "alice@example.org") == (
        local_part_hash("alice"),
        None,
    )


def user_ids(data: bytes) -> list[bytes]:
    return [p.body for p in parse_packets(data, max_packets=1000) if p.tag == Tag.USER_ID]


def test_advanced_and_direct_serve_only_the_requested_user_id(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    for host, path in (
        (ADVANCED, f"/.well-known/openpgpkey/example.org/hu/{EDDIE}?l=eddie"),
        ("example.org", f"/.well-known/openpgpkey/hu/{EDDIE}?l=eddie"),
        ("Example.ORG:443", f"/.well-known/openpgpkey/hu/{EDDIE}"),
    ):
        response = mail_client.get(path, headers={"host": host})
        assert response.status_code == 200, (host, path)
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["access-control-allow-origin"] == "*"
        assert not response.content.startswith(b"-----")  # binary, never armor
        assert user_ids(response.content) == [b"Eddie <eddie@example.org>"]
        head = mail_client.head(path, headers={"host": host})
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(response.content)


def test_unconfirmed_and_unknown_are_plain_404(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    for path in (
        f"/.well-known/openpgpkey/example.org/hu/{EDDIE2}",  # on the key, unconfirmed
        f"/.well-known/openpgpkey/example.org/hu/{local_part_hash('nobody')}",
        f"/.well-known/openpgpkey/example.net/hu/{EDDIE}",
        "/.well-known/openpgpkey/example.org/hu/not-a-hash",
    ):
        host = ADVANCED if "example.net" not in path else "openpgpkey.example.net"
        response = mail_client.get(path, headers={"host": host})
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/plain")
        assert "eddie2" not in response.text


def test_advanced_request_on_a_foreign_host_name_is_refused(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    path = f"/.well-known/openpgpkey/example.org/hu/{EDDIE}"
    assert mail_client.get(path, headers={"host": "openpgpkey.evil.example"}).status_code == 404
    # Our own host name (keys.example.org in these tests) may answer for any domain.
    assert mail_client.get(path, headers={"host": "keys.example.org"}).status_code == 200


def test_policy_files_exist_for_both_methods(client: TestClient) -> None:
    for host, path in (
        (ADVANCED, "/.well-known/openpgpkey/example.org/policy"),
        ("example.org", "/.well-known/openpgpkey/policy"),
    ):
        response = client.get(path, headers={"host": host})
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["access-control-allow-origin"] == "*"


def test_cors_preflight_with_custom_headers(client: TestClient) -> None:
    response = client.options(
        f"/.well-known/openpgpkey/example.org/hu/{EDDIE}",
        headers={
            "host": ADVANCED,
            "origin": "moz-extension://thunderbird",
            "access-control-request-method": "GET",
            "access-control-request-headers": "x-custom, cache-control",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-headers"] == "x-custom, cache-control"


def test_unpublish_removes_the_wkd_answer(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    path = f"/.well-known/openpgpkey/example.org/hu/{EDDIE}"
    assert mail_client.get(path, headers={"host": ADVANCED}).status_code == 200
    mail_client.post("/manage", data=form(mail_client, address="eddie@example.org"))
    dispatcher(database[1], smtp).run_once()
    _, token = smtp.inbox.link(smtp.inbox.to("eddie@example.org")[-1])
    fpr = upload(mail_client, "ed25519.asc")["key_fpr"]
    mail_client.post(
        f"/manage/{token}/unpublish",
        data=form(mail_client, fingerprint=fpr, address="eddie@example.org"),
    )
    assert mail_client.get(path, headers={"host": ADVANCED}).status_code == 404


def export(database_url: str, directory: Path, *domains: str) -> None:
    result = subprocess.run(
        [KEYDIR, "export-wkd", str(directory), *(f"--domain={d}" for d in domains)],
        env={**os.environ, "KEYDIR_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_export_is_byte_identical_to_the_server(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], tmp_path: Path
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    publish(mail_client, smtp, database[1], "weird_uid.asc", "joerg@example.org")
    export(database[0], tmp_path)
    root = tmp_path / ".well-known" / "openpgpkey" / "example.org"
    files = sorted(p.name for p in (root / "hu").iterdir())
    assert files == sorted([EDDIE, local_part_hash("joerg")])
    assert (root / "policy").read_bytes() == b""
    for name in files:
        served = mail_client.get(
            f"/.well-known/openpgpkey/example.org/hu/{name}", headers={"host": ADVANCED}
        )
        assert (root / "hu" / name).read_bytes() == served.content
    other = tmp_path / "only-net"
    export(database[0], other, "example.net")
    assert list((other / ".well-known" / "openpgpkey" / "example.net" / "hu").iterdir()) == []


@pytest.mark.parametrize("restricted", [["example.net"], ["example.org"]])
def test_served_domains_setting(
    mail_client: TestClient,
    mail_settings: Settings,
    smtp: SmtpServer,
    database: tuple[str, Engine],
    restricted: list[str],
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    settings = mail_settings.model_copy(update={"wkd_domains": restricted})
    with TestClient(build(settings)) as client:
        response = client.get(
            f"/.well-known/openpgpkey/example.org/hu/{EDDIE}", headers={"host": ADVANCED}
        )
        policy = client.get(
            "/.well-known/openpgpkey/example.org/policy", headers={"host": ADVANCED}
        )
    expected = 200 if "example.org" in restricted else 404
    assert (response.status_code, policy.status_code) == (expected, expected)


def test_domain_check_refuses_to_contact_private_addresses(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DNS answer pointing into our own network cannot be made here without a resolver of
    # our own; this stands in for it.
    def fake_getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        assert host == "openpgpkey.example.org"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    report = client.get("/wkd/check/Example.ORG").json()
    assert report["resolved"] == ["10.1.2.3"]
    assert report["dns_ok"] is True
    assert report["policy_ok"] is False
    assert "private" in report["problem"]
    assert client.get("/wkd/check/not a domain").status_code == 400
