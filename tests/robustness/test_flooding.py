"""Certificate flooding (what took the SKS network down in 2019): a key carrying 100,000
third-party certifications uploads, is stripped, and is stored at its real size; the flood
never makes the key un-updatable or unservable."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import pysequoia
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from service.app import build
from service.db.models import CertRow
from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, Tag, parse_packets, serialize
from service.settings import Settings
from tests.conftest import NO_RATE_LIMITS, read_data

FLOOD = 100_000


def flooded_key() -> bytes:
    """with_certification.asc with 100,000 distinct certifications on its user ID, each a
    real signature packet by the certifier key (signed once, then its unhashed area varied,
    as a flooder's copies would be)."""
    packets = parse_packets(dearmor(read_data("with_certification.asc")), max_packets=100)
    uid_at = next(i for i, p in enumerate(packets) if p.tag == Tag.USER_ID)
    sigs = [p for p in packets[uid_at + 1 :] if p.tag == Tag.SIGNATURE]
    third_party = sigs[-1].body
    hashed_len = int.from_bytes(third_party[4:6], "big")
    unhashed_at = 6 + hashed_len
    unhashed_len = int.from_bytes(third_party[unhashed_at : unhashed_at + 2], "big")
    rest = third_party[unhashed_at + 2 + unhashed_len :]
    copies = []
    for n in range(FLOOD):
        # A notation-like private subpacket (type 101) with a counter keeps each copy unique.
        extra = bytes([6, 101]) + n.to_bytes(5, "big")
        area = third_party[unhashed_at + 2 : unhashed_at + 2 + unhashed_len] + extra
        body = third_party[:unhashed_at] + len(area).to_bytes(2, "big") + area + rest
        copies.append(Packet(Tag.SIGNATURE, body))
    return serialize([*packets[: uid_at + 1], sigs[0], *copies, *packets[uid_at + 1 + len(sigs) :]])


@pytest.fixture
def roomy(settings: Settings) -> Iterator[TestClient]:
    """A server whose body and packet limits let a flooded key in (the defaults would
    refuse it with 413 before parsing)."""
    with TestClient(
        build(
            settings.model_copy(
                update={
                    "max_upload_bytes": 64 * 1024 * 1024,
                    "max_packets_per_key": 250_000,
                    **NO_RATE_LIMITS,
                }
            )
        )
    ) as client:
        yield client


def test_flooded_key_is_stripped_and_stored_at_its_real_size(
    roomy: TestClient, database: tuple[str, Engine]
) -> None:
    flooded = flooded_key()
    assert len(flooded) > 10_000_000
    response = roomy.post("/vks/v1/upload", json={"keytext": armor_public_key(flooded)})
    assert response.status_code == 200, response.text[:300]
    fpr = response.json()["key_fpr"]
    with database[1].connect() as conn:
        stored = conn.scalar(select(CertRow.full_data).where(CertRow.fingerprint == fpr))
    assert stored is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        clean = bytes(pysequoia.Cert.from_bytes(read_data("with_certification.asc")))
    # Stored at its real size: the key itself, without any of the flood (or the one real
    # third-party certification).
    assert len(stored) < len(clean)
    assert len(stored) < 1000
    # And it stays updatable: the owner's plain copy uploads over the default limits too.
    update = roomy.post("/pks/add", data={"keytext": read_data("with_certification.asc").decode()})
    assert update.status_code == 200
    served = roomy.get(f"/vks/v1/by-fingerprint/{fpr}")
    assert served.status_code == 200
    assert len(served.content) < 2000


def test_flood_over_default_limits_is_a_clean_413(client: TestClient) -> None:
    response = client.post(
        "/vks/v1/upload",
        content=json.dumps({"keytext": armor_public_key(flooded_key())}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
