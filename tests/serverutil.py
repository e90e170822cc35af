"""Run `keydir serve` as a real process on loopback, as clients meet it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

KEYDIR = str(Path(sys.executable).parent / "keydir")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait (at most a minute) until the server accepts connections."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("server did not come up within 60 s")


@contextmanager
def running_server(
    workdir: Path,
    log: Path,
    port: int | None = None,
    args: Sequence[str] = (),
    scheme: str = "http",
    host: str = "127.0.0.1",
    program: str = KEYDIR,
    **env: str,
) -> Iterator[str]:
    """Start `keydir serve` (with extra ``args``) with extra KEYDIR_ settings; yield its
    base URL. ``program`` is another installed `keydir` (a wheel's)."""
    port = port or free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [program, "serve", "--port", str(port), *args],
            env={**os.environ, **env},
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(process, port, log)
            yield f"{scheme}://{host}:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)
