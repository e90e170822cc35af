"""Outbox rows: enqueue, claim with a lease, mark sent, failed or given up. Nothing here
commits. A row given up is kept (for the operator and the per-address mail limit) but never
claimed again and not counted as waiting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import OutboxRow


def enqueue(
    session: Session,
    *,
    kind: str,
    recipient: str,
    subject: str,
    text_body: str,
    html_body: str | None,
    message_id: str,
    now: datetime,
) -> OutboxRow:
    row = OutboxRow(
        kind=kind,
        recipient=recipient,
        subject=subject,
        text_body=text_body,
        html_body=html_body,
        message_id=message_id,
        created_at=now,
        next_attempt_at=now,
        attempts=0,
    )
    session.add(row)
    return row


def last_created(session: Session, recipient: str, kind: str) -> datetime | None:
    """When the latest mail of this kind to this recipient was queued (for rate limits)."""
    return session.scalar(
        select(func.max(OutboxRow.created_at)).where(
            OutboxRow.recipient == recipient, OutboxRow.kind == kind
        )
    )


def due_ids(session: Session, now: datetime, limit: int) -> Sequence[int]:
    query = (
        select(OutboxRow.id)
        .where(
            OutboxRow.sent_at.is_(None),
            OutboxRow.given_up_at.is_(None),
            OutboxRow.next_attempt_at <= now,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
        )
        .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Several dispatchers skip each other's rows instead of queueing behind them.
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).all()


def claim(session: Session, row_id: int, owner: str, now: datetime, lease: timedelta) -> bool:
    """Take the row for ``lease``; True only for the one dispatcher that got it."""
    result = session.execute(
        update(OutboxRow)
        .where(
            OutboxRow.id == row_id,
            OutboxRow.sent_at.is_(None),
            OutboxRow.given_up_at.is_(None),
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
        )
        .values(claimed_until=now + lease, claimed_by=owner)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def get(session: Session, row_id: int) -> OutboxRow | None:
    return session.get(OutboxRow, row_id)


def mark_sent(session: Session, row_id: int, owner: str, now: datetime) -> None:
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.claimed_by == owner)
        .values(sent_at=now, claimed_until=None, last_error=None)
    )


def mark_failed(
    session: Session,
    row_id: int,
    owner: str,
    error: str,
    retry_at: datetime,
    *,
    given_up_at: datetime | None = None,
) -> None:
    """Release the row after a failed try: due again at ``retry_at``, or never again when
    ``given_up_at`` is set. ``error`` must not name the recipient."""
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.claimed_by == owner)
        .values(
            attempts=OutboxRow.attempts + 1,
            next_attempt_at=retry_at,
            claimed_until=None,
            last_error=error[:1000],
            given_up_at=given_up_at,
        )
    )


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutboxRow).where(_waiting())) or 0


def drop_unsent(session: Session, recipients: Sequence[str]) -> int:
    """Delete the mails to these recipients that have not gone out yet; how many."""
    if not recipients:
        return 0
    result = session.execute(
        delete(OutboxRow).where(
            OutboxRow.recipient.in_(sorted(set(recipients))), OutboxRow.sent_at.is_(None)
        )
    )
    return int(getattr(result, "rowcount", 0))


def unsent_counts(session: Session) -> tuple[int, int]:
    """(waiting for a first try, failed at least once and waiting to be retried)."""
    failed = OutboxRow.attempts > 0
    rows = session.execute(select(failed, func.count()).where(_waiting()).group_by(failed)).all()
    counts = {bool(flag): int(number) for flag, number in rows}
    return counts.get(False, 0), counts.get(True, 0)


def count_unsent(session: Session) -> int:
    """Mails not sent yet, due or waiting for a retry (the outbox depth)."""
    query = select(func.count()).select_from(OutboxRow).where(_waiting())
    return session.scalar(query) or 0


def _waiting() -> ColumnElement[bool]:
    return and_(OutboxRow.sent_at.is_(None), OutboxRow.given_up_at.is_(None))


def purge_finished(session: Session, before: datetime) -> int:
    """Delete mails sent or given up before ``before`` (they hold working links and
    addresses); how many went."""
    result = session.execute(
        delete(OutboxRow).where(or_(OutboxRow.sent_at < before, OutboxRow.given_up_at < before))
    )
    return int(getattr(result, "rowcount", 0) or 0)
