"""Parsing in worker processes: same results, a time limit, and recovery after a kill."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service import openpgp
from service.core.parsing import BoundedParser, ParseTooSlow
from tests.conftest import read_data
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
