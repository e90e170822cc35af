"""Per-key limits count only the key's own verified material, and say what was exceeded."""

from __future__ import annotations

import warnings

import pysequoia
import pytest

from service import openpgp
from service.core.directory import Directory, Limits
from service.openpgp.armor import dearmor
from service.openpgp.packets import Packet, Tag, parse_packets, serialize
from tests.conftest import read_data


def generated(user_ids: list[str]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tsk = pysequoia.Tsk.generate(user_ids=user_ids)
        return bytes(tsk.extract_certificate())


def only_the_new_subkey() -> bytes:
    """ed25519_newer.asc without the subkeys ed25519.asc already has: within any limit
    alone, over it once merged."""
    old = {
        p.body
        for p in parse_packets(dearmor(read_data("ed25519.asc")), max_packets=100)
        if p.tag == Tag.PUBLIC_SUBKEY
    }
    kept: list[Packet] = []
    skipping = False
    for packet in parse_packets(dearmor(read_data("ed25519_newer.asc")), max_packets=100):
        if packet.tag == Tag.PUBLIC_SUBKEY:
            skipping = packet.body in old
        elif packet.tag != Tag.SIGNATURE:
            skipping = False
        if not skipping:
            kept.append(packet)
    return serialize(kept)


def test_user_id_count() -> None:
    data = read_data("rsa_multi_uid.asc")
    assert openpgp.read_upload(data, limits=openpgp.KeyLimits(max_user_ids=3)).certificates
    with pytest.raises(openpgp.KeyTooLarge, match="3 user IDs; at most 2"):
        openpgp.read_upload(data, limits=openpgp.KeyLimits(max_user_ids=2))


def test_subkey_count() -> None:
    with pytest.raises(openpgp.KeyTooLarge, match="2 subkeys; at most 1"):
        openpgp.read_upload(read_data("ed25519.asc"), limits=openpgp.KeyLimits(max_subkeys=1))


def test_overlong_user_id_and_newline_in_user_id() -> None:
    long_name = "A" * 1100 + " <long@example.org>"
    with pytest.raises(openpgp.KeyTooLarge, match="bytes long"):
        openpgp.read_upload(generated([long_name]))
    # A line break inside a user ID is accepted, but such a user ID names no address:
    # Sequoia reads none in it where GnuPG reads one (tests/openpgp/test_addresses.py).
    cert = openpgp.read_upload(generated(["Two\nLines <two@example.org>"])).certificates[0]
    assert cert.user_ids[0].valid
    assert cert.user_ids[0].address is None


def test_third_party_material_does_not_count() -> None:
    # The certification on this key is someone else's: it never counts against the owner.
    limits = openpgp.KeyLimits(max_user_ids=1, max_subkeys=0)
    assert openpgp.read_upload(read_data("with_certification.asc"), limits=limits).certificates
    # Nor does a foreign subkey glued onto a key that is at its limit.
    at_limit = openpgp.KeyLimits(max_subkeys=2)
    assert openpgp.read_upload(read_data("foreign_subkey.asc"), limits=at_limit).certificates


def test_a_merge_over_the_limit_is_refused_and_changes_nothing(directory: Directory) -> None:
    limited = Directory(directory._sessions, Limits(key=openpgp.KeyLimits(max_subkeys=2)))
    first = limited.upload(read_data("ed25519.asc")).keys[0]
    before = limited.by_fingerprint(first.fingerprint)
    upload = only_the_new_subkey()
    assert len(openpgp.read_upload(upload).certificates[0].subkeys) == 1
    with pytest.raises(openpgp.KeyTooLarge, match="3 subkeys"):
        limited.upload(upload)
    assert limited.by_fingerprint(first.fingerprint) == before
