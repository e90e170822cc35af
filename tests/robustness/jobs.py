"""Jobs for the parse pool tests (tests/robustness/test_parsing.py).

Module-level, so that a worker process can unpickle them, and in a module of their own that
imports next to nothing: a worker imports it inside the first job it runs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def forever(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        pass


def until(flag: str, marker: str) -> int:
    """Holds its worker until the test creates ``flag``; answers the worker's pid."""
    Path(marker).write_text(str(os.getpid()))
    while not Path(flag).exists():
        time.sleep(0.01)
    return os.getpid()


def exhaust_memory() -> None:
    bytearray(4 * 1024**3)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
