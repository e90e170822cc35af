"""What `keydir serve` says when it starts on a new SQLite file: one line for the migration,
none of alembic's own chatter (it listed its plugins at every start)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.serverutil import running_server


def test_start_says_what_was_migrated_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_server(
        tmp_path,
        log,
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'new.sqlite3'}",
        KEYDIR_LOG_FORMAT="json",
    ):
        pass
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert not [line for line in lines if line["logger"].startswith("alembic")], lines
    migrated = [line["message"] for line in lines if line["logger"] == "service.db.migrate"]
    assert len(migrated) == 1, lines
    assert migrated[0].startswith("database schema migrated from nothing to ")
