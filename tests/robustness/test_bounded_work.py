"""Hostile work stays in the bounded parse workers, against a real `keydir serve`.

The slowest uploads the limits allow run in worker processes, each stopped at its own time
limit without disturbing the others, while lookups and ordinary uploads go on; a lone
signature naming a stored key is checked in a worker, never in the server process.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import dsa
from sqlalchemy import create_engine, select

from service import openpgp
from service.db.models import CertRow
from service.openpgp.armor import armor_public_key
from service.openpgp.packets import Packet, SigType, Tag
from tests import keyforge
from tests.conftest import read_data
from tests.serverutil import running_server

NO_LIMITS = {
    "KEYDIR_RATE_UPLOADS_PER_HOUR": "0",
    "KEYDIR_RATE_MAIL_REQUESTS_PER_HOUR": "0",
    "KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE": "0",
    "KEYDIR_DISPATCH_MAIL": "false",
}
# What fits in the default 1 MiB body limit once armored and put in JSON.
MAX_BINARY_UPLOAD = 760_000


@cache
def dsa3072() -> dsa.DSAParameters:
    return dsa.generate_parameters(3072)


def post(url: str, payload: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def upload(base: str, data: bytes) -> tuple[int, str]:
    text = data.decode() if data.startswith(b"-----") else armor_public_key(data)
    return post(f"{base}/vks/v1/upload", {"keytext": text})


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def server_pid() -> int:
    """The `keydir serve` process this test started (one server process: --workers 1)."""
    for pid in children(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"keydir") for part in command) and b"serve" in command:
            return pid
    raise AssertionError("no keydir serve process found")


def slowest_upload() -> bytes:
    """As slow to check as an upload within the default limits gets: a DSA-3072 key (the
    slowest verification per byte of signature among the sizes we take, with DSA-4096) and
    thousands of self-signatures that each take a full verification to be found bad."""
    key = keyforge.dsa_key(dsa3072())
    uid = b"Slow <slow@example.org>"
    sigs = []
    size = 0
    n = 0
    while size < MAX_BINARY_UPLOAD - 2000:
        sig = keyforge.user_id_signature(key, uid, created=keyforge.CREATED + n, forged=True)
        sigs.append(sig)
        size += len(sig) + 2
        n += 1
    return keyforge.certificate(key, [uid], extra_user_id_signatures=sigs)


def test_two_slowest_uploads_leave_room_for_an_ordinary_upload_and_lookups(
    tmp_path: Path,
) -> None:
    slow = slowest_upload()
    assert len(json.dumps({"keytext": armor_public_key(slow)})) < 1024 * 1024
    stored = read_data("ed25519.asc")
    fpr = openpgp.read_upload(stored).certificates[0].fingerprint
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'keydir.sqlite3'}",
        KEYDIR_PARSE_WORKERS="2",
        KEYDIR_PARSE_TIMEOUT_SECONDS="5",
        **NO_LIMITS,
    ) as base:
        status, body = upload(base, stored)
        assert status == 200, body
        lookup = f"{base}/vks/v1/by-fingerprint/{fpr}"
        assert get(lookup) == 200
        server = server_pid()
        before = {pid: cpu_seconds(pid) for pid in children(server)}
        with ThreadPoolExecutor(2) as pool:
            slow_uploads = [pool.submit(upload, base, slow) for _ in range(2)]
            # Both are in flight once two worker processes are busy with them.
            deadline = time.monotonic() + 60
            while True:
                busy = [
                    pid for pid in children(server) if cpu_seconds(pid) - before.get(pid, 0.0) > 0.1
                ]
                if len(busy) >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # polling /proc, not waiting for an event to happen
            assert len(busy) >= 2, [f.result() for f in slow_uploads if f.done()]
            assert not any(f.done() for f in slow_uploads)
            latencies = []
            for _ in range(20):
                started = time.perf_counter()
                assert get(lookup) == 200
                latencies.append(time.perf_counter() - started)
            assert not all(f.done() for f in slow_uploads), "measured after they ended"
            ordinary = keyforge.certificate(
                keyforge.ed25519_key(), [b"Ordinary <ordinary@example.org>"]
            )
            status, body = upload(base, ordinary)
            slow_answers = [f.result() for f in slow_uploads]
        assert status == 200, body
        assert json.loads(body)["status"] == {"ordinary@example.org": "unpublished"}
        for code, text in slow_answers:
            assert code == 400, text
            assert "took too long" in text
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05, latencies
        # The pool is whole again: another upload goes through at once.
        assert upload(base, stored)[0] == 200


def test_lone_signatures_and_key_copies_are_checked_outside_the_server_process(
    tmp_path: Path,
) -> None:
    # A key with 99 subkeys, each binding a DSA-3072 signature: checking them all again
    # costs real time, which a 117-byte signature must not make the server process spend.
    key = keyforge.dsa_key(dsa3072())
    data = keyforge.certificate(
        key, [b"Owner <owner@example.org>"], subkeys=[keyforge.cv25519_subkey() for _ in range(99)]
    )
    database = f"sqlite:///{tmp_path / 'keydir.sqlite3'}"
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        KEYDIR_DATABASE_URL=database,
        KEYDIR_PARSE_WORKERS="1",
        KEYDIR_PARSE_TIMEOUT_SECONDS="60",
        **NO_LIMITS,
    ) as base:
        status, body = upload(base, data)
        assert status == 200, body
        fpr = json.loads(body)["key_fpr"]
        engine = create_engine(database)
        with engine.connect() as conn:
            full = conn.scalar(select(CertRow.full_data).where(CertRow.fingerprint == fpr))
        engine.dispose()
        assert full is not None
        # What checking every signature of the stored key costs here, once.
        started = time.process_time()
        openpgp.read_upload(full)
        baseline = time.process_time() - started

        def lone() -> bytes:
            body = keyforge.signature(key, SigType.DIRECT_KEY, forged=True)
            assert len(body) == 117
            return Packet(Tag.SIGNATURE, body).serialize()

        # A signature that adds nothing may be answered 200 (the key, unchanged) or 400
        # (like a signature for an unknown key); either way it was checked, never a 5xx.
        status, body = upload(base, lone())
        assert status in (200, 400), body
        server = server_pid()
        spent = cpu_seconds(server)
        for _ in range(5):
            status, body = upload(base, lone())
            assert status in (200, 400), body
        spent = cpu_seconds(server) - spent
        # Each request costs the server process less than a quarter of one check of the
        # key (checking it there cost more than the whole check: it was done twice over).
        assert spent / 5 < baseline / 4, (spent, baseline)

        # The same for a copy of the whole key: merging it into the stored one makes the
        # OpenPGP engine judge every signature again, in a worker, not in this process.
        spent = cpu_seconds(server)
        for _ in range(5):
            status, body = upload(base, data)
            assert status == 200, body
        spent = cpu_seconds(server) - spent
        assert spent / 5 < baseline / 4, (spent, baseline)
