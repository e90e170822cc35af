"""E-mail addresses in user IDs: finding them and putting them in one normal form.

The normal form is what every lookup compares: the local part lower-cased (as every major
keyserver and WKD client does, although RFC 5321 leaves local parts case-sensitive) and the
domain lower-cased in its ASCII (IDNA) form, so that `Jörg@Bücher.example` and
`jörg@xn--bcher-kva.example` are the same address.
"""

from __future__ import annotations

import re
import unicodedata

_ANGLE = re.compile(r"<([^<>]*)>")
_LOCAL_FORBIDDEN = re.compile(r"[\s<>()\[\]\\,;:\"\x00-\x1f\x7f]")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_ADDRESS_LENGTH = 254


class InvalidAddress(ValueError):
    """Not an e-mail address we can verify or look up."""


def normalize_address(text: str) -> str:
    """Return the normal form of an address, or raise InvalidAddress."""
    text = unicodedata.normalize("NFC", text.strip())
    if text.count("@") != 1:
        raise InvalidAddress("An e-mail address has exactly one @.")
    local, domain = text.split("@")
    if not local or len(local.encode()) > 64 or _LOCAL_FORBIDDEN.search(local):
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    domain = domain.rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError as exc:
        raise InvalidAddress("The domain is not a valid domain name.") from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress("The domain is not a valid domain name.")
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress("The address is too long.")
    return address


def address_of_user_id(user_id: str) -> str | None:
    """The normalised address a user ID names, or None if it names none.

    `Name <addr>` (the last angle-bracketed part counts) or a bare address, as GnuPG and
    Sequoia write them.
    """
    matches = _ANGLE.findall(user_id)
    candidate = matches[-1] if matches else user_id
    try:
        return normalize_address(candidate)
    except InvalidAddress:
        return None
