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


_ANGLE = re.compile(r"<([^<>]*)>")


def parse_search(text: str) -> Query:
    """An HKP `search` value: a key id, a fingerprint, or an address (bare, `<addr>`, or
    `Name <addr>`). Short key ids and free text are refused with the reason.
    """
    stripped = text.strip()
    hexish = stripped.replace(" ", "")
    if hexish.upper().startswith("0X") or (
        len(hexish) in (8, 16, 40, 64) and _HEX.match(hexish.upper())
    ):
        value = _hex(hexish)
        if len(value) in (40, 64):
            return Query("fingerprint", parse_fingerprint(value))
        return Query("key_id", parse_key_id(value))
    if "@" in stripped:
        angle = _ANGLE.findall(stripped)
        if len(angle) > 1:
            # A user ID naming two addresses is never published: GnuPG and we would read
            # different ones.
            raise BadQuery("This names more than one e-mail address; search for one.")
        return Query("address", parse_address(angle[0] if angle else stripped))
    raise BadQuery(
        "Searching by name or free text is not offered: it would let anyone list who has a "
        "key here, and names are not verified. Search by the full e-mail address, the "
        "fingerprint or the 16-digit key ID."
    )
