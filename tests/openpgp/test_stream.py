"""Reading keyrings one key at a time: every format operators have, in bounded memory."""

from __future__ import annotations

import base64
import io

from service.openpgp import read_upload
from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, Tag, serialize
from service.openpgp.stream import iter_keys, primary_fingerprint
from tests.conftest import read_data

ED25519 = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
RSA = "CD63BCDF6D92644A6856D92ED0B1DE8F99F115F2"
V6 = "5B4845DCE4A72778DE83B79559DF2FC19525372904C679731D317532046C7EFF"
DSA = "5423CF80F49E765A2E1AC9EEEDD4FF777333222C"


def binary(name: str) -> bytes:
    return dearmor(read_data(name))


def fingerprints(data: bytes, **kwargs: int) -> list[str | None]:
    out: list[str | None] = []
    for key in iter_keys(io.BufferedReader(io.BytesIO(data)), **kwargs):
        if key.error is None:
            out.append(read_upload(key.data, max_keys=1).certificates[0].fingerprint)
        else:
            out.append(f"error: {key.error}")
    return out


def test_binary_keyring_is_split_into_its_keys() -> None:
    data = binary("ed25519.asc") + binary("rsa_multi_uid.asc") + binary("v6_ed25519.asc")
    assert fingerprints(data) == [ED25519, RSA, V6]


def test_offsets_and_numbers_point_at_each_key() -> None:
    first, second = binary("ed25519.asc"), binary("dsa_elg.asc")
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(first + second))))
    assert [(k.number, k.offset) for k in keys] == [(1, 0), (2, len(first))]
    assert keys[1].data == second


def test_keyring_with_trust_and_marker_packets_as_gpg_keeps_them() -> None:
    trust = Packet(Tag.TRUST, b"\x00\x00").serialize()
    marker = Packet(Tag.MARKER, b"PGP").serialize()
    data = marker + binary("ed25519.asc") + trust + binary("dsa_elg.asc") + trust
    assert fingerprints(data) == [ED25519, DSA]


def test_armored_file_with_several_blocks_and_text_between() -> None:
    many = armor_public_key(binary("rsa_multi_uid.asc") + binary("dsa_elg.asc"))
    text = (
        "Our team's keys, exported 2026-01-01.\r\n\r\n"
        + read_data("ed25519.asc").decode()
        + "\nAnd the others:\n"
        + many
    ).encode()
    assert fingerprints(text) == [ED25519, RSA, DSA]


def test_a_secret_key_in_a_keyring_is_refused_alone_and_never_returned() -> None:
    lines = read_data("ed25519.sec.asc").decode().splitlines()
    body = [ln for ln in lines[2:] if ln and not ln.startswith(("=", "-----"))]
    secret = base64.b64decode("".join(body))
    data = binary("rsa_multi_uid.asc") + secret + binary("dsa_elg.asc")
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(data))))
    assert [k.error is None for k in keys] == [True, False, True]
    assert "secret key" in (keys[1].error or "")
    assert keys[1].data == b""
    assert all(secret not in k.data for k in keys)


def test_an_armored_private_key_block_is_skipped_and_reported() -> None:
    text = read_data("ed25519.sec.asc") + b"\n" + read_data("dsa_elg.asc")
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(text))))
    assert [k.error is None for k in keys] == [True, False]
    assert "PRIVATE KEY" in (keys[1].error or "")
    assert read_upload(keys[0].data).certificates[0].fingerprint == DSA


def test_a_key_over_the_size_limit_is_skipped_with_its_fingerprint() -> None:
    big = binary("rsa_multi_uid.asc")
    small = binary("ed25519.asc")
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(small + big + small)), max_key_bytes=1500))
    assert len(big) > 1500 > len(small)
    assert [k.error is None for k in keys] == [True, False, True]
    assert keys[1].fingerprint == RSA
    assert "larger than 1500 bytes" in (keys[1].error or "")


def test_a_cut_off_file_keeps_what_came_before() -> None:
    data = binary("ed25519.asc") + binary("dsa_elg.asc")[:-10]
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(data))))
    assert keys[0].error is None
    assert "cut off" in (keys[-1].error or "")


def test_garbage_in_the_middle_stops_reading_with_a_reason() -> None:
    data = binary("ed25519.asc") + b"this is not OpenPGP" + binary("dsa_elg.asc")
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(data))))
    assert keys[0].error is None
    assert read_upload(keys[0].data).certificates[0].fingerprint == ED25519
    assert "not OpenPGP" in (keys[-1].error or "")
    assert str(len(binary("ed25519.asc"))) in (keys[-1].error or "")


def test_data_before_the_first_key_is_reported() -> None:
    signature = Packet(Tag.SIGNATURE, b"\x04\x00").serialize()
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(signature + binary("ed25519.asc")))))
    assert [k.error is None for k in keys] == [False, True]


def test_damaged_armor_is_reported_not_raised() -> None:
    text = read_data("ed25519.asc").replace(b"\n", b"\n!!", 3)
    keys = list(iter_keys(io.BufferedReader(io.BytesIO(text))))
    assert keys and keys[-1].error is not None


class CountingReader(io.RawIOBase):
    """A large stream that counts how much of it has been read."""

    def __init__(self, unit: bytes, copies: int) -> None:
        self.unit, self.remaining, self.delivered = unit, copies, 0
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.buffer and self.remaining:
            self.buffer, self.remaining = self.unit, self.remaining - 1
        n = min(len(target), len(self.buffer))
        target[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        self.delivered += n
        return n


def test_reading_is_streamed_not_slurped() -> None:
    unit = binary("rsa_multi_uid.asc")
    raw = CountingReader(unit, 10_000)  # about 20 MB
    keys = iter_keys(io.BufferedReader(raw))
    for _ in range(3):
        assert next(keys).error is None
    assert raw.delivered < 64 * 1024 + 4 * len(unit)


def test_primary_fingerprint_is_a_label_never_an_error() -> None:
    assert primary_fingerprint(binary("ed25519.asc")) == ED25519
    assert primary_fingerprint(b"") is None
    assert primary_fingerprint(b"\xff\xff\xff") is None
    assert primary_fingerprint(serialize([Packet(Tag.USER_ID, b"x")])) is None
