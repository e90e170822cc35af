"""VKS v1 over HTTP, on both databases, checked with the real gpg where it matters."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pysequoia
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from service import openpgp
from service.db.models import AddressRow, CertRow, TokenRow
from tests import keyforge
from tests.conftest import read_data
from tests.gpgutil import show_keys


def sequoia_is_revoked(served: bytes) -> bool:
    """Sequoia's reading of a served key (GnuPG 2.2 will not import one without user IDs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(pysequoia.Cert.from_bytes(served).is_revoked)


UNKNOWN_FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def upload(client: TestClient, name: str) -> dict[str, object]:
    response = client.post("/vks/v1/upload", json={"keytext": read_data(name).decode()})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(CertRow)) or 0,
            conn.scalar(select(func.count()).select_from(AddressRow)) or 0,
            conn.scalar(select(func.count()).select_from(TokenRow)) or 0,
        )


def test_unknown_fingerprint_is_plain_text_404(client: TestClient) -> None:
    response = client.get(f"/vks/v1/by-fingerprint/{UNKNOWN_FPR}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert "No key found" in response.text
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/vks/v1/by-fingerprint/xyz", 400),
        ("/vks/v1/by-keyid/0x12345678", 400),
        ("/vks/v1/by-keyid/123", 400),
        ("/vks/v1/by-email/not-an-address", 400),
        ("/vks/v1/by-email/nobody%40example.org", 404),
    ],
)
def test_malformed_and_missing_queries(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.strip()


@pytest.mark.gpg
@pytest.mark.parametrize("name", ["rsa_multi_uid.asc", "ed25519.asc"])
def test_gpg_key_uploads_and_lookups_serve_it(
    client: TestClient, gnupghome: Path, name: str
) -> None:
    body = upload(client, name)
    fpr = str(body["key_fpr"])
    assert isinstance(body["token"], str)
    assert len(str(body["token"])) >= 22
    status = body["status"]
    assert isinstance(status, dict)
    assert status
    assert set(status.values()) == {"unpublished"}

    by_fpr = client.get(f"/vks/v1/by-fingerprint/{fpr.lower()}")
    assert by_fpr.status_code == 200
    assert by_fpr.headers["content-type"] == "application/pgp-keys"
    assert by_fpr.headers["content-disposition"] == f'attachment; filename="{fpr}.asc"'
    assert by_fpr.text.endswith("-----END PGP PUBLIC KEY BLOCK-----\n")
    keys = show_keys(gnupghome, by_fpr.content)
    assert [k.fingerprint for k in keys] == [fpr]
    # Nothing is confirmed yet: no user ID is served.
    assert keys[0].user_ids == []
    expected_subkeys = _subkeys_of(name, gnupghome.parent / "orig")
    assert sorted(keys[0].subkeys) == sorted(expected_subkeys)
    assert len(expected_subkeys) >= 2

    # By fingerprint, a subkey answers for itself when it proved it belongs here (a
    # back-signature) or can only encrypt; an RSA encryption subkey without a back-signature
    # might be someone's primary key bound here to capture its lookups. Key ids find it.
    findable = {
        s.fingerprint: s.findable
        for s in openpgp.read_upload(read_data(name)).certificates[0].subkeys
    }
    for subkey in [fpr, *expected_subkeys]:
        by_id = client.get(f"/vks/v1/by-keyid/{subkey[-16:]}")
        by_sub = client.get(f"/vks/v1/by-fingerprint/0x{subkey}")
        assert by_id.status_code == 200, subkey
        assert by_id.text == by_fpr.text
        if subkey == fpr or findable[subkey]:
            assert by_sub.text == by_fpr.text
        else:
            assert by_sub.status_code == 404, subkey
    assert sum(findable.values()) >= 1

    for address in status:
        assert client.get(f"/vks/v1/by-email/{address}").status_code == 404


def _subkeys_of(name: str, home: Path) -> list[str]:
    home.mkdir(mode=0o700, exist_ok=True)
    return show_keys(home, read_data(name))[0].subkeys


@pytest.mark.parametrize("name", ["v6_ed25519.asc", "v6_pq.asc"])
def test_v6_key_uploads_and_is_served(client: TestClient, name: str) -> None:
    body = upload(client, name)
    fpr = str(body["key_fpr"])
    assert len(fpr) == 64
    assert body["status"] == {"vera@example.org": "unpublished"}
    served = client.get(f"/vks/v1/by-fingerprint/{fpr}")
    assert served.status_code == 200
    # GnuPG 2.2 does not know v6 keys; Sequoia reads the served key back.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert pysequoia.Cert.from_bytes(served.content).fingerprint.upper() == fpr
    # v6 key ids are the first 8 bytes of the fingerprint (RFC 9580 section 5.5.4.3).
    assert client.get(f"/vks/v1/by-keyid/{fpr[:16]}").text == served.text


def test_secret_key_is_refused_and_nothing_stored(
    client: TestClient, database: tuple[str, Engine]
) -> None:
    for name in ("rsa_multi_uid.sec.asc", "v6_ed25519.sec.asc"):
        response = client.post("/vks/v1/upload", json={"keytext": read_data(name).decode()})
        assert response.status_code == 400
        assert "secret" in response.json()["error"].lower()
    assert counts(database[1]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("keytext", "fragment"),
    [
        ("", "empty"),
        ("hello world", "BEGIN PGP PUBLIC KEY BLOCK"),
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n", "cut off"),
    ],
)
def test_garbage_uploads_get_a_sentence(
    client: TestClient, database: tuple[str, Engine], keytext: str, fragment: str
) -> None:
    response = client.post("/vks/v1/upload", json={"keytext": keytext})
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert counts(database[1]) == (0, 0, 0)


def test_upload_errors_are_json(client: TestClient) -> None:
    response = client.post(
        "/vks/v1/upload", content=b"not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "error" in response.json()
    missing = client.post("/vks/v1/upload", json={"key": "x"})
    assert missing.status_code == 422
    assert "keytext" in missing.json()["error"]


def test_oversized_upload_is_413(client: TestClient, database: tuple[str, Engine]) -> None:
    response = client.post(
        "/vks/v1/upload",
        content=json.dumps({"keytext": "A" * 1_100_000}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    assert response.headers["access-control-allow-origin"] == "*"
    assert counts(database[1]) == (0, 0, 0)


def test_several_keys_in_one_vks_upload_are_refused(client: TestClient) -> None:
    response = client.post("/vks/v1/upload", json={"keytext": read_data("two_keys.asc").decode()})
    assert response.status_code == 400
    assert "several keys" in response.json()["error"]


def test_cors_preflight(client: TestClient) -> None:
    response = client.options(
        "/vks/v1/upload",
        headers={
            "origin": "https://example.org",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type"


def test_etag_and_not_modified(client: TestClient) -> None:
    fpr = upload(client, "ed25519.asc")["key_fpr"]
    first = client.get(f"/vks/v1/by-fingerprint/{fpr}")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=60"
    again = client.get(f"/vks/v1/by-fingerprint/{fpr}", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_head_of_lookup(client: TestClient) -> None:
    fpr = upload(client, "ed25519.asc")["key_fpr"]
    response = client.head(f"/vks/v1/by-fingerprint/{fpr}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pgp-keys"


def test_older_copy_changes_nothing_newer_merges(client: TestClient) -> None:
    fpr = upload(client, "ed25519_newer.asc")["key_fpr"]
    newer = client.get(f"/vks/v1/by-fingerprint/{fpr}").text
    assert upload(client, "ed25519.asc")["key_fpr"] == fpr
    assert client.get(f"/vks/v1/by-fingerprint/{fpr}").text == newer


@pytest.mark.gpg
def test_newer_copy_adds_subkey_and_expiry(client: TestClient, gnupghome: Path) -> None:
    fpr = upload(client, "ed25519.asc")["key_fpr"]
    before = client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    upload(client, "ed25519_newer.asc")
    after = client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    assert after != before
    old_home = gnupghome.parent / "old"
    old_home.mkdir(mode=0o700)
    old = show_keys(old_home, before)[0]
    new = show_keys(gnupghome, after)[0]
    assert set(old.subkeys) < set(new.subkeys)


@pytest.mark.gpg
def test_revocation_is_merged_and_served(client: TestClient) -> None:
    fpr = upload(client, "ed25519.asc")["key_fpr"]
    upload(client, "ed25519_revoked.asc")
    served = client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    assert sequoia_is_revoked(served)


@pytest.mark.gpg
def test_bare_revocation_certificate_is_attached(client: TestClient, gnupghome: Path) -> None:
    fpr = upload(client, "ed25519.asc")["key_fpr"]
    assert not sequoia_is_revoked(client.get(f"/vks/v1/by-fingerprint/{fpr}").content)
    assert upload(client, "ed25519_revocation_only.asc")["key_fpr"] == fpr
    served = client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    assert sequoia_is_revoked(served)
    assert show_keys(gnupghome, served)[0].fingerprint == fpr


def test_bare_revocation_for_unknown_key_is_refused(client: TestClient) -> None:
    response = client.post(
        "/vks/v1/upload", json={"keytext": read_data("ed25519_revocation_only.asc").decode()}
    )
    assert response.status_code == 400
    assert "upload the key itself first" in response.json()["error"]


@pytest.mark.gpg
@pytest.mark.parametrize(
    ("tampered", "clean"),
    [
        ("foreign_subkey.asc", "ed25519.asc"),
        ("garbage_sig.asc", "ed25519.asc"),
    ],
)
def test_tampered_material_is_never_served(
    client: TestClient, gnupghome: Path, tampered: str, clean: str
) -> None:
    fpr = upload(client, clean)["key_fpr"]
    clean_served = client.get(f"/vks/v1/by-fingerprint/{fpr}").text
    assert upload(client, tampered)["key_fpr"] == fpr
    served = client.get(f"/vks/v1/by-fingerprint/{fpr}")
    # The tampered upload added nothing: not a packet, not a byte.
    assert served.text == clean_served
    assert show_keys(gnupghome, served.content)[0].fingerprint == fpr


@pytest.mark.gpg
def test_damaged_subkey_is_dropped_and_rest_served(client: TestClient, gnupghome: Path) -> None:
    fpr = upload(client, "damaged_subkey.asc")["key_fpr"]
    served = client.get(f"/vks/v1/by-fingerprint/{fpr}").content
    keys = show_keys(gnupghome, served)
    clean = _subkeys_of("ed25519.asc", gnupghome.parent / "orig")
    assert len(keys[0].subkeys) == len(clean) - 1
    assert set(keys[0].subkeys) < set(clean)


def test_a_stored_key_that_cannot_be_read_any_more_is_a_409_not_a_500(
    client: TestClient, database: tuple[str, Engine]
) -> None:
    """A key stored before its material was refused (here an RSA exponent over 2^32):
    changing it answers with a sentence; lookups still serve what was stored."""
    body = upload(client, "ed25519.asc")
    fpr = str(body["key_fpr"])
    huge = keyforge.rsa_key(2048, exponent=(1 << 33) + 1)
    with database[1].begin() as conn:
        conn.execute(
            update(CertRow)
            .where(CertRow.fingerprint == fpr)
            .values(full_data=keyforge.certificate(huge, [b"Old <old@example.org>"]))
        )
    answer = client.post(
        "/vks/v1/request-verify",
        json={"token": body["token"], "addresses": ["eddie@example.org"]},
    )
    assert answer.status_code == 409, answer.text
    assert "stored under older rules" in answer.json()["error"]
    assert client.get(f"/vks/v1/by-fingerprint/{fpr}").status_code == 200
