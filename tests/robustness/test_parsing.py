"""Parsing in worker processes: same results, a time limit per job counted from its start,
a kill of only the worker that ran past it, and recovery after a kill."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service import openpgp
from service.core.parsing import BoundedParser, ParseBusy, ParseTooSlow
from tests.conftest import read_data
from tests.robustness.jobs import die, exhaust_memory, forever, until
from tests.robustness.test_flooding import flooded_key

LIMITS = {"max_keys": 10, "max_packets": 250_000, "limits": openpgp.KeyLimits()}


@pytest.fixture
def parser() -> Iterator[BoundedParser]:
    bounded = BoundedParser(workers=1, timeout_seconds=60, max_memory_bytes=2 * 1024**3)
    yield bounded
    bounded.close()


def test_same_result_as_in_process(parser: BoundedParser) -> None:
    data = read_data("rsa_multi_uid.asc")
    remote = parser(data, **LIMITS).certificates[0]
    local = openpgp.read_upload(data).certificates[0]
    assert (remote.fingerprint, remote.data, remote.user_ids) == (
        local.fingerprint,
        local.data,
        local.user_ids,
    )
    with pytest.raises(openpgp.SecretKeyError):
        parser(read_data("ed25519.sec.asc"), **LIMITS)


def test_too_slow_is_refused_and_the_next_upload_works(parser: BoundedParser) -> None:
    # 100,000 signatures take well over a second to read; a 10 ms limit cannot be met.
    parser.timeout = 0.01
    with pytest.raises(ParseTooSlow, match="too long"):
        parser(flooded_key(), **LIMITS)
    parser.timeout = 60
    assert parser(read_data("ed25519.asc"), **LIMITS).certificates


def _started(marker: Path) -> int:
    """The pid a job wrote to ``marker`` once it started in a worker."""
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)  # polling for the file, not waiting for time to pass
    return int(marker.read_text())


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_job_past_its_limit_kills_only_its_worker(tmp_path: Path) -> None:
    bounded = BoundedParser(workers=2, timeout_seconds=4, max_memory_bytes=2 * 1024**3)
    try:
        with ThreadPoolExecutor(2) as pool:
            stuck = pool.submit(bounded.run, forever, str(tmp_path / "stuck"))
            stuck_pid = _started(tmp_path / "stuck")
            # The other job starts half a limit later, so that its own limit ends well after
            # the stuck one's: it is in flight, and within its limit, when the kill comes.
            time.sleep(bounded.timeout / 2)
            waiting = pool.submit(
                bounded.run, until, str(tmp_path / "go"), str(tmp_path / "waiting")
            )
            waiting_pid = _started(tmp_path / "waiting")
            with pytest.raises(ParseTooSlow, match="too long"):
                stuck.result()
            assert not _alive(stuck_pid)
            # The other job was not disturbed: its worker lives on and it finishes.
            assert _alive(waiting_pid)
            (tmp_path / "go").touch()
            assert waiting.result() == waiting_pid
        # Both slots work again, the replaced one with a new process.
        pids = {bounded.run(os.getpid) for _ in range(4)}
        assert stuck_pid not in pids
        assert bounded(read_data("ed25519.asc"), **LIMITS).certificates
    finally:
        bounded.close()


def test_jobs_timing_out_together_each_get_a_sentence(tmp_path: Path) -> None:
    # Two workers killed at once (the second kill used to find the pool gone: a 500).
    bounded = BoundedParser(workers=2, timeout_seconds=1, max_memory_bytes=2 * 1024**3)
    try:
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(bounded.run, forever, str(tmp_path / str(n))) for n in range(2)]
            for job in jobs:
                with pytest.raises(ParseTooSlow):
                    job.result()
        assert bounded(read_data("ed25519.asc"), **LIMITS).certificates
    finally:
        bounded.close()


def test_time_waiting_for_a_worker_does_not_count_against_a_job(tmp_path: Path) -> None:
    # One worker, busy until it is killed at its limit; the upload queued behind it then
    # waits for a new worker to start, longer than the limit, and still gets all of it.
    bounded = BoundedParser(workers=1, timeout_seconds=2, max_memory_bytes=2 * 1024**3)
    try:
        with ThreadPoolExecutor(2) as pool:
            stuck = pool.submit(bounded.run, forever, str(tmp_path / "stuck"))
            _started(tmp_path / "stuck")
            queued_at = time.monotonic()
            queued = pool.submit(bounded, read_data("ed25519.asc"), **LIMITS)
            with pytest.raises(ParseTooSlow):
                stuck.result()
            assert queued.result().certificates
            assert time.monotonic() - queued_at > bounded.timeout
    finally:
        bounded.close()


def test_a_job_that_cannot_get_a_worker_in_time_is_refused_with_a_sentence(
    tmp_path: Path,
) -> None:
    bounded = BoundedParser(
        workers=1, timeout_seconds=60, max_memory_bytes=2 * 1024**3, queue_seconds=0.5
    )
    try:
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(bounded.run, until, str(tmp_path / "go"), str(tmp_path / "m"))
            _started(tmp_path / "m")
            with pytest.raises(ParseBusy, match="try again"):
                bounded(read_data("ed25519.asc"), **LIMITS)
            (tmp_path / "go").touch()
            holding.result()
        assert bounded(read_data("ed25519.asc"), **LIMITS).certificates
    finally:
        bounded.close()


def test_memory_exhaustion_and_a_dying_worker_are_refusals_and_the_pool_recovers() -> None:
    bounded = BoundedParser(workers=1, timeout_seconds=60, max_memory_bytes=2 * 1024**3)
    try:
        with pytest.raises(openpgp.KeyTooLarge, match="more memory"):
            bounded.run(exhaust_memory)
        first = bounded.run(os.getpid)
        with pytest.raises(openpgp.KeyTooLarge, match="more memory"):
            bounded.run(die)
        assert bounded.run(os.getpid) != first
        assert bounded(read_data("ed25519.asc"), **LIMITS).certificates
    finally:
        bounded.close()


def test_close_ends_every_worker() -> None:
    bounded = BoundedParser(workers=2, timeout_seconds=60, max_memory_bytes=2 * 1024**3)
    pid = bounded.run(os.getpid)
    assert _alive(pid)
    bounded.close()
    assert not _alive(pid)
