"""The pages, over HTTP on both databases: content, errors, CSRF and security headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.db.models import CertRow, OutboxRow
from tests.api.test_verification import confirm_from_mail, dispatcher, publish, request_verify
from tests.conftest import read_data
from tests.gpgutil import gpg
from tests.mailutil import SmtpServer
from tests.webutil import form

PAGES = ["/", "/upload", "/manage", "/about", "/privacy", "/search?q=nobody%40example.org"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_carry_security_headers_and_load_nothing_external(
    mail_client: TestClient, path: str
) -> None:
    response = mail_client.get(path)
    assert response.status_code in (200, 404)
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="en">' in response.text
    assert "<script" not in response.text
    for url in re.findall(r'(?:href|src|action)="([^"]+)"', response.text):
        assert url.startswith(("/", "#")), url
    assert "<h1>" in response.text


def test_every_input_has_a_label(mail_client: TestClient) -> None:
    for path in ("/", "/upload", "/manage"):
        page = mail_client.get(path).text
        ids = re.findall(r'<(?:input|textarea)[^>]* id="([^"]+)"', page)
        assert ids
        for field_id in ids:
            assert f'<label for="{field_id}">' in page, (path, field_id)


def test_search_finds_confirmed_address_and_shows_the_key(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    fpr = publish(mail_client, smtp, database[1], "rsa_multi_uid.asc", "rita@example.org")
    for query in ("rita@example.org", fpr, f"0x{fpr[-16:]}"):
        page = mail_client.get("/search", params={"q": query})
        assert page.status_code == 200, query
        assert fpr in page.text
        assert "RSA, 3072 bits" in page.text
        assert "Rita Rsa &lt;rita@example.org&gt;" in page.text
        assert "rita@example.net" not in page.text  # unconfirmed
        assert f'href="/vks/v1/by-fingerprint/{fpr}"' in page.text
    hidden = mail_client.get("/search", params={"q": "rita@example.net"})
    unknown = mail_client.get("/search", params={"q": "nobody@example.net"})
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace("rita@example.net", "X") == unknown.text.replace(
        "nobody@example.net", "X"
    )


def test_search_refuses_names_and_short_ids_with_a_sentence(mail_client: TestClient) -> None:
    by_name = mail_client.get("/search", params={"q": "Rita Rsa"})
    assert by_name.status_code == 400
    assert "not offered" in by_name.text
    short = mail_client.get("/search", params={"q": "0x12345678"})
    assert short.status_code == 400
    assert "Short" in short.text


def test_upload_by_file_then_ask_for_a_mail(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine]
) -> None:
    mail_client.get("/upload")
    page = mail_client.post(
        "/upload",
        data=form(mail_client),
        files={"keyfile": ("key.asc", read_data("rsa_multi_uid.asc"), "application/pgp-keys")},
    )
    assert page.status_code == 200
    for address in ("rita@example.org", "rita.work@example.com", "rita@example.net"):
        assert address in page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    asked = mail_client.post(
        "/upload/verify",
        data=form(mail_client, token=token.group(1), address="rita@example.net"),
    )
    assert asked.status_code == 200
    assert "confirmation mail sent" in asked.text
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(OutboxRow)) == 1


def test_upload_by_paste_and_binary_file(mail_client: TestClient) -> None:
    pasted = mail_client.post(
        "/upload", data=form(mail_client, keytext=read_data("ed25519.asc").decode())
    )
    assert pasted.status_code == 200
    assert "eddie@example.org" in pasted.text
    binary = mail_client.post(
        "/upload",
        data=form(mail_client),
        files={"keyfile": ("key.gpg", read_data("ed25519.pub.bin"), "application/octet-stream")},
    )
    assert binary.status_code == 200


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        (read_data("ed25519.sec.asc"), "secret"),
        (b"%PDF-1.4 not a key at all", "not an OpenPGP key"),
        (b"", "Choose a key file"),
    ],
)
def test_upload_errors_are_pages_with_a_sentence(
    mail_client: TestClient, database: tuple[str, Engine], content: bytes, sentence: str
) -> None:
    page = mail_client.post(
        "/upload", data=form(mail_client), files={"keyfile": ("x.asc", content, "text/plain")}
    )
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert sentence in page.text
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0


@pytest.mark.parametrize("csrf", [None, "", "x" * 43])
def test_forms_without_the_right_csrf_token_are_refused(
    mail_client: TestClient, database: tuple[str, Engine], csrf: str | None
) -> None:
    mail_client.get("/")  # the cookie exists; the form field is missing or wrong
    data = {"keytext": read_data("ed25519.asc").decode()}
    if csrf is not None:
        data["csrf"] = csrf
    page = mail_client.post("/upload", data=data)
    assert page.status_code == 403
    assert "expired or was sent from another site" in page.text
    manage = mail_client.post(
        "/manage", data={"address": "a@example.org", **({"csrf": csrf} if csrf is not None else {})}
    )
    assert manage.status_code == 403
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0


def test_csrf_cookie_is_strict_and_http_only(mail_client: TestClient) -> None:
    cookie = mail_client.get("/upload").headers["set-cookie"]
    # The public URL is https: a __Host- cookie, which browsers take only from this very
    # host (Secure, Path=/, no Domain), so that no sibling subdomain can set it.
    assert cookie.startswith("__Host-keydir_csrf=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie


PICKED = "attacker-picked-" + "x" * 32


def test_a_token_planted_from_a_sibling_subdomain_is_refused(
    mail_client: TestClient, database: tuple[str, Engine]
) -> None:
    # evil.example.org can set a cookie for all of example.org, but not a __Host- one: the
    # pair it picked (its cookie, its form field) must not pass for ours.
    for path, fields in (
        ("/upload", {"keytext": read_data("ed25519.asc").decode()}),
        ("/manage", {"address": "a@example.org"}),
    ):
        response = mail_client.post(
            path,
            data={"csrf": PICKED, **fields},
            headers={"cookie": f"keydir_csrf={PICKED}"},
        )
        assert response.status_code == 403, path
        assert "expired or was sent from another site" in response.text
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0
        assert conn.scalar(select(func.count()).select_from(OutboxRow)) == 0


@pytest.mark.parametrize("fetch_site", ["same-site", "cross-site"])
def test_forms_posted_from_another_site_are_refused_even_with_a_matching_pair(
    client: TestClient, database: tuple[str, Engine], fetch_site: str
) -> None:
    # Served over plain HTTP the cookie cannot be __Host-, and a sibling subdomain can plant
    # one; a browser still says where the form came from (Fetch Metadata).
    response = client.post(
        "/upload",
        data={"csrf": PICKED, "keytext": read_data("ed25519.asc").decode()},
        headers={"cookie": f"keydir_csrf={PICKED}", "sec-fetch-site": fetch_site},
    )
    assert response.status_code == 403
    with database[1].connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CertRow)) == 0
    # The same form sent from our own pages is taken.
    same_origin = client.post(
        "/upload",
        data=form(client, keytext=read_data("ed25519.asc").decode()),
        headers={"sec-fetch-site": "same-origin"},
    )
    assert same_origin.status_code == 200


def test_privacy_page_states_lifetimes(mail_client: TestClient) -> None:
    page = mail_client.get("/privacy").text
    assert "7 days" in page
    assert "24 hours" in page


@pytest.mark.gpg
def test_user_ids_are_isolated_from_the_text_around_them(
    mail_client: TestClient, smtp: SmtpServer, database: tuple[str, Engine], gnupghome: Path
) -> None:
    # U+202E (right-to-left override) in a user ID would otherwise run on past the user ID
    # and reorder what the page says after it ("(revoked)", the next user ID).
    user_id = "Eve \u202eyrev deifirev\u202c <eve@example.org>"
    made = gpg(gnupghome, "--passphrase", "", "--quick-gen-key", user_id, "ed25519", "default")
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    keytext = gpg(gnupghome, "--armor", "--export", "eve@example.org").stdout.decode()
    uploaded = mail_client.post("/upload", data=form(mail_client, keytext=keytext))
    assert "<td><bdi>eve@example.org</bdi></td>" in uploaded.text
    token = mail_client.post("/vks/v1/upload", json={"keytext": keytext}).json()["token"]
    request_verify(mail_client, token, "eve@example.org")
    dispatcher(database[1], smtp).run_once()
    confirm_from_mail(mail_client, smtp, "eve@example.org")
    page = mail_client.get("/search", params={"q": "eve@example.org"})
    assert page.status_code == 200
    assert "<li><bdi>Eve \u202eyrev deifirev\u202c &lt;eve@example.org&gt;</bdi></li>" in page.text


def test_no_page_of_ours_loads_from_another_origin(client: TestClient) -> None:
    """FastAPI's API docs page loaded its scripts and styles from a CDN (each visitor told a
    third party they came): it is gone, and the API is described by our OpenAPI document."""
    assert client.get("/api/docs").status_code == 404
    assert client.get("/api/redoc").status_code == 404
    described = client.get("/api/openapi.json")
    assert described.status_code == 200
    assert described.json()["info"]["title"] == "keydir"
    about = client.get("/about")
    assert 'href="/api/openapi.json"' in about.text
    assert not re.findall(r'(?:href|src)="(?:https?:)?//', about.text)
