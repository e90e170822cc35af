"""Bulk import of keyrings and keydumps: streamed, parsed on every core, stored in batches.

Every key goes through the same parsing and verification as an upload (``read_upload``): only
verified self-signed material is kept. Imported addresses stay unpublished until their owners
confirm them by mail, exactly as after an upload. A bad key is reported and counted, never
fatal; running the same import again changes nothing and says so.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import BinaryIO

from service import openpgp
from service.core.directory import Directory, ImportOutcome
from service.openpgp.stream import DEFAULT_MAX_KEY_BYTES, RawKey, iter_keys

# A key in a keydump may carry tens of thousands of third-party certifications; they are
# dropped, but have to be read first. The byte limit per key bounds the memory.
IMPORT_MAX_PACKETS = 1_000_000
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    number: int  # the key's position in its file, from 1
    offset: int
    fingerprint: str | None
    reason: str


@dataclass(slots=True)
class ImportReport:
    read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def stored(self) -> int:
        return self.new + self.updated + self.unchanged

    @property
    def keys_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


_Results = list[tuple[openpgp.Certificate | None, str | None, str | None]]


@dataclass(frozen=True, slots=True)
class _Parsed:
    key: RawKey
    cert: openpgp.Certificate | None
    reason: str | None
    fingerprint: str | None


def _worker_init() -> None:
    os.environ.pop("RUST_BACKTRACE", None)  # makes every engine error ~12x slower


def _parse_batch(keys: list[RawKey], max_packets: int, limits: openpgp.KeyLimits) -> _Results:
    """Parse and verify keys in a worker process: (certificate, refusal, fingerprint) each."""
    out: _Results = []
    for key in keys:
        try:
            parsed = openpgp.read_upload(
                key.data, max_keys=1, max_packets=max_packets, limits=limits
            )
        except openpgp.KeyRejected as exc:
            out.append((None, exc.message, openpgp.primary_fingerprint(key.data)))
            continue
        except Exception:  # noqa: BLE001 - one strange key must not end an import
            out.append(
                (
                    None,
                    "This key could not be read (the OpenPGP engine failed on it).",
                    openpgp.primary_fingerprint(key.data),
                )
            )
            continue
        cert = parsed.certificates[0]
        out.append((cert, None, cert.fingerprint))
    return out


class Importer:
    """Read keys from files, parse them in worker processes, store them in batches."""

    def __init__(
        self,
        directory: Directory,
        *,
        workers: int | None = None,
        batch_size: int = 500,
        parse_chunk: int = 25,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        limits: openpgp.KeyLimits | None = None,
    ) -> None:
        self.directory = directory
        self.workers = max(0, (os.cpu_count() or 1) if workers is None else workers)
        self.batch_size = max(1, batch_size)
        self.parse_chunk = max(1, parse_chunk)
        self.max_key_bytes = max_key_bytes
        self.limits = limits or directory.limits.key

    def run(
        self,
        sources: Iterable[tuple[str, BinaryIO]],
        *,
        on_reject: Callable[[Rejection], None] | None = None,
        on_progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        report = ImportReport()
        started = time.monotonic()
        pending: list[tuple[str, openpgp.Certificate, RawKey]] = []

        def reject(source: str, key: RawKey, reason: str, fingerprint: str | None) -> None:
            report.rejected += 1
            report.reasons[reason] += 1
            if on_reject is not None:
                on_reject(Rejection(source, key.number, key.offset, fingerprint, reason))

        def flush() -> None:
            if not pending:
                return
            outcomes = self.directory.import_certificates([cert for _, cert, _ in pending])
            for (source, cert, key), (outcome, reason) in zip(pending, outcomes, strict=True):
                if outcome == ImportOutcome.NEW:
                    report.new += 1
                elif outcome == ImportOutcome.UPDATED:
                    report.updated += 1
                elif outcome == ImportOutcome.UNCHANGED:
                    report.unchanged += 1
                else:
                    reject(source, key, reason or "Refused.", cert.fingerprint)
            pending.clear()
            report.seconds = time.monotonic() - started
            if on_progress is not None:
                on_progress(report)

        for source, parsed in self._parsed(sources, report):
            report.read += 1
            if parsed.cert is None:
                reject(source, parsed.key, parsed.reason or "Refused.", parsed.fingerprint)
                continue
            pending.append((source, parsed.cert, parsed.key))
            if len(pending) >= self.batch_size:
                flush()
        flush()
        report.seconds = time.monotonic() - started
        return report

    def _parsed(
        self, sources: Iterable[tuple[str, BinaryIO]], report: ImportReport
    ) -> Iterator[tuple[str, _Parsed]]:
        """Every key of every source, parsed, in file order."""
        base = 0  # bytes of the files already read
        pool = self._pool() if self.workers else None
        in_flight: deque[_Chunk] = deque()
        # Enough parsed keys ahead that the workers go on while this process stores a
        # batch, bounded in count and in bytes.
        window = max(1, self.workers * 16)
        in_flight_bytes = 0
        try:
            for source, stream in sources:
                for keys in _chunks(
                    iter_keys(stream, max_key_bytes=self.max_key_bytes), self.parse_chunk
                ):
                    report.bytes_read = base + _position(stream)
                    chunk = _Chunk(source, keys, self._submit(pool, keys))
                    in_flight.append(chunk)
                    in_flight_bytes += chunk.size
                    while len(in_flight) >= window or in_flight_bytes > MAX_IN_FLIGHT_BYTES:
                        done = in_flight.popleft()
                        in_flight_bytes -= done.size
                        pool, results = self._collect(pool, done)
                        yield from ((done.source, p) for p in results)
                base = report.bytes_read = base + _position(stream)
            while in_flight:
                done = in_flight.popleft()
                pool, results = self._collect(pool, done)
                yield from ((done.source, p) for p in results)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
        )

    def _submit(self, pool: ProcessPoolExecutor | None, keys: list[RawKey]) -> Future[_Results]:
        """Parse the readable keys of a chunk in a worker, or here when there is no pool."""
        readable = [k for k in keys if k.error is None]
        if pool is not None:
            return pool.submit(_parse_batch, readable, IMPORT_MAX_PACKETS, self.limits)
        done: Future[_Results] = Future()
        done.set_result(_parse_batch(readable, IMPORT_MAX_PACKETS, self.limits))
        return done

    def _collect(
        self, pool: ProcessPoolExecutor | None, chunk: _Chunk
    ) -> tuple[ProcessPoolExecutor | None, list[_Parsed]]:
        """The chunk's keys, parsed, in file order (and the pool to go on with)."""
        readable = [k for k in chunk.keys if k.error is None]
        try:
            parsed = chunk.future.result()
        except BrokenProcessPool:
            # A key crashed its worker (or exhausted its memory): read this chunk again one
            # key at a time in this process, which finds and refuses the culprit.
            assert pool is not None
            pool.shutdown(wait=False, cancel_futures=False)
            pool = self._pool()
            parsed = _parse_batch(readable, IMPORT_MAX_PACKETS, self.limits)
        results = [_Parsed(k, None, k.error, k.fingerprint) for k in chunk.keys if k.error]
        results.extend(
            _Parsed(key, cert, reason, fingerprint)
            for key, (cert, reason, fingerprint) in zip(readable, parsed, strict=True)
        )
        results.sort(key=lambda p: p.key.number)
        return pool, results


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Keys of one source handed to a worker together."""

    source: str
    keys: list[RawKey]
    future: Future[_Results]

    @property
    def size(self) -> int:
        return sum(len(k.data) for k in self.keys)


def _chunks(keys: Iterator[RawKey], size: int) -> Iterator[list[RawKey]]:
    chunk: list[RawKey] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _position(stream: BinaryIO) -> int:
    """How far into ``stream`` reading has got (0 for a pipe, which cannot tell)."""
    try:
        return stream.tell()
    except (OSError, ValueError):
        return 0
