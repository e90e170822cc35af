"""Alembic, driven from code: `keydir migrate`, start-up checks and the tests use this."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

log = logging.getLogger(__name__)
VERSION_TABLE = "alembic_version"
# Shipped inside the package (wheel, sdist, container): no alembic.ini is needed to run.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (one log line when it changed)."""
    before = current_revision(engine)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    after = current_revision(engine)
    if after != before:
        log.info("database schema migrated from %s to %s", before or "nothing", after)


def head_revision() -> str | None:
    """The newest revision this code knows (read from the migration files)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; raises when it does not answer.

    Two small catalogue queries, quiet (alembic's MigrationContext logs at info level each
    time, and readiness probes ask every few seconds).
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        revision: str | None = connection.scalar(
            text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant
        )
        return revision


def pending_revision(engine: Engine) -> str | None:
    """None when the schema is current, else the head revision it lacks."""
    head = head_revision()
    return None if current_revision(engine) == head else head
