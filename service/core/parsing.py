"""Key parsing in separate processes, bounded in time and memory.

A hostile upload must not stall a server process or exhaust its memory: each upload is
parsed in a worker process with an address-space limit, and abandoned (the worker killed and
replaced) when it takes longer than allowed.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from service import openpgp


class ParseTooSlow(openpgp.KeyRejected):
    default = "This key took too long to read; it is far larger or more complex than real keys are."


def _limit_memory(max_bytes: int) -> None:
    os.environ.pop("RUST_BACKTRACE", None)
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


class BoundedParser:
    """``read_upload`` in a pool of worker processes, with a time limit per upload."""

    def __init__(self, workers: int, timeout_seconds: float, max_memory_bytes: int) -> None:
        self.workers = workers
        self.timeout = timeout_seconds
        self.max_memory = max_memory_bytes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # "spawn": the server process has threads, which fork does not copy safely.
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_limit_memory,
                    initargs=(self.max_memory,),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()  # a worker stuck on a hostile key never finishes by itself
        pool.shutdown(wait=False, cancel_futures=True)

    def __call__(
        self, data: bytes, *, max_keys: int, max_packets: int, limits: openpgp.KeyLimits
    ) -> openpgp.ParsedUpload:
        pool = self._executor()
        future = pool.submit(
            openpgp.read_upload, data, max_keys=max_keys, max_packets=max_packets, limits=limits
        )
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout as exc:
            self._discard(pool)
            raise ParseTooSlow from exc
        except (BrokenProcessPool, MemoryError) as exc:
            self._discard(pool)
            raise openpgp.KeyTooLarge(
                "This key needs more memory to read than this server allows."
            ) from exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
