from __future__ import annotations

import base64

import pytest

from service.openpgp.armor import armor_public_key, crc24, dearmor
from service.openpgp.errors import InvalidArmor, SecretKeyError


def test_crc24_matches_rfc_initial_value_for_empty_input() -> None:
    assert crc24(b"") == 0xB704CE


def test_round_trip_and_trailing_newline() -> None:
    data = bytes(range(256)) * 3
    text = armor_public_key(data)
    assert text.endswith("-----END PGP PUBLIC KEY BLOCK-----\n")
    assert dearmor(text.encode()) == data


def test_crlf_headers_and_surrounding_text_are_accepted() -> None:
    data = b"\x99\x00\x01abc"
    text = armor_public_key(data).replace("-----\n\n", "-----\nComment: hello\nVersion: x\n\n", 1)
    pasted = ("Here is my key:\r\n" + text.replace("\n", "\r\n") + "thanks\r\n").encode()
    assert dearmor(pasted) == data


def test_several_blocks_are_concatenated() -> None:
    assert dearmor((armor_public_key(b"one") + armor_public_key(b"two")).encode()) == b"onetwo"


def test_missing_checksum_is_accepted() -> None:
    text = "\n".join(
        line for line in armor_public_key(b"payload").splitlines() if not line.startswith("=")
    )
    assert dearmor(text.encode()) == b"payload"


def test_wrong_checksum_is_refused() -> None:
    good = armor_public_key(b"payload")
    bad = good.replace(
        "=" + base64.b64encode(crc24(b"payload").to_bytes(3, "big")).decode(), "=AAAA"
    )
    with pytest.raises(InvalidArmor, match="checksum"):
        dearmor(bad.encode())


def test_cut_off_armor_is_refused() -> None:
    text = armor_public_key(b"x" * 200)
    with pytest.raises(InvalidArmor, match="cut off"):
        dearmor(text[: len(text) // 2].encode())


def test_private_key_block_is_refused_as_secret() -> None:
    text = armor_public_key(b"secret").replace("PUBLIC KEY", "PRIVATE KEY")
    with pytest.raises(SecretKeyError):
        dearmor(text.encode())


def test_no_block_at_all() -> None:
    with pytest.raises(InvalidArmor):
        dearmor(b"hello world")
