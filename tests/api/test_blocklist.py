"""A blocked key cannot come back through any upload path, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service import openpgp
from service.core.admin import Admin
from service.db.models import AddressRow, CertKeyRow, CertRow, OutboxRow, TokenRow
from service.db.session import make_sessionmaker
from tests.conftest import read_data
from tests.webutil import form

EDDIE = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"


@pytest.fixture
def admin(database: tuple[str, Engine]) -> Admin:
    return Admin(make_sessionmaker(database[1]))


def stored(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.scalar(select(func.count()).select_from(model)) or 0
            for model in (CertRow, CertKeyRow, AddressRow, TokenRow, OutboxRow)
        )


def fingerprints(name: str) -> list[str]:
    return [c.fingerprint for c in openpgp.read_upload(read_data(name)).certificates]


def test_block_takes_a_served_key_off_every_protocol(client: TestClient, admin: Admin) -> None:
    assert client.post("/pks/add", data={"keytext": read_data("ed25519.asc").decode()}).is_success
    assert client.get(f"/vks/v1/by-fingerprint/{EDDIE}").status_code == 200
    admin.block(EDDIE)
    assert client.get(f"/vks/v1/by-fingerprint/{EDDIE}").status_code == 404
    assert client.get(f"/vks/v1/by-keyid/{EDDIE[-16:]}").status_code == 404
    assert client.get(f"/pks/lookup?op=get&search=0x{EDDIE}").status_code == 404


def test_vks_upload_of_a_blocked_key_is_refused(
    client: TestClient, admin: Admin, database: tuple[str, Engine]
) -> None:
    admin.block(EDDIE, reason="legal request")
    before = stored(database[1])
    response = client.post("/vks/v1/upload", json={"keytext": read_data("ed25519.asc").decode()})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == (
        f"The key {EDDIE} is blocked on this key directory and cannot be uploaded. "
        "Nothing was stored."
    )
    assert "legal request" not in response.text  # the reason is for operators only
    assert stored(database[1]) == before


@pytest.mark.parametrize("name", ["ed25519.asc", "two_keys.asc"])
def test_hkp_add_of_a_blocked_key_is_refused_alone_or_among_others(
    client: TestClient, admin: Admin, database: tuple[str, Engine], name: str
) -> None:
    blocked = fingerprints(name)[-1]
    admin.block(blocked)
    before = stored(database[1])
    response = client.post("/pks/add", data={"keytext": read_data(name).decode()})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/plain")
    assert f"The key {blocked} is blocked" in response.text
    assert stored(database[1]) == before  # not even the other key of the upload
    for fpr in fingerprints(name):
        assert client.get(f"/vks/v1/by-fingerprint/{fpr}").status_code == 404


def test_hkp_add_of_a_keyring_with_a_blocked_key_stores_nothing(
    client: TestClient, admin: Admin, database: tuple[str, Engine]
) -> None:
    """The same with the blocked key first: order in the upload does not matter."""
    keys = fingerprints("keyring.asc")
    admin.block(keys[0])
    response = client.post("/pks/add", data={"keytext": read_data("keyring.asc").decode()})
    assert response.status_code == 422
    assert keys[0] in response.text
    assert stored(database[1]) == (0, 0, 0, 0, 0)


def test_web_upload_of_a_blocked_key_is_refused(
    client: TestClient, admin: Admin, database: tuple[str, Engine]
) -> None:
    admin.block(EDDIE)
    response = client.post("/upload", data=form(client, keytext=read_data("ed25519.asc").decode()))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "is blocked on this key directory" in response.text
    assert stored(database[1]) == (0, 0, 0, 0, 0)
    as_file = client.post(
        "/upload",
        data=form(client),
        files={"keyfile": ("key.asc", read_data("ed25519.asc"), "application/pgp-keys")},
    )
    assert as_file.status_code == 400
    assert "is blocked on this key directory" in as_file.text
    assert stored(database[1]) == (0, 0, 0, 0, 0)


def test_a_key_carrying_a_blocked_subkey_is_refused_everywhere(
    client: TestClient, admin: Admin, database: tuple[str, Engine]
) -> None:
    subkey = openpgp.read_upload(read_data("ed25519.asc")).certificates[0].subkeys[0].fingerprint
    admin.block(subkey)
    keytext = read_data("ed25519.asc").decode()
    vks = client.post("/vks/v1/upload", json={"keytext": keytext})
    hkp = client.post("/pks/add", data={"keytext": keytext})
    page = client.post("/upload", data=form(client, keytext=keytext))
    assert (vks.status_code, hkp.status_code, page.status_code) == (400, 422, 400)
    sentence = f"carries the subkey {subkey}, which is blocked on this key directory"
    assert sentence in vks.json()["error"]
    assert sentence in hkp.text
    assert sentence in page.text
    assert stored(database[1]) == (0, 0, 0, 0, 0)


def test_after_unblock_the_key_uploads_again(
    client: TestClient, admin: Admin, database: tuple[str, Engine]
) -> None:
    admin.block(EDDIE)
    keytext = read_data("ed25519.asc").decode()
    assert client.post("/vks/v1/upload", json={"keytext": keytext}).status_code == 400
    admin.unblock(EDDIE)
    response = client.post("/vks/v1/upload", json={"keytext": keytext})
    assert response.status_code == 200
    assert response.json()["key_fpr"] == EDDIE
