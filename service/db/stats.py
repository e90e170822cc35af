"""Counts for operators (`keydir stats`). Aggregates only: no address leaves this module."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from service.db.models import AddressRow, AddressState, CertRow, TokenPurpose, TokenRow


def keys(session: Session) -> tuple[int, int]:
    """(keys stored, of which revoked)."""
    total, revoked = session.execute(
        select(func.count(), func.count().filter(CertRow.revoked.is_(True))).select_from(CertRow)
    ).one()
    return int(total), int(revoked)


def address_states(session: Session, now: datetime) -> dict[str, int]:
    """Address rows (one per key and address) by state, ``pending`` split off as the API does:
    an unpublished address with an unused, unexpired confirmation link outstanding."""
    counts = {state.value: 0 for state in AddressState}
    for state, number in session.execute(
        select(AddressRow.state, func.count()).group_by(AddressRow.state)
    ).all():
        counts[state] = int(number)
    outstanding = exists().where(
        TokenRow.purpose == TokenPurpose.VERIFY.value,
        TokenRow.cert_fingerprint == AddressRow.cert_fingerprint,
        TokenRow.address == AddressRow.address,
        TokenRow.used_at.is_(None),
        TokenRow.expires_at > now,
    )
    pending = session.scalar(
        select(func.count())
        .select_from(AddressRow)
        .where(and_(AddressRow.state == AddressState.UNPUBLISHED.value, outstanding))
    )
    counts[AddressState.PENDING.value] = int(pending or 0)
    counts[AddressState.UNPUBLISHED.value] -= counts[AddressState.PENDING.value]
    return counts


def published_by_domain(session: Session, top: int) -> list[tuple[str, int]]:
    """The ``top`` domains by number of distinct published addresses, most first."""
    number = func.count(AddressRow.address.distinct())
    rows = session.execute(
        select(AddressRow.domain, number)
        .where(AddressRow.state == AddressState.PUBLISHED.value)
        .group_by(AddressRow.domain)
        .order_by(number.desc(), AddressRow.domain)
        .limit(top)
    ).all()
    return [(domain, int(count)) for domain, count in rows]
