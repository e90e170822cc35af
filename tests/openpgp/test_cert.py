"""Canonicalisation, policy and merge on keys made by gpg and pysequoia (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import openpgp
from service.openpgp.armor import dearmor
from service.openpgp.packets import Packet, Tag, parse_packets, serialize
from tests import keyforge
from tests.conftest import read_data
from tests.gpgutil import show_keys

MANIFEST: dict[str, list[str]] = json.loads(read_data("keys.json"))


def one(name: str) -> openpgp.Certificate:
    parsed = openpgp.read_upload(read_data(name))
    assert len(parsed.certificates) == 1
    return parsed.certificates[0]


def bodies(data: bytes) -> list[tuple[int, bytes]]:
    """Packets without their framing: headers are re-encoded, bodies never are."""
    return [(p.tag, p.body) for p in parse_packets(data, max_packets=10_000)]


def tags(data: bytes) -> list[int]:
    return [p.tag for p in parse_packets(data, max_packets=10_000)]


@pytest.mark.parametrize(
    "name",
    [
        "rsa_multi_uid.asc",
        "ed25519.asc",
        "ed25519_newer.asc",
        "v6_ed25519.asc",
        "v6_pq.asc",
        "nistp256.asc",
        "dsa_elg.asc",
        "weird_uid.asc",
        "expired.asc",
        "uid_revoked.asc",
    ],
)
def test_clean_keys_keep_every_packet(name: str) -> None:
    """Nothing is lost from a well-formed key: every self-signature verified."""
    cert = one(name)
    assert [cert.fingerprint] == MANIFEST[name]
    assert bodies(cert.data) == bodies(dearmor(read_data(name)))


def test_binary_and_armored_input_agree() -> None:
    assert one("ed25519.pub.bin").data == one("ed25519.asc").data


def test_details_of_rsa_key() -> None:
    cert = one("rsa_multi_uid.asc")
    assert (cert.version, cert.algorithm, cert.bits) == (4, 1, 3072)
    assert sorted(cert.addresses) == [
        "rita.work@example.com",
        "rita@example.net",
        "rita@example.org",
    ]
    assert len(cert.subkeys) == 2
    assert all(len(s.fingerprint) == 40 and s.key_id == s.fingerprint[-16:] for s in cert.subkeys)


def test_v6_key_ids_are_fingerprint_prefixes() -> None:
    cert = one("v6_ed25519.asc")
    assert cert.version == 6
    assert len(cert.fingerprint) == 64
    assert cert.key_id == cert.fingerprint[:16]


def test_published_view_holds_only_chosen_user_ids(gnupghome: Path) -> None:
    cert = one("rsa_multi_uid.asc")
    assert Tag.USER_ID not in tags(cert.published([]))
    only = cert.published(["rita@example.net"])
    user_ids = [p.body for p in parse_packets(only, max_packets=100) if p.tag == Tag.USER_ID]
    assert user_ids == [b"R. Rsa <rita@example.net>"]
    listed = show_keys(gnupghome, only)[0]
    assert listed.user_ids == ["R. Rsa <rita@example.net>"]
    assert len(listed.subkeys) == 2


def test_photo_is_stripped() -> None:
    assert Tag.USER_ATTRIBUTE in tags(dearmor(read_data("with_photo.asc")))
    cert = one("with_photo.asc")
    assert Tag.USER_ATTRIBUTE not in tags(cert.data)
    assert [u.address for u in cert.user_ids] == ["pia@example.org"]


def test_third_party_certification_is_stripped() -> None:
    original = dearmor(read_data("with_certification.asc"))
    cert = one("with_certification.asc")
    assert tags(original).count(Tag.SIGNATURE) == tags(cert.data).count(Tag.SIGNATURE) + 1
    certifier = openpgp.read_upload(read_data("certifier.asc")).certificates[0]
    assert certifier.key_id.encode() not in cert.data.hex().upper().encode()


@pytest.mark.parametrize("name", ["foreign_subkey.asc", "garbage_sig.asc"])
def test_tampering_adds_nothing(name: str) -> None:
    assert one(name).data == one("ed25519.asc").data


def test_damaged_subkey_is_dropped_with_its_binding() -> None:
    clean = one("ed25519.asc")
    cert = one("damaged_subkey.asc")
    assert len(cert.subkeys) == len(clean.subkeys) - 1
    assert {s.fingerprint for s in cert.subkeys} < {s.fingerprint for s in clean.subkeys}
    assert [u.raw for u in cert.user_ids] == [u.raw for u in clean.user_ids]


def test_secret_keys_are_refused() -> None:
    for name in ("rsa_multi_uid.sec.asc", "ed25519.sec.asc", "v6_ed25519.sec.asc"):
        with pytest.raises(openpgp.SecretKeyError):
            openpgp.read_upload(read_data(name))
    # Binary secret key packets too, not only the armor header.
    binary = dearmor(read_data("ed25519.sec.asc").replace(b"PRIVATE KEY", b"PUBLIC KEY"))
    with pytest.raises(openpgp.SecretKeyError):
        openpgp.read_upload(binary)


def test_sha1_only_key_is_refused_with_instructions() -> None:
    with pytest.raises(openpgp.WeakSelfSignatures, match="quick-set-expire"):
        openpgp.read_upload(read_data("sha1_only.asc"))


def test_brainpool_is_refused_by_name() -> None:
    with pytest.raises(openpgp.UnsupportedKey, match="brainpoolP256r1"):
        openpgp.read_upload(read_data("brainpool.asc"))


def test_rsa_over_4096_bits_is_refused_by_name() -> None:
    """The engine cannot verify RSA over 4096 bits: say so, not "a weak hash"."""
    key = keyforge.rsa_key(8192)
    with pytest.raises(openpgp.UnsupportedKey, match="larger than 4096 bits"):
        openpgp.read_upload(keyforge.certificate(key, [b"Big <big@example.org>"]))


def test_expired_key_is_accepted_with_its_expiry() -> None:
    cert = one("expired.asc")
    assert cert.expires is not None
    assert cert.expires.year == 2020
    assert [u.valid for u in cert.user_ids] == [True]


def test_revoked_user_id_is_marked() -> None:
    by_address = one("uid_revoked.asc").addresses
    assert by_address["una@example.org"].valid
    assert by_address["una.old@example.org"].revoked
    assert not by_address["una.old@example.org"].valid


def test_keyrings_and_several_blocks() -> None:
    for name in ("keyring.asc", "two_keys.asc"):
        parsed = openpgp.read_upload(read_data(name))
        assert sorted(c.fingerprint for c in parsed.certificates) == sorted(MANIFEST[name])
    with pytest.raises(openpgp.TooManyKeys):
        openpgp.read_upload(read_data("two_keys.asc"), max_keys=1)


def test_merge_takes_newer_material_and_ignores_older() -> None:
    old, new = one("ed25519.asc"), one("ed25519_newer.asc")
    merged = openpgp.merge(old, new)
    assert merged.expires == new.expires
    assert {s.fingerprint for s in merged.subkeys} == {s.fingerprint for s in new.subkeys}
    assert openpgp.merge(merged, old).data == merged.data
    # gpg's newer export dropped the superseded self-signatures; the old copy has them.
    assert set(bodies(old.data)) - set(bodies(new.data))
    assert openpgp.merge(new, old).data == new.data


def test_revocation_merges_and_revokes() -> None:
    merged = openpgp.merge(one("ed25519.asc"), one("ed25519_revoked.asc"))
    assert merged.revoked


def test_loose_revocation_attaches_only_to_its_key() -> None:
    parsed = openpgp.read_upload(read_data("ed25519_revocation_only.asc"))
    assert parsed.certificates == []
    assert len(parsed.loose_signatures) == 1
    assert openpgp.attach_signatures(one("ed25519.asc"), parsed.loose_signatures).revoked
    other = one("with_photo.asc")
    assert openpgp.attach_signatures(other, parsed.loose_signatures).data == other.data


def test_load_round_trips_stored_bytes() -> None:
    cert = one("rsa_multi_uid.asc")
    again = openpgp.load(cert.data)
    assert again.data == cert.data
    assert again.user_ids == cert.user_ids


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", openpgp.MalformedKey),
        (b"\x00\x01\x02", openpgp.MalformedKey),
        (b"\xc6\x05abc", openpgp.MalformedKey),  # cut off
        (b"\xc8\x03abc", openpgp.MalformedKey),  # compressed data packet
        (b"\xcb\x03abc", openpgp.MalformedKey),  # literal data packet
        (b"\xcd\x03abc", openpgp.NotAPublicKey),  # a user ID without a key
    ],
)
def test_malformed_binary_input(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        openpgp.read_upload(data)


def test_compressed_encrypted_and_literal_packets_inside_a_key_are_refused() -> None:
    clean = parse_packets(dearmor(read_data("ed25519.asc")), max_packets=100)
    for tag in (8, 18, 11, 1):  # compressed, encrypted (SEIPD), literal, PKESK
        smuggled = serialize([clean[0], Packet(tag, b"\x00" * 8), *clean[1:]])
        with pytest.raises(openpgp.MalformedKey, match="not a key"):
            openpgp.read_upload(smuggled)
