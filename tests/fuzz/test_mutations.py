"""Mutation fuzzing of every upload path with real keys.

Bit flips, truncations, corrupted length fields, reordered, duplicated and dropped packets:
the OpenPGP layer may only raise its own errors, every HTTP answer is below 500, and a
refused upload changes nothing stored. The CI run is bounded; a longer one:

    KEYDIR_FUZZ_ITERATIONS=200000 .venv/bin/pytest tests/fuzz -s -p no:randomly
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service import openpgp
from service.db.models import AddressRow, CertKeyRow, CertRow
from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, parse_packets, serialize
from tests.conftest import DATA
from tests.webutil import form

ITERATIONS = int(os.environ.get("KEYDIR_FUZZ_ITERATIONS", "3000"))
HTTP_SHARE = 10  # one input in this many also goes through HTTP
SEEDS = sorted(p.name for p in DATA.glob("*.asc") if not p.name.endswith(".sec.asc"))


def corpus() -> list[bytes]:
    return [dearmor((DATA / name).read_bytes()) for name in SEEDS]


def _flip(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
    return bytes(raw)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _packets(data: bytes) -> list[Packet] | None:
    try:
        return parse_packets(data, max_packets=10_000)
    except openpgp.KeyRejected:
        return None


def _length_field(rng: random.Random, data: bytes) -> bytes:
    """Re-frame one packet with a wrong length (shorter, longer, or absurd)."""
    packets = _packets(data)
    if not packets:
        return _flip(rng, data)
    i = rng.randrange(len(packets))
    head = serialize(packets[:i])
    body = packets[i].body
    claimed = rng.choice([0, 1, len(body) - 1, len(body) + 1, 0xFFFFFFFF, rng.randrange(1 << 16)])
    header = bytes([0xC0 | packets[i].tag, 0xFF]) + max(claimed, 0).to_bytes(4, "big")
    return head + header + body + serialize(packets[i + 1 :])


def _reorder(rng: random.Random, data: bytes) -> bytes:
    packets = _packets(data)
    if not packets or len(packets) < 2:
        return _flip(rng, data)
    packets = list(packets)
    action = rng.randrange(3)
    if action == 0:
        i, j = rng.randrange(len(packets)), rng.randrange(len(packets))
        packets[i], packets[j] = packets[j], packets[i]
    elif action == 1:
        packets.insert(rng.randrange(len(packets)), packets[rng.randrange(len(packets))])
    else:
        del packets[rng.randrange(len(packets))]
    return serialize(packets)


def _inner_flip(rng: random.Random, data: bytes) -> bytes:
    """A flip inside one packet body, framing intact: reaches the field parsers."""
    packets = _packets(data)
    if not packets:
        return _flip(rng, data)
    packets = list(packets)
    i = rng.randrange(len(packets))
    body = packets[i].body
    if body:
        packets[i] = Packet(packets[i].tag, _flip(rng, body))
    return serialize(packets)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip,
    _truncate,
    _length_field,
    _reorder,
    _inner_flip,
]


def stored(engine: Engine) -> tuple[int, int, int, str]:
    with engine.connect() as conn:
        digests = conn.scalars(select(CertRow.published_digest).order_by(CertRow.fingerprint))
        return (
            conn.scalar(select(func.count()).select_from(CertRow)) or 0,
            conn.scalar(select(func.count()).select_from(AddressRow)) or 0,
            conn.scalar(select(func.count()).select_from(CertKeyRow)) or 0,
            ",".join(digests),
        )


def test_mutated_keys_never_crash_the_parser_or_the_service(
    client: TestClient, database: tuple[str, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261128)
    seeds = corpus()
    counts = {"inputs": 0, "accepted": 0, "refused": 0, "http": 0, "http_4xx": 0}
    slowest = 0.0
    for _ in range(ITERATIONS):
        data = rng.choice(MUTATORS)(rng, rng.choice(seeds))
        counts["inputs"] += 1
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                openpgp.read_upload(data)
            counts["accepted"] += 1
        except openpgp.KeyRejected:
            counts["refused"] += 1
        slowest = max(slowest, time.perf_counter() - started)
        if counts["inputs"] % HTTP_SHARE:
            continue
        before = stored(database[1])
        as_text = armor_public_key(data) if rng.random() < 0.5 else data.decode("latin-1")
        path = rng.choice(["vks", "hkp", "web"])
        if path == "vks":
            response = client.post("/vks/v1/upload", json={"keytext": as_text})
        elif path == "hkp":
            response = client.post("/pks/add", data={"keytext": as_text})
        else:
            response = client.post(
                "/upload", data=form(client), files={"keyfile": ("key.asc", data, "text/plain")}
            )
        counts["http"] += 1
        assert response.status_code < 500, (response.status_code, response.text)
        if response.status_code >= 400:
            counts["http_4xx"] += 1
            assert response.text.strip()
            assert response.status_code != 403  # the page's CSRF token was right
            assert stored(database[1]) == before
    with capsys.disabled():
        print(
            f"\nfuzz[{database[0].split(':')[0]}]: {counts['inputs']} inputs "
            f"({counts['accepted']} accepted, {counts['refused']} refused), "
            f"{counts['http']} over HTTP ({counts['http_4xx']} refused with 4xx), "
            f"0 responses >= 500, slowest parse {slowest * 1000:.1f} ms"
        )
    assert counts["refused"] > 0
    assert counts["accepted"] > 0
