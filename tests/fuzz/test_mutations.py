"""Mutation fuzzing of every upload path with real keys.

Bit flips, truncations, corrupted length fields, reordered, duplicated and dropped packets,
and edits of the one part of a signature that anyone may rewrite, its unhashed subpacket area
(subpackets inserted, removed, duplicated, resized, their critical bit flipped), in keys and
in lone signatures taken out of them: the OpenPGP layer may only raise its own errors, every
HTTP answer is below 500, and a refused upload changes nothing stored. Addresses on the
stored keys are confirmed first, so that served keys carry user IDs and import into gpg; after
an accepted upload changed a served key, gpg must see every revocation it saw before (key,
subkeys, user IDs). The CI run is bounded; a longer one:

    KEYDIR_FUZZ_ITERATIONS=200000 .venv/bin/pytest tests/fuzz -s -p no:randomly
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service import openpgp
from service.db.models import AddressRow, CertKeyRow, CertRow, OutboxRow
from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, Subpacket, Tag, parse_packets, serialize
from tests.attackutil import (
    FRAMES,
    Keysmith,
    frame,
    parse_listing,
    signature_type,
    unhashed_subpackets,
    with_unhashed,
)
from tests.conftest import DATA
from tests.gpgutil import gnupg_home, gpg
from tests.webutil import form

ITERATIONS = int(os.environ.get("KEYDIR_FUZZ_ITERATIONS", "3000"))
HTTP_SHARE = 10  # one input in this many also goes through HTTP
SIGNATURE_HTTP_SHARE = 3  # edited unhashed areas and lone signatures: one in this many
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


# Signatures that change what a key means when clients drop or mistrust them.
_WEIGHTY = frozenset({0x1F, 0x20, 0x28, 0x30})


def _pick_signature(rng: random.Random, packets: list[Packet]) -> int | None:
    """A signature packet's index, a revocation or direct-key signature half of the time."""
    signatures = [i for i, p in enumerate(packets) if p.tag == Tag.SIGNATURE]
    weighty = [i for i in signatures if _signature_type(packets[i]) in _WEIGHTY]
    if weighty and rng.random() < 0.5:
        return rng.choice(weighty)
    return rng.choice(signatures) if signatures else None


def _signature_type(packet: Packet) -> int | None:
    try:
        return signature_type(packet)
    except openpgp.KeyRejected:
        return None


def _edit_unhashed(rng: random.Random, body: bytes) -> bytes | None:
    """``body`` with its unhashed area edited; None when the signature cannot be parsed."""
    try:
        subs = unhashed_subpackets(body)
    except openpgp.KeyRejected:
        return None
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(6)
        if action == 0 or not subs:  # insert a subpacket of any type, maybe critical, maybe big
            size = rng.choice([0, 1, 8, 20, rng.randrange(300), rng.randrange(20_000)])
            kind = rng.choice([rng.randrange(128), 16, 20, 32, 33, 42, 101])
            subs.insert(
                rng.randrange(len(subs) + 1),
                Subpacket(kind, rng.random() < 0.5, rng.randbytes(size)),
            )
        elif action == 1:
            del subs[rng.randrange(len(subs))]
        elif action == 2:
            subs.insert(rng.randrange(len(subs) + 1), rng.choice(subs))
        elif action == 3:  # resize one: cut or grow its body
            i = rng.randrange(len(subs))
            grown = subs[i].body + rng.randbytes(rng.randrange(1, 64))
            resized = subs[i].body[: rng.randrange(len(subs[i].body) + 1)]
            subs[i] = Subpacket(subs[i].type, subs[i].critical, rng.choice([grown, resized]))
        elif action == 4:
            i = rng.randrange(len(subs))
            subs[i] = Subpacket(subs[i].type, not subs[i].critical, subs[i].body)
        else:
            rng.shuffle(subs)
    try:
        return with_unhashed(body, subs)
    except ValueError:
        return None  # grown past what the length field can say


def _unhashed(rng: random.Random, data: bytes) -> bytes:
    """Edit the unhashed area of one signature of the key, nothing else."""
    packets = _packets(data)
    at = None if packets is None else _pick_signature(rng, packets)
    if packets is None or at is None:
        return _flip(rng, data)
    edited = _edit_unhashed(rng, packets[at].body)
    if edited is None:
        return _flip(rng, data)
    packets[at] = Packet(Tag.SIGNATURE, edited)
    return serialize(packets)


def _lone(rng: random.Random, data: bytes) -> bytes:
    """One signature of the key on its own (as revocation certificates are uploaded), most
    often with its unhashed area edited, in any packet framing."""
    packets = _packets(data)
    at = None if packets is None else _pick_signature(rng, packets)
    if packets is None or at is None:
        return _flip(rng, data)
    body = packets[at].body
    if rng.random() < 0.8:
        body = _edit_unhashed(rng, body) or body
    return frame(Packet(Tag.SIGNATURE, body), rng.choice(FRAMES))


SIGNATURE_MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [_unhashed, _lone]
MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip,
    _truncate,
    _length_field,
    _reorder,
    _inner_flip,
    *SIGNATURE_MUTATORS,
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


LINK = re.compile(r"/verify/([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class RevokedSeed:
    """A gpg key as first uploaded and with a user ID and a subkey revoked afterwards."""

    clean: bytes
    revoked: bytes


@pytest.fixture(scope="module")
def revoked_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevokedSeed | None]:
    if shutil.which("gpg") is None:
        yield None
        return
    for home in gnupg_home(tmp_path_factory.mktemp("fuzz-keys") / "gnupg"):
        smith = Keysmith(home)
        fpr = smith.new_key(
            "Fuzz Owner <fuzz@example.org>", "Fuzz Old <fuzz.old@example.org>", signing_subkey=True
        )
        clean = smith.export(fpr)
        smith.revoke_subkey(fpr, 1)
        smith.revoke_user_id(fpr, "Fuzz Old <fuzz.old@example.org>")
        yield RevokedSeed(clean, smith.export(fpr))


def _confirm_every_address(client: TestClient, engine: Engine, keys: list[bytes]) -> None:
    """Upload ``keys`` and confirm each of their addresses through the link in its mail, as
    their owners would, so that served keys carry user IDs (gpg imports no key without)."""
    for key in keys:
        answer = client.post("/vks/v1/upload", json={"keytext": key.decode("latin-1")})
        if answer.status_code != 200 or not answer.json()["status"]:
            continue
        token, addresses = answer.json()["token"], list(answer.json()["status"])
        asked = client.post("/vks/v1/request-verify", json={"token": token, "addresses": addresses})
        assert asked.status_code == 200, asked.text
    with engine.connect() as conn:
        bodies = list(conn.scalars(select(OutboxRow.text_body)))
    for body in bodies:
        for token in LINK.findall(body):
            assert client.post(f"/verify/{token}", data=form(client)).status_code == 200


def served(engine: Engine) -> dict[str, tuple[str, str, int]]:
    """(digest, armor, version) of each key as lookups serve it, by fingerprint."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                CertRow.fingerprint,
                CertRow.published_digest,
                CertRow.published_armor,
                CertRow.version,
            )
        )
        return {fpr: (digest, armor, version) for fpr, digest, armor, version in rows}


def gpg_revocations(armor: str) -> frozenset[str] | None:
    """What a fresh gpg that imports ``armor`` sees revoked ("key", "sub:FPR", "uid:TEXT");
    None when it imports nothing (gpg takes no key without a user ID)."""
    home = Path(tempfile.mkdtemp(prefix="keydir-fuzz-gpg-"))
    try:
        home.chmod(0o700)
        gpg(home, "--import", stdin=armor.encode())
        listing = gpg(home, "--fixed-list-mode", "--list-keys").stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)
    views = parse_listing(listing)
    if not views:
        return None
    (view,) = views
    return frozenset(
        [
            *(["key"] if view.revoked else []),
            *(f"sub:{fpr}" for fpr, validity in view.subkeys.items() if validity == "r"),
            *(f"uid:{text}" for text, validity in view.user_ids.items() if validity == "r"),
        ]
    )


def test_mutated_keys_never_crash_the_parser_or_the_service(
    client: TestClient,
    database: tuple[str, Engine],
    revoked_seed: RevokedSeed | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(20261128)
    seeds = corpus()
    # The store holds every seed, its addresses confirmed, then the revoked versions: lone
    # signatures find their keys, and served keys carry user IDs and revocations.
    later = [(DATA / "ed25519_revoked.asc").read_bytes()]
    first = [(DATA / name).read_bytes() for name in SEEDS if name != "ed25519_revoked.asc"]
    if revoked_seed is not None:
        first.append(revoked_seed.clean)
        later.append(revoked_seed.revoked)
        seeds.append(dearmor(revoked_seed.revoked))
    _confirm_every_address(client, database[1], first)
    clean = served(database[1])
    for key in later:
        assert client.post("/vks/v1/upload", json={"keytext": key.decode()}).status_code == 200
    check_gpg = revoked_seed is not None
    known: dict[str, frozenset[str] | None] = {}  # revocations gpg sees, by served digest

    def revocations(digest: str, armor: str) -> frozenset[str] | None:
        if digest not in known:
            known[digest] = gpg_revocations(armor)
        return known[digest]

    if check_gpg:
        # The check below must be able to fail: the owner's real revocations, uploaded just
        # now, are what gpg sees added. (Mutated uploads rarely change a served key at all:
        # copies of what is stored add nothing.)
        added = {
            fpr: (revocations(now[0], now[1]) or frozenset())
            - (revocations(*clean[fpr][:2]) or frozenset())
            for fpr, now in served(database[1]).items()
            if fpr in clean and clean[fpr][0] != now[0] and now[2] == 4
        }
        assert any(
            any(item.startswith("sub:") for item in found)
            and any(item.startswith("uid:") for item in found)
            for found in added.values()
            if found
        ), added

    counts = {
        "inputs": 0,
        "accepted": 0,
        "refused": 0,
        "http": 0,
        "http_4xx": 0,
        "gpg_checks": 0,
    }
    slowest = 0.0
    gpg_seconds = 0.0
    for _ in range(ITERATIONS):
        mutator = rng.choice(MUTATORS)
        data = mutator(rng, rng.choice(seeds))
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
        share = SIGNATURE_HTTP_SHARE if mutator in SIGNATURE_MUTATORS else HTTP_SHARE
        if counts["inputs"] % share:
            continue
        before = stored(database[1])
        served_before = served(database[1])
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
            continue
        if not check_gpg:
            continue
        # An accepted upload may add revocations; it must never hide one from gpg.
        for fpr, (digest, armor, version) in served(database[1]).items():
            old = served_before.get(fpr)
            if old is None or old[0] == digest or version != 4:
                continue
            started = time.perf_counter()
            seen_before = revocations(old[0], old[1])
            seen_after = revocations(digest, armor)
            gpg_seconds += time.perf_counter() - started
            counts["gpg_checks"] += 1
            if seen_before is None:
                continue
            assert seen_after is not None, (
                f"gpg no longer imports {fpr} after an accepted {mutator.__name__} upload"
            )
            assert seen_before <= seen_after, (
                f"after an accepted {mutator.__name__} upload ({path}) gpg no longer sees "
                f"{sorted(seen_before - seen_after)} of {fpr} revoked"
            )
    with capsys.disabled():
        print(
            f"\nfuzz[{database[0].split(':')[0]}]: {counts['inputs']} inputs "
            f"({counts['accepted']} accepted, {counts['refused']} refused), "
            f"{counts['http']} over HTTP ({counts['http_4xx']} refused with 4xx), "
            f"0 responses >= 500, slowest parse {slowest * 1000:.1f} ms, "
            f"{counts['gpg_checks']} served keys changed and checked with gpg "
            f"({gpg_seconds:.1f} s)"
        )
    assert counts["refused"] > 0
    assert counts["accepted"] > 0
