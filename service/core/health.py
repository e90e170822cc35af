"""Readiness: can this process serve requests that need the database?"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.db.migrate import current_revision, head_revision


class Readiness:
    """Checks that the database answers and its schema is the one this code expects."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The code does not change while it runs: read the migration files once.
        self._head = head_revision()

    def problem(self) -> str | None:
        """None when ready, else a sentence saying what is wrong."""
        try:
            current = current_revision(self._engine)
        except SQLAlchemyError:
            return "The database does not answer."
        if current != self._head:
            return "The database schema is not current for this version; run `keydir migrate`."
        return None
