"""Against a real `keydir serve`: someone's primary key bound as a stranger's subkey, a key
packet too long for a v4 key, and one IPv6 network spreading its lookups over many addresses.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, PublicKey, Tag, parse_packets, serialize
from tests.attacks.live import Server
from tests.keymaker import Cert, flags
from tests.serverutil import running_server


def served_primary(server: Server, path: str) -> str | None:
    """The primary fingerprint of the key ``path`` answers with, or None for a 404."""
    answer = server.request(path)
    if answer.status == 404:
        return None
    assert answer.status == 200, (answer.status, answer.text)
    packets = parse_packets(dearmor(answer.body), max_packets=1000)
    assert packets[0].tag == Tag.PUBLIC_KEY
    return PublicKey.parse(packets[0].body).fingerprint


def test_someones_primary_key_bound_as_a_subkey_does_not_capture_its_lookups(
    fresh: Server,
) -> None:
    victim = Cert()
    victim.user_id("Victim <victim@example.org>")
    attacker = Cert()
    attacker.user_id("Mallory <mallory@example.org>")
    # An authentication-only subkey needs no back-signature: the victim's public key is all
    # the attacker needs.
    attacker.subkey(victim.primary, [flags(0x20)], backsig=False)
    assert fresh.vks_upload(attacker.armored()).status == 200
    fpr = victim.fingerprint
    assert served_primary(fresh, f"/vks/v1/by-fingerprint/{fpr}") is None
    assert served_primary(fresh, f"/pks/lookup?op=get&search=0x{fpr}") is None
    # The owner uploads: every lookup of the key answers with it, by fingerprint and key id.
    assert fresh.vks_upload(victim.armored()).status == 200
    for path in (
        f"/vks/v1/by-fingerprint/{fpr}",
        f"/pks/lookup?op=get&search=0x{fpr}",
        f"/vks/v1/by-keyid/{fpr[-16:]}",
        f"/pks/lookup?op=get&search=0x{fpr[-16:]}",
    ):
        assert served_primary(fresh, path) == fpr, path


def test_a_key_packet_too_long_for_a_v4_key_is_a_sentence(fresh: Server) -> None:
    # The length of a v4 key packet enters its fingerprint in two octets: it answered 500.
    body = bytes([4]) + (1_700_000_000).to_bytes(4, "big") + bytes([100]) + os.urandom(70_000)
    data = serialize([Packet(Tag.PUBLIC_KEY, body), Packet(Tag.USER_ID, b"x <x@example.org>")])
    armored = armor_public_key(data)
    for answer, status in ((fresh.vks_upload(armored), 400), (fresh.hkp_add(armored), 422)):
        assert answer.status == status, answer.text
        assert "longer than 65,535 octets" in answer.text


@pytest.fixture
def limited(database: tuple[str, Engine], tmp_path: Path) -> Iterator[str]:
    """A server that believes X-Forwarded-For from loopback and allows 3 address lookups a
    minute per client."""
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        KEYDIR_DATABASE_URL=database[0],
        KEYDIR_AUTO_MIGRATE="false",
        KEYDIR_TRUSTED_PROXIES='["127.0.0.1"]',
        KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE="3",
    ) as base:
        yield base


def lookup_from(base: str, client: str) -> int:
    request = urllib.request.Request(
        f"{base}/vks/v1/by-email/nobody%40example.org", headers={"X-Forwarded-For": client}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_one_ipv6_network_shares_one_budget(limited: str) -> None:
    # One customer line gets a /64: 2^64 addresses must not mean 2^64 budgets.
    statuses = [lookup_from(limited, f"2001:db8:1:2::{n:x}") for n in range(1, 5)]
    assert statuses == [404, 404, 404, 429]
    # Another /64, and an IPv4 client, have budgets of their own.
    assert lookup_from(limited, "2001:db8:1:3::1") == 404
    assert lookup_from(limited, "192.0.2.7") == 404
    # An IPv4-mapped address is that IPv4 client.
    assert [lookup_from(limited, "::ffff:192.0.2.7") for _ in range(3)] == [404, 404, 429]
