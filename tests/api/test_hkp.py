"""HKP over HTTP on both databases: the wire format clients parse."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.api.hkp import escape_uid
from service.db.models import CertRow, OutboxRow
from service.openpgp.armor import dearmor
from tests.api.test_verification import dispatcher, publish, upload
from tests.conftest import read_data
from tests.mailutil import SmtpServer


def hkp_add(client: TestClient, name: str) -> tuple[int, str]:
    response = client.post("/pks/add", data={"keytext": read_data(name).decode()})
    return response.status_code, response.text


def lookup(client: TestClient, **params: str) -> tuple[int, str, str]:
    response = client.get("/pks/lookup", params=params)
    assert response.headers["access-control-allow-origin"] == "*"
    return response.status_code, response.headers.get("content-type", ""), response.text


def test_add_urlencoded_and_multipart(client: TestClient) -> None:
    status, body = hkp_add(client, "ed25519.asc")
    assert status == 200
    assert body.startswith("Stored: ")
    multipart = client.post(
        "/pks/add", files={"keytext": (None, read_data("rsa_multi_uid.asc").decode())}
    )
    assert multipart.status_code == 200
    assert hkp_add(client, "ed25519.asc") == (200, body.replace("Stored", "Unchanged"))


def test_add_several_keys_at_once(client: TestClient) -> None:
    status, body = hkp_add(client, "two_keys.asc")
    assert status == 200
    assert body.count("Stored: ") == 2


@pytest.mark.parametrize(
    ("keytext", "fragment"),
    [
        ("garbage", "BEGIN PGP PUBLIC KEY BLOCK"),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "damaged",
        ),
    ],
)
def test_add_refuses_bad_keys_with_422(
    client: TestClient, database: tuple[str, Engine], keytext: str, fragment: str
) -> None:
    response = client.post("/pks/add", data={"keytext": keytext})
    assert response.status_code == 422
    assert fragment in response.text
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0


def test_add_truncated_armor_and_secret_key(
    client: TestClient, database: tuple[str, Engine]
) -> None:
    armored = read_data("rsa_multi_uid.asc").decode()
    assert (
        client.post("/pks/add", data={"keytext": armored[: len(armored) // 2]}).status_code == 422
    )
    secret = client.post("/pks/add", data={"keytext": read_data("ed25519.sec.asc").decode()})
    assert secret.status_code == 422
    assert "secret" in secret.text
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0


def test_add_malformed_bodies(client: TestClient) -> None:
    assert client.post("/pks/add", data={"other": "x"}).status_code == 422
    assert client.post(
        "/pks/add",
        content=b"\xff\xfe\x00binary",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).status_code in (400, 422)
    big = client.post("/pks/add", data={"keytext": "A" * 1_100_000})
    assert big.status_code == 413
    assert big.headers["access-control-allow-origin"] == "*"


def test_bare_revocation_over_hkp(client: TestClient) -> None:
    hkp_add(client, "ed25519.asc")
    status, body = hkp_add(client, "ed25519_revocation_only.asc")
    assert status == 200
    assert body.startswith("Stored: ")


def test_lookup_parameters(client: TestClient) -> None:
    assert lookup(client)[0] == 400
    assert lookup(client, op="get")[0] == 400
    assert lookup(client, op="stats", search="x")[0] == 501
    status, content_type, body = lookup(client, op="get", search="0x12345678")
    assert (status, content_type.split(";")[0]) == (400, "text/plain")
    assert "Short" in body
    status, _, body = lookup(client, op="index", search="Alice")
    assert status == 400
    assert "name" in body
    assert lookup(client, op="get", search="0x" + "AB" * 20)[0] == 404


def test_get_by_every_form(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    served = mail_client.get(f"/vks/v1/by-fingerprint/{fpr}").text
    subkey = mail_client.get(f"/pks/lookup?op=index&options=mr&search=0x{fpr}")
    assert subkey.status_code == 200
    for search in (
        f"0x{fpr}",
        fpr.lower(),
        f"0x{fpr[-16:]}",
        "eddie@example.org",
        "<Eddie@Example.org>",
        "Eddie <eddie@example.org>",
    ):
        status, content_type, body = lookup(mail_client, op="get", search=search, options="mr")
        assert status == 200, search
        assert content_type == "application/pgp-keys"
        assert body == served
        assert body.endswith("\n")
    assert lookup(mail_client, op="get", search="eddie2@example.org")[0] == 404


def test_percent_encoded_query_as_gnupg_sends_it(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    response = mail_client.get(
        "/pks/lookup?op=get&options=mr&search=eddie%40example%2Eorg&exact=on"
    )
    assert response.status_code == 200


def test_machine_readable_index(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "weird_uid.asc", "joerg@example.org")
    status, content_type, body = lookup(
        mail_client, op="index", options="mr", search="joerg@example.org"
    )
    assert status == 200
    assert content_type.startswith("text/plain")
    lines = body.splitlines()
    assert lines[0] == "info:1:1"
    pub = lines[1].split(":")
    assert pub[:4] == ["pub", fpr, "22", "255"]
    assert pub[5] == ""  # no expiry
    assert lines[2] == "uid:J%C3%B6rg M%C3%BCller%3A 100%25 <joerg@example.org>:::"
    assert not body.startswith("<")
    people = mail_client.get("/pks/lookup", params={"op": "index", "search": "joerg@example.org"})
    assert people.headers["content-type"].startswith("text/html")
    assert "Jörg" in people.text


def test_index_shows_only_published_user_ids(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "rsa_multi_uid.asc", "rita@example.org")
    _, _, body = lookup(mail_client, op="vindex", options="mr", search=f"0x{fpr}")
    assert [line for line in body.splitlines() if line.startswith("uid:")] == [
        "uid:Rita Rsa <rita@example.org>:::"
    ]
    assert "example.net" not in body
    assert "example.com" not in body
    for hidden in ("rita@example.net", "rita.work@example.com"):
        status, _, text = lookup(mail_client, op="index", options="mr", search=hidden)
        assert status == 404
        assert hidden not in text


def test_revoked_and_expired_flags(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "ed25519.asc", "eddie@example.org")
    hkp_add(mail_client, "ed25519_revocation_only.asc")
    _, _, body = lookup(mail_client, op="index", options="mr", search=f"0x{fpr}")
    assert body.splitlines()[1].endswith(":r")
    expired = upload(mail_client, "expired.asc")["key_fpr"]
    _, _, body = lookup(mail_client, op="index", options="mr", search=f"0x{expired}")
    pub = body.splitlines()[1].split(":")
    assert pub[6] == "e"
    assert pub[5] != ""


def test_v6_keys_only_by_their_full_fingerprint(client: TestClient) -> None:
    fpr = upload(client, "v6_ed25519.asc")["key_fpr"]
    assert lookup(client, op="get", search=f"0x{fpr}")[0] == 200
    assert lookup(client, op="get", search=f"0x{str(fpr)[:16]}")[0] == 404


def test_new_key_over_hkp_gets_offer_mails_once(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    assert hkp_add(mail_client, "rsa_multi_uid.asc")[0] == 200
    assert hkp_add(mail_client, "rsa_multi_uid.asc")[0] == 200  # not new: no more mails
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(OutboxRow)) == 3
    dispatcher(database[1], smtp).run_once()
    assert sorted(m["To"] for m in smtp.inbox.messages) == [
        "rita.work@example.com",
        "rita@example.net",
        "rita@example.org",
    ]


def test_escape_uid() -> None:
    assert escape_uid("a:b%c") == "a%3Ab%25c"
    assert escape_uid("é\n") == "%C3%A9%0A"
    assert "\n" not in escape_uid("x\ny")


def test_served_key_never_carries_unconfirmed_user_id(client: TestClient) -> None:
    assert hkp_add(client, "rsa_multi_uid.asc")[0] == 200
    assert lookup(client, op="get", search="rita@example.org")[0] == 404
    key_id = json.loads(read_data("keys.json"))["rsa_multi_uid.asc"][0][-16:]
    status, _, body = lookup(client, op="get", search=f"0x{key_id}")
    assert status == 200
    assert b"rita" not in dearmor(body.encode())
