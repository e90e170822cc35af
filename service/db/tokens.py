"""Token rows. Tokens are random, stored only as SHA-256, purpose-bound and expiring."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import TokenPurpose, TokenRow, utcnow


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue(
    session: Session,
    purpose: TokenPurpose,
    cert_fingerprint: str,
    lifetime: timedelta,
    address: str | None = None,
) -> str:
    """Store a new token's hash and return the token (256 random bits, URL-safe)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        TokenRow(
            hash=token_hash(token),
            purpose=purpose.value,
            cert_fingerprint=cert_fingerprint,
            address=address,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def find_valid(
    session: Session, token: str, purpose: TokenPurpose, now: datetime | None = None
) -> TokenRow | None:
    """The unexpired token row of this purpose, or None (wrong purpose, expired, unknown)."""
    now = now or utcnow()
    row = session.scalars(select(TokenRow).where(TokenRow.hash == token_hash(token))).one_or_none()
    if row is None or row.purpose != purpose.value or row.expires_at <= now:
        return None
    return row
