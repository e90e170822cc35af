"""What operators do from the command line: delete a key, block and unblock, count.

Each public method of ``Admin`` is one transaction, committed once at its end, like the
directory's. Fingerprints are accepted as people paste them (spaces, ``0x``, any case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.core import queries
from service.db import blocklist, outbox
from service.db import certs as cert_repo
from service.db import stats as stats_repo
from service.db import tokens as token_repo
from service.db.models import AddressState, BlockedKeyRow, CertRow, utcnow

__all__ = ["Admin", "BlockResult", "Blocked", "NoSuchKey", "NotBlocked", "Removed", "Stats"]


class NoSuchKey(LookupError):
    """No key with this primary fingerprint is stored; ``str(exc)`` is the sentence."""


class NotBlocked(LookupError):
    """The fingerprint is not on the blocklist; ``str(exc)`` is the sentence."""


@dataclass(frozen=True, slots=True)
class Removed:
    """What deleting one key removed."""

    fingerprint: str
    subkeys: int
    addresses: int  # address rows, whatever their state
    published: int  # of which published or revoked (served until now)
    tokens: int
    mails: int  # queued mails to its addresses that had not gone out


@dataclass(frozen=True, slots=True)
class Blocked:
    fingerprint: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BlockResult:
    blocked: Blocked
    new: bool  # False: it was blocked already
    removed: list[Removed] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stats:
    keys: int
    keys_revoked: int
    addresses: dict[str, int]  # address rows (one per key and address) by state
    published_by_domain: list[tuple[str, int]]  # distinct published addresses, most first
    outbox_pending: int  # not sent, not failed yet
    outbox_failed: int  # not sent, failed at least once, will be retried
    blocked: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "keys_revoked": self.keys_revoked,
            "addresses": self.addresses,
            "published_by_domain": [
                {"domain": domain, "addresses": count} for domain, count in self.published_by_domain
            ],
            "outbox": {"pending": self.outbox_pending, "failed": self.outbox_failed},
            "blocked": self.blocked,
        }


class Admin:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def delete(self, fingerprint: str) -> Removed:
        """Remove a key and everything about it. Raises NoSuchKey or queries.BadQuery."""
        fpr = queries.parse_fingerprint(fingerprint)
        with self._sessions.begin() as session:
            blocklist.lock(session, [fpr])
            row = cert_repo.get(session, fpr, for_update=True)
            if row is None:
                holders = [
                    c.fingerprint
                    for c in cert_repo.find_by_key(session, fingerprint=fpr, only_findable=False)
                    if c.fingerprint != fpr
                ]
                if holders:
                    raise NoSuchKey(
                        f"No key with the primary fingerprint {fpr} is stored; it is a subkey "
                        f"of {', '.join(holders)}. Delete that key by its own fingerprint."
                    )
                raise NoSuchKey(f"No key with the fingerprint {fpr} is stored.")
            return _remove(session, row)

    def block(self, fingerprint: str, reason: str | None = None) -> BlockResult:
        """Block a fingerprint for good and delete every stored key that holds it (as its
        primary key or as a subkey). Blocking twice keeps the first date; a new reason
        replaces the old one."""
        fpr = queries.parse_fingerprint(fingerprint)
        with self._sessions.begin() as session:
            blocklist.lock(session, [fpr])
            row = blocklist.get(session, fpr)
            new = row is None
            if row is None:
                row = blocklist.add(session, fpr, reason, utcnow())
            elif reason is not None:
                row.reason = reason
            removed = []
            for holder in cert_repo.find_by_key(session, fingerprint=fpr, only_findable=False):
                locked = cert_repo.get(session, holder.fingerprint, for_update=True)
                if locked is not None:
                    removed.append(_remove(session, locked))
            return BlockResult(_blocked(row), new, removed)

    def unblock(self, fingerprint: str) -> Blocked:
        """Lift a block; uploads of the key are taken again. Raises NotBlocked."""
        fpr = queries.parse_fingerprint(fingerprint)
        with self._sessions.begin() as session:
            row = blocklist.get(session, fpr)
            if row is None:
                raise NotBlocked(f"The fingerprint {fpr} is not blocked.")
            entry = _blocked(row)
            blocklist.remove(session, row)
            return entry

    def blocklist(self) -> list[Blocked]:
        with self._sessions() as session:
            return [_blocked(row) for row in blocklist.all_rows(session)]

    def stats(self, top: int = 10) -> Stats:
        with self._sessions() as session:
            keys, revoked = stats_repo.keys(session)
            pending, failed = outbox.unsent_counts(session)
            return Stats(
                keys=keys,
                keys_revoked=revoked,
                addresses=stats_repo.address_states(session, utcnow()),
                published_by_domain=stats_repo.published_by_domain(session, top),
                outbox_pending=pending,
                outbox_failed=failed,
                blocked=blocklist.count(session),
            )


def _blocked(row: BlockedKeyRow) -> Blocked:
    return Blocked(row.fingerprint, row.reason, row.created_at)


def _remove(session: Session, row: CertRow) -> Removed:
    addresses = [a.address for a in row.addresses]
    served = (AddressState.PUBLISHED.value, AddressState.REVOKED.value)
    removed = Removed(
        fingerprint=row.fingerprint,
        subkeys=sum(1 for k in row.keys if not k.is_primary),
        addresses=len(addresses),
        published=sum(1 for a in row.addresses if a.state in served),
        tokens=token_repo.delete_for_cert(session, row.fingerprint),
        # The outbox does not record which key a mail is about, so every unsent mail to
        # these addresses goes, also one about another key with the same address (its owner
        # can ask again): a removed key must not be named in a mail sent afterwards.
        mails=outbox.drop_unsent(session, addresses),
    )
    cert_repo.delete(session, row)
    return removed
