"""Fixed-window request counters. Nothing here commits."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db.models import RateCounterRow


def hit(session: Session, bucket: str, client: str, window: int, amount: int = 1) -> int:
    """Count ``amount`` requests; return the count in this window so far (atomic on both
    databases)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RateCounterRow).values(
        bucket=bucket, client=client, window=window, count=amount
    )
    statement = statement.on_conflict_do_update(
        index_elements=["bucket", "client", "window"],
        set_={"count": RateCounterRow.count + amount},
    ).returning(RateCounterRow.count)
    return int(session.execute(statement).scalar_one())


def forget_before(session: Session, bucket: str, window: int) -> None:
    session.execute(
        delete(RateCounterRow).where(
            RateCounterRow.bucket == bucket, RateCounterRow.window < window
        )
    )
