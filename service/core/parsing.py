"""Checks of uploaded material in separate processes, bounded in time and memory.

A hostile upload must not stall a server process or exhaust its memory: each upload is
parsed, and any other check of what someone sent (``BoundedParser.run``, e.g. a lone
revocation signature against a stored key), in a worker process with an address-space limit.

- A job's time limit counts from the moment a worker starts it: time spent waiting for a free
  worker does not count against it.
- A job that outlives its limit has its worker killed and replaced. Only that worker: every
  other job in flight goes on.
- A job waits for a free worker at most ``queue_seconds``, by default twice the time limit
  (enough to outlast any job running ahead of it on every worker), and is then refused with
  ``ParseBusy``, a sentence that asks to try again, rather than making its client wait on.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import queue
import resource
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any, TypeVar

from service import openpgp

log = logging.getLogger(__name__)
T = TypeVar("T")

# A worker imports the OpenPGP stack before it takes its first job; that start is not
# counted against the job, but a worker that cannot start at all must not hang a request.
_STARTUP_SECONDS = 60.0
_READY = "ready"
_NICENESS = 10
_NEEDS_MEMORY = "This key needs more memory to read than this server allows."


class ParseTooSlow(openpgp.KeyRejected):
    default = "This key took too long to read; it is far larger or more complex than real keys are."


class ParseBusy(openpgp.KeyRejected):
    default = (
        "This server is busy checking other uploads right now and could not get to yours; "
        "please try again in a minute."
    )


def _serve(conn: Connection, max_memory: int) -> None:
    """A worker's life: run each job it is sent and send back (True, result) or
    (False, exception), until the server closes its end of the pipe."""
    # A set RUST_BACKTRACE makes every pysequoia error capture a backtrace (~12x slower).
    os.environ.pop("RUST_BACKTRACE", None)
    # Lookups, in the server process, come first: a worker busy with a hostile upload only
    # takes the CPU time they leave (its wall-clock limit still ends it).
    os.nice(_NICENESS)
    # Ctrl-C reaches the whole process group: the server ends its workers itself (close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if max_memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    conn.send(_READY)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - a job that cannot be unpickled here
            conn.send((False, exc))
            continue
        try:
            fn, args = job
            answer: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # noqa: BLE001 - e.g. an answer that cannot be pickled
            conn.send((False, RuntimeError(f"the answer could not be sent back: {exc!r}")))


class _Worker:
    """One worker process and this process's end of its pipe."""

    def __init__(self, context: SpawnContext, max_memory: int) -> None:
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(theirs, max_memory), name="keydir-parse", daemon=True
        )
        self.process.start()
        theirs.close()
        self.ready = False
        self.stopped = False

    def wait_ready(self) -> None:
        if self.ready:
            return
        if not self.conn.poll(_STARTUP_SECONDS):
            raise RuntimeError("a parse worker did not start in time")
        try:
            self.conn.recv()
        except EOFError as exc:
            raise RuntimeError("a parse worker exited while starting") from exc
        self.ready = True

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.process.kill()  # a worker stuck on a hostile job never finishes by itself
        self.process.join()
        self.process.close()
        self.conn.close()


class BoundedParser:
    """``read_upload`` (and other checks, ``run``) in a pool of worker processes, each job
    with a time limit; see the module docstring."""

    def __init__(
        self,
        workers: int,
        timeout_seconds: float,
        max_memory_bytes: int,
        *,
        queue_seconds: float | None = None,
    ) -> None:
        self.workers = workers
        self.timeout = timeout_seconds
        self.max_memory = max_memory_bytes
        self.queue_seconds = 2 * timeout_seconds if queue_seconds is None else queue_seconds
        # "spawn": the server process has threads, which fork does not copy safely.
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = False
        self._live: set[_Worker] = set()
        # One slot per worker, handed out in the order jobs asked for one; None is a worker
        # not started yet (they start on first use, not when the application is built).
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._idle.put(None)

    def __call__(
        self, data: bytes, *, max_keys: int, max_packets: int, limits: openpgp.KeyLimits
    ) -> openpgp.ParsedUpload:
        read = functools.partial(
            openpgp.read_upload, max_keys=max_keys, max_packets=max_packets, limits=limits
        )
        return self.run(read, data)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker: ``fn`` and ``args`` must pickle (``fn`` a module-level
        function). Its exceptions are raised here; ParseTooSlow when it outlives the time
        limit, KeyTooLarge when it needs more memory than a worker has, ParseBusy when no
        worker became free in time."""
        worker = self._take()
        try:
            worker.conn.send((fn, args))
            finished = worker.conn.poll(self.timeout)
            answer: tuple[bool, Any] | None = worker.conn.recv() if finished else None
        except (EOFError, OSError) as exc:
            # The worker died under the job: the address-space limit is what kills them.
            self._replace(worker)
            raise openpgp.KeyTooLarge(_NEEDS_MEMORY) from exc
        except BaseException:
            self._give_back(worker)
            raise
        if answer is None:
            log.warning("a parse job ran past %s s; its worker is replaced", self.timeout)
            self._replace(worker)
            raise ParseTooSlow
        self._give_back(worker)
        ok, value = answer
        if ok:
            result: T = value
            return result
        if isinstance(value, MemoryError):
            raise openpgp.KeyTooLarge(_NEEDS_MEMORY) from value
        assert isinstance(value, Exception)
        raise value

    def _take(self) -> _Worker:
        try:
            worker = self._idle.get(timeout=self.queue_seconds)
        except queue.Empty:
            raise ParseBusy from None
        try:
            if worker is None or not worker.process.is_alive():
                if worker is not None:
                    self._forget(worker)
                worker = self._start()
            worker.wait_ready()
        except BaseException:
            if worker is not None:
                self._forget(worker)
            self._idle.put(None)
            raise
        return worker

    def _start(self) -> _Worker:
        if self._closed:
            raise RuntimeError("the parse workers are shut down")
        worker = _Worker(self._context, self.max_memory)
        with self._lock:
            self._live.add(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.stop()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and put a new one in its slot at once: the next job need not wait
        for a process to start (though it waits for it to be ready)."""
        self._forget(worker)
        self._idle.put(None if self._closed else self._start())

    def _give_back(self, worker: _Worker) -> None:
        if self._closed:
            self._forget(worker)
            self._idle.put(None)
        else:
            self._idle.put(worker)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._live = list(self._live), set()
        for worker in workers:
            worker.stop()


def attach_signature(stored: bytes, signatures: list[bytes]) -> openpgp.Certificate | None:
    """The stored key with loose signatures attached, or None when they add nothing to it:
    what ``Directory`` runs in a worker for lone signatures. Here, because a worker imports
    this module when it starts, not within a job's time."""
    cert = openpgp.load(stored)
    merged = openpgp.attach_signatures(cert, signatures)
    return None if merged.data == cert.data else merged


def merge_into_stored(
    stored: bytes, update: openpgp.Certificate, limits: openpgp.KeyLimits
) -> openpgp.Certificate | None:
    """A stored key merged with an uploaded one, or None when the upload adds nothing;
    KeyTooLarge when the result exceeds ``limits``. Run in a worker, as ``attach_signature``."""
    cert = openpgp.load(stored)
    merged = openpgp.merge(cert, update)
    if merged.data == cert.data:
        return None
    openpgp.enforce_limits(merged, limits)
    return merged


def run_here(fn: Callable[..., T], *args: Any) -> T:
    """``BoundedParser.run`` without workers: in this process, without bounds (tests, and
    servers configured with no parse workers)."""
    return fn(*args)
