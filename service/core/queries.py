"""What people and clients type to find a key, turned into one normal form.

Shared by every protocol so that VKS, HKP and the web pages accept exactly the same forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.openpgp import InvalidAddress, normalize_address

_HEX = re.compile(r"^[0-9A-F]+$")


class BadQuery(ValueError):
    """The query is malformed; ``str(exc)`` says why, for people."""


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "fingerprint", "key_id" or "address"
    value: str


def _hex(text: str) -> str:
    text = text.strip().replace(" ", "").upper()
    if text.startswith("0X"):
        text = text[2:]
    return text


def parse_fingerprint(text: str) -> str:
    value = _hex(text)
    if len(value) not in (40, 64) or not _HEX.match(value):
        raise BadQuery(
            "A fingerprint is 40 (version 4 key) or 64 (version 6 key) hexadecimal digits."
        )
    return value


def parse_key_id(text: str) -> str:
    value = _hex(text)
    if len(value) == 8 and _HEX.match(value):
        raise BadQuery(
            "Short (8-digit) key IDs are not accepted: anyone can make a key with the same "
            "short ID. Use the 16-digit long key ID or, better, the full fingerprint."
        )
    if len(value) != 16 or not _HEX.match(value):
        raise BadQuery("A key ID is 16 hexadecimal digits.")
    return value


def parse_address(text: str) -> str:
    try:
        return normalize_address(text)
    except InvalidAddress as exc:
        raise BadQuery(f"This is not a valid e-mail address: {exc}") from exc
