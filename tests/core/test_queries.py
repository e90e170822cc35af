from __future__ import annotations

import pytest

from service.core.queries import (
    BadQuery,
    Query,
    parse_address,
    parse_fingerprint,
    parse_key_id,
    parse_search,
)

V4 = "ABCDEF0123456789ABCDEF0123456789ABCDEF01"


@pytest.mark.parametrize("text", [V4, V4.lower(), "0x" + V4, "0X" + V4.lower(), " " + V4 + " "])
def test_fingerprint_forms(text: str) -> None:
    assert parse_fingerprint(text) == V4


def test_v6_fingerprint() -> None:
    assert parse_fingerprint("ab" * 32) == "AB" * 32


@pytest.mark.parametrize("text", ["", "XYZ", V4[:-1], V4 + "0", "0x", "g" * 40])
def test_bad_fingerprints(text: str) -> None:
    with pytest.raises(BadQuery, match="hexadecimal"):
        parse_fingerprint(text)


def test_long_key_id() -> None:
    assert parse_key_id("0x89abcdef01234567") == "89ABCDEF01234567"


def test_short_key_id_is_refused_with_reason() -> None:
    with pytest.raises(BadQuery, match="Short"):
        parse_key_id("0x01234567")


def test_address() -> None:
    assert parse_address("Alice@Example.org") == "alice@example.org"
    with pytest.raises(BadQuery):
        parse_address("alice")


def test_search_by_address_forms() -> None:
    for text in ("alice@example.org", "<alice@example.org>", "Alice <Alice@Example.org>"):
        assert parse_search(text) == Query("address", "alice@example.org")
    # GnuPG reads the first address of such a user ID, an older keydir the last: never one.
    with pytest.raises(BadQuery, match="more than one"):
        parse_search("Victim <victim@bank.example> <me@evil.example>")
