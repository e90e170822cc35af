"""Token rows. Tokens are random, stored only as SHA-256, purpose-bound and expiring."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import TokenPurpose, TokenRow


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue(
    session: Session,
    purpose: TokenPurpose,
    cert_fingerprint: str,
    *,
    lifetime: timedelta,
    now: datetime,
    address: str | None = None,
    scope: list[str] | None = None,
) -> str:
    """Store a new token's hash and return the token (256 random bits, URL-safe).

    ``scope`` (upload tokens) lists the addresses the token may ask mails for.
    """
    token = secrets.token_urlsafe(32)
    session.add(
        TokenRow(
            hash=token_hash(token),
            purpose=purpose.value,
            cert_fingerprint=cert_fingerprint,
            address=address,
            scope=None if scope is None else json.dumps(sorted(scope)),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def find(session: Session, token: str, purpose: TokenPurpose) -> TokenRow | None:
    """The token row of this purpose whatever its state, or None (unknown, other purpose)."""
    row = session.scalars(select(TokenRow).where(TokenRow.hash == token_hash(token))).one_or_none()
    if row is None or row.purpose != purpose.value:
        return None
    return row


def consume(session: Session, row: TokenRow, now: datetime) -> bool:
    """Mark a single-use token used; True only for the one request that did it."""
    result = session.execute(
        update(TokenRow)
        .where(TokenRow.hash == row.hash, TokenRow.used_at.is_(None), TokenRow.expires_at > now)
        .values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def outstanding(
    session: Session, purpose: TokenPurpose, cert_fingerprint: str, address: str, now: datetime
) -> bool:
    """Whether an unused, unexpired token of this kind exists (a mail is outstanding)."""
    return (
        session.scalar(
            select(TokenRow.hash)
            .where(
                TokenRow.purpose == purpose.value,
                TokenRow.cert_fingerprint == cert_fingerprint,
                TokenRow.address == address,
                TokenRow.used_at.is_(None),
                TokenRow.expires_at > now,
            )
            .limit(1)
        )
        is not None
    )


def delete_for_cert(session: Session, cert_fingerprint: str) -> int:
    """Delete every token of a certificate, whatever its purpose or state; how many."""
    result = session.execute(delete(TokenRow).where(TokenRow.cert_fingerprint == cert_fingerprint))
    return int(getattr(result, "rowcount", 0))


def purge_spent(session: Session, before: datetime) -> int:
    """Delete tokens used, or expired, before ``before``; how many went."""
    result = session.execute(
        delete(TokenRow).where(or_(TokenRow.expires_at < before, TokenRow.used_at < before))
    )
    return int(getattr(result, "rowcount", 0) or 0)
