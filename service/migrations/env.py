"""Alembic environment: the URL comes from the caller or from KEYDIR_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.db.models import Base
from service.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.settings import Settings  # noqa: PLC0415 - only for the alembic CLI

    return Settings().database_url


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(_url())
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
