"""Logging for `keydir serve` and `keydir worker`: one configuration, text or JSON lines.

Every record carries the id of the request it belongs to (``-`` outside requests), so the
request line and anything logged while serving it can be found together.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

REQUEST_ID: ContextVar[str] = ContextVar("keydir_request_id", default="-")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        # A request line is written for every request: skip what no format of ours uses
        # (the caller's file and line, thread and process names), about a third of the
        # cost of a record. These are the logging module's documented optimisation knobs;
        # dictConfig makes this filter in every server process.
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        logging._srcfile = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The default format (2026-01-31 12:00:00,123), the date part made once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", REQUEST_ID.get()),
            "message": record.getMessage(),
        }
        entry.update(
            (name, value)
            for name, value in vars(record).items()
            if name not in _STANDARD and not name.startswith("_")
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` document; uvicorn applies it in every worker process."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {
            "text": {"()": f"{__name__}.TextFormatter"},
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format.value,
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            # uvicorn's own loggers go through ours (same format); its access log stays off:
            # it writes raw paths, which carry tokens and looked-up addresses.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            # alembic says at info level which plugins it loaded, at every start; what was
            # migrated is said once by service.db.migrate.
            "alembic": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure(level: str, log_format: LogFormat) -> None:
    logging.config.dictConfig(config(level, log_format))
