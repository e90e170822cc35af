"""The blocklist: fingerprints that no upload may store. Nothing here commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.db.models import BlockedKeyRow


def lock(session: Session, fingerprints: Iterable[str]) -> None:
    """Serialise, until commit, with every other transaction that locks one of these.

    An upload and a `keydir block` of the same fingerprint take this lock before they look
    at each other's rows. Without it, on PostgreSQL (read committed) an upload could check
    the blocklist before the block commits and insert the key after the block's delete ran,
    and the blocked key would stay stored. SQLite needs nothing: it has one writer at a time,
    and the upload checks the blocklist after its first write (see the core).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    # A fingerprint is a hash: its first 60 bits are a fine advisory-lock key. Two keys that
    # share them only wait for each other. Sorted, so that two uploads never deadlock.
    keys = sorted({int(fpr[:15], 16) for fpr in fingerprints})
    if keys:
        # One statement for all of them; unnest keeps the array's (sorted) order.
        session.execute(
            text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": keys},
        ).all()


def get(session: Session, fingerprint: str) -> BlockedKeyRow | None:
    return session.get(BlockedKeyRow, fingerprint)


def add(session: Session, fingerprint: str, reason: str | None, now: datetime) -> BlockedKeyRow:
    row = BlockedKeyRow(fingerprint=fingerprint, reason=reason, created_at=now)
    session.add(row)
    return row


def remove(session: Session, row: BlockedKeyRow) -> None:
    session.delete(row)


def blocked_among(session: Session, fingerprints: Iterable[str]) -> set[str]:
    """Those of ``fingerprints`` that are blocked."""
    wanted = sorted(set(fingerprints))
    found: set[str] = set()
    # In slices: an upload may carry 100 keys of 100 subkeys each, more than some databases
    # take as parameters of one statement.
    for start in range(0, len(wanted), 500):
        query = select(BlockedKeyRow.fingerprint).where(
            BlockedKeyRow.fingerprint.in_(wanted[start : start + 500])
        )
        found.update(session.scalars(query).all())
    return found


def all_rows(session: Session) -> Sequence[BlockedKeyRow]:
    return session.scalars(
        select(BlockedKeyRow).order_by(BlockedKeyRow.created_at, BlockedKeyRow.fingerprint)
    ).all()


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(BlockedKeyRow)) or 0
