"""Seed a keydir database with N keys whose addresses are confirmed.

A pool of real keys (made by pysequoia) goes the way users' keys go: upload, confirmation
mail, confirmation. The rest are bulk-loaded rows cloned from the pool with their own
fingerprints, key IDs, addresses and WKD hashes, so that the tables and their indexes have
the size of N keys without N key generations and N mail round trips. Lookups only ever read
these rows, so a cloned row costs a lookup what a real one does.
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass

import pysequoia
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from service.core import wkd
from service.core.directory import Directory
from service.db.models import AddressRow, CertKeyRow, CertRow, OutboxRow
from service.db.session import make_sessionmaker

DOMAINS = [f"bench{i}.example" for i in range(10)]
_VERIFY_LINK = re.compile(r"/verify/([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class Target:
    fingerprint: str
    key_id: str
    address: str
    domain: str
    wkd_hash: str


def generate(count: int, offset: int = 0) -> list[tuple[bytes, str]]:
    """(binary public key, address) for ``count`` fresh Ed25519 keys."""
    keys = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(offset, offset + count):
            address = f"user{i}@{DOMAINS[i % len(DOMAINS)]}"
            cert = pysequoia.Cert.generate(f"Bench User {i} <{address}>")
            keys.append((bytes(cert), address))
    return keys


def publish_pool(engine: Engine, keys: list[tuple[bytes, str]]) -> None:
    """Upload each key and confirm its address through the real mail round trip."""
    sessions = make_sessionmaker(engine)
    directory = Directory(sessions)
    for data, address in keys:
        result = directory.upload(data, single=True)
        assert result.token is not None
        directory.request_verify(result.token, [address])
        with sessions() as session:
            body = session.scalars(
                select(OutboxRow.text_body)
                .where(OutboxRow.recipient == address)
                .order_by(OutboxRow.id.desc())
                .limit(1)
            ).one()
        match = _VERIFY_LINK.search(body)
        assert match is not None, "no confirmation link in the mail"
        confirmed = directory.confirm(match.group(1))
        assert confirmed.address == address
    with sessions.begin() as session:
        session.execute(delete(OutboxRow))


def clone(engine: Engine, total: int, chunk: int = 5000) -> None:
    """Bulk-load rows until ``total`` keys are stored, copying the pool's bodies."""
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        pool = list(session.scalars(select(CertRow)))
        count = len(pool)
        wkd_bodies = {a.cert_fingerprint: a.wkd_data for a in session.scalars(select(AddressRow))}
    if not pool:
        raise SystemExit("bench: the pool is empty")
    index = count
    while index < total:
        certs, keys, addresses = [], [], []
        for i in range(index, min(total, index + chunk)):
            source = pool[i % len(pool)]
            fingerprint = secrets.token_hex(20).upper()
            key_id = fingerprint[-16:]
            domain = DOMAINS[i % len(DOMAINS)]
            address = f"user{i}@{domain}"
            draft, _ = wkd.hashes_for(f"Bench User {i} <{address}>", address)
            certs.append(
                {
                    "fingerprint": fingerprint,
                    "key_id": key_id,
                    "version": source.version,
                    "algorithm": source.algorithm,
                    "bits": source.bits,
                    "curve": source.curve,
                    "created": source.created,
                    "expires": source.expires,
                    "revoked": False,
                    "full_data": source.full_data,
                    "published_armor": source.published_armor,
                    "published_digest": source.published_digest,
                    "published_uids": source.published_uids,
                    "first_seen": source.first_seen,
                    "updated_at": source.updated_at,
                }
            )
            keys.append(
                {
                    "cert_fingerprint": fingerprint,
                    "fingerprint": fingerprint,
                    "key_id": key_id,
                    "is_primary": True,
                }
            )
            addresses.append(
                {
                    "cert_fingerprint": fingerprint,
                    "address": address,
                    "user_id": f"Bench User {i} <{address}>",
                    "state": "published",
                    "verified_at": source.updated_at,
                    "domain": domain,
                    "wkd_hash": draft,
                    "wkd_hash_alt": None,
                    "wkd_data": wkd_bodies[source.fingerprint],
                }
            )
        with sessions.begin() as session:
            _bulk(session, certs, keys, addresses)
        index += len(certs)


def _bulk(session: Session, certs: list[dict], keys: list[dict], addresses: list[dict]) -> None:  # type: ignore[type-arg]
    session.execute(insert(CertRow.__table__), certs)  # type: ignore[arg-type]
    session.execute(insert(CertKeyRow.__table__), keys)  # type: ignore[arg-type]
    session.execute(insert(AddressRow.__table__), addresses)  # type: ignore[arg-type]


def targets(engine: Engine, limit: int) -> list[Target]:
    """Up to ``limit`` stored keys (a random sample) with what each lookup needs."""
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        rows = session.execute(
            select(
                CertRow.fingerprint,
                CertRow.key_id,
                AddressRow.address,
                AddressRow.domain,
                AddressRow.wkd_hash,
            )
            .join(AddressRow, AddressRow.cert_fingerprint == CertRow.fingerprint)
            .order_by(func.random())
            .limit(limit)
        ).all()
    return [Target(*row) for row in rows]
