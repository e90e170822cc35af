"""The protocol-neutral core: upload and lookup. Each public method is one transaction.

VKS, HKP and the web pages translate these calls; none of them decides what is published.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import openpgp
from service.db import certs as cert_repo
from service.db import tokens as token_repo
from service.db.models import AddressRow, AddressState, CertRow, TokenPurpose, utcnow

__all__ = ["AddressState", "Directory", "Limits", "PublishedKey", "UploadRejected", "UploadResult"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    max_keys_per_upload: int = 100
    max_packets_per_key: int = 50_000
    upload_token_lifetime: timedelta = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class UploadedKey:
    fingerprint: str
    # Every address of a valid user ID and its state; never shown to anyone but the uploader.
    status: dict[str, AddressState]
    changed: bool
    new: bool


@dataclass(frozen=True, slots=True)
class UploadResult:
    keys: list[UploadedKey]
    token: str | None  # one upload token covering the uploaded keys (None if none stored)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    fingerprint: str
    armor: str
    digest: str  # SHA-256 of ``armor``: a strong ETag
    updated_at: datetime


class UploadRejected(ValueError):
    """An upload we cannot take; ``str(exc)`` is the sentence for people."""


class Directory:
    def __init__(self, sessions: sessionmaker[Session], limits: Limits | None = None) -> None:
        self._sessions = sessions
        self.limits = limits or Limits()

    # -- transactions ---------------------------------------------------------------------

    def _transaction(self, work: Callable[[Session], T], *, retries: int = 2) -> T:
        """Run ``work`` in one transaction, committed once at the end.

        Two requests inserting the same new key at once collide on the primary key; the
        loser runs again and then merges into the winner's row.
        """
        for attempt in range(retries + 1):
            try:
                with self._sessions.begin() as session:
                    return work(session)
            except IntegrityError:
                if attempt == retries:
                    raise
                log.info("concurrent write collided; retrying")
        raise AssertionError("unreachable")

    # -- upload ---------------------------------------------------------------------------

    def upload(self, data: bytes, *, single: bool = False) -> UploadResult:
        """Parse, verify and store one or more keys (or a revocation for a stored key).

        Raises ``openpgp.KeyRejected`` (bad input) or ``UploadRejected`` with a sentence.
        """
        parsed = openpgp.read_upload(
            data,
            max_keys=self.limits.max_keys_per_upload,
            max_packets=self.limits.max_packets_per_key,
        )
        if single and len(parsed.certificates) > 1:
            raise UploadRejected("The upload holds several keys; upload one key at a time here.")
        return self._transaction(lambda session: self._store(session, parsed))

    def _store(self, session: Session, parsed: openpgp.ParsedUpload) -> UploadResult:
        results = [self._store_one(session, cert) for cert in parsed.certificates]
        if parsed.loose_signatures:
            results.extend(self._attach(session, parsed.loose_signatures))
        token = None
        if results:
            token = token_repo.issue(
                session,
                TokenPurpose.UPLOAD,
                results[0].fingerprint,
                self.limits.upload_token_lifetime,
            )
        return UploadResult(results, token)

    def _store_one(self, session: Session, cert: openpgp.Certificate) -> UploadedKey:
        row = cert_repo.get(session, cert.fingerprint, for_update=True)
        new = row is None
        if row is None:
            merged = cert
            row = CertRow(fingerprint=cert.fingerprint, first_seen=utcnow())
            session.add(row)
            changed = True
        else:
            stored = openpgp.load(row.full_data)
            merged = openpgp.merge(stored, cert)
            changed = merged.data != stored.data
        if changed:
            _write(row, merged)
        return UploadedKey(cert.fingerprint, _status(row), changed, new)

    def _attach(self, session: Session, signatures: Sequence[bytes]) -> list[UploadedKey]:
        """Merge loose signatures (revocation certificates) into the keys that made them."""
        results: list[UploadedKey] = []
        for body in signatures:
            fprs, key_ids = openpgp.signature_issuers(body)
            candidates: list[CertRow] = []
            for fpr in fprs:
                candidates.extend(cert_repo.find_by_key(session, fingerprint=fpr))
            for key_id in key_ids:
                candidates.extend(cert_repo.find_by_key(session, key_id=key_id))
            updated = None
            for row in {c.fingerprint: c for c in candidates}.values():
                if row.fingerprint not in fprs and row.key_id not in key_ids:
                    continue  # only a primary key's own revocation is taken
                locked = cert_repo.get(session, row.fingerprint, for_update=True)
                assert locked is not None
                stored = openpgp.load(locked.full_data)
                merged = openpgp.attach_signatures(stored, [body])
                if merged.data != stored.data:
                    _write(locked, merged)
                    updated = UploadedKey(locked.fingerprint, _status(locked), True, False)
                    break
                updated = UploadedKey(locked.fingerprint, _status(locked), False, False)
            if updated is None:
                raise UploadRejected(
                    "This is a lone signature (such as a revocation certificate) for a key "
                    "that is not stored here. Upload the key itself first."
                )
            results.append(updated)
        return results

    # -- lookup ---------------------------------------------------------------------------

    def by_fingerprint(self, fingerprint: str) -> PublishedKey | None:
        with self._sessions() as session:
            return _first(cert_repo.find_by_key(session, fingerprint=fingerprint))

    def by_key_id(self, key_id: str) -> PublishedKey | None:
        with self._sessions() as session:
            return _first(cert_repo.find_by_key(session, key_id=key_id))

    def by_address(self, address: str) -> PublishedKey | None:
        with self._sessions() as session:
            row = cert_repo.find_published_by_address(session, address)
            return None if row is None else _published(row)


def _first(rows: Sequence[CertRow]) -> PublishedKey | None:
    return _published(rows[0]) if rows else None


def _published(row: CertRow) -> PublishedKey:
    return PublishedKey(row.fingerprint, row.published_armor, row.published_digest, row.updated_at)


def _status(row: CertRow) -> dict[str, AddressState]:
    return {a.address: AddressState(a.state) for a in row.addresses}


def _write(row: CertRow, cert: openpgp.Certificate) -> None:
    """Store a certificate and everything derived from it in ``row``."""
    row.key_id = cert.key_id
    row.version = cert.version
    row.algorithm = cert.algorithm
    row.bits = cert.bits
    row.curve = cert.curve
    row.created = cert.created
    row.expires = cert.expires
    row.revoked = cert.revoked
    row.full_data = cert.data
    row.updated_at = utcnow()
    cert_repo.set_keys(
        row,
        [(cert.fingerprint, cert.key_id, True)]
        + [(s.fingerprint, s.key_id, False) for s in cert.subkeys],
    )
    existing = {a.address: a for a in row.addresses}
    for address, uid in cert.addresses.items():
        current = existing.get(address)
        if current is None:
            row.addresses.append(
                AddressRow(address=address, user_id=uid.text, state=AddressState.UNPUBLISHED)
            )
        elif uid.revoked and current.state == AddressState.PUBLISHED.value:
            # The owner revoked this user ID: keep serving it, with its revocation.
            current.state = AddressState.REVOKED.value
    armor = cert.armored(cert_repo.published_addresses(row))
    row.published_armor = armor
    row.published_digest = hashlib.sha256(armor.encode("ascii")).hexdigest()
