"""E-mail addresses in user IDs: finding them and putting them in one normal form.

The normal form is what every lookup compares: the local part lower-cased (as every major
keyserver and WKD client does, although RFC 5321 leaves local parts case-sensitive) and the
domain in its ASCII form under IDNA 2008 (UTS #46, non-transitional), so that
`Jörg@Bücher.example` and `jörg@xn--bcher-kva.example` are the same address, while
`straße.de` and `strasse.de` stay two domains, as they are in DNS and in browsers.

Only addresses we can mail are accepted: a dot-atom local part that Python's `email`
header parser and smtplib read back as exactly the same mailbox (so no encoded word such as
`=?utf-8?q?a=0ab?=`, which the parser decodes into other characters, no quotes, no line
breaks, no invisible or formatting characters), and a domain whose IDNA mapping changes
nothing but letter case (full-width letters, ZWJ/ZWNJ out of context and the like are refused
rather than folded into someone else's domain).
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import string
import unicodedata
from email.headerregistry import Address

import idna

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 section 3.2.3 atext (the ASCII half; non-ASCII letters follow RFC 6531).
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
# Unicode letters, marks and digits: no spaces, separators, symbols or format characters
# (zero-width joiners, bidi overrides, soft hyphens) that look like nothing on screen.
_UNICODE_LOCAL = ("L", "M", "N")
_HEADERS = email.policy.default.header_factory
MAX_ADDRESS_LENGTH = 254


class InvalidAddress(ValueError):
    """Not an e-mail address we can verify or look up."""


def normalize_address(text: str) -> str:
    """Return the normal form of an address, or raise InvalidAddress.

    Surrounding white space and one trailing dot of the domain are forgiven (this reads
    what people type into a search); the address itself must pass every rule above.
    """
    text = unicodedata.normalize("NFC", text.strip())
    if any(unicodedata.category(c) == "Cs" for c in text):
        raise InvalidAddress("An e-mail address is text, not broken UTF-8.")
    if text.count("@") != 1:
        raise InvalidAddress("An e-mail address has exactly one @.")
    local, domain = text.split("@")
    local = _local_part(local)
    ascii_domain = _ascii_domain(domain.removesuffix("."))
    address = f"{local}@{ascii_domain}"
    if len(address.encode()) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress("The address is too long.")
    if not _mailable(address, local, ascii_domain):
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    return address


def address_of_user_id(user_id: str) -> str | None:
    """The normalised address a user ID names, or None if it names none.

    Only two forms name an address: the bare address (`alice@example.org`) and a name
    followed by one address in angle brackets that end the user ID
    (`Alice <alice@example.org>`). Anything else names none, so that every client agrees
    on which mailbox a user ID belongs to: GnuPG takes the part between the first `<` and
    the first `>` after it (`mailbox_from_userid`, common/mbox-util.c) and finds keys by
    substring, Sequoia's conventional parser takes the last bracketed address and allows
    `@` in names. So `Victim <victim@bank.example> <me@evil.example>` and
    `victim@bank.example <me@evil.example>` (two readings: we would confirm one address
    and clients would file the key under the other) name no address at all; so do user IDs
    with control characters (GnuPG stops reading at a NUL) and addresses with white space
    or a trailing dot around them (GnuPG refuses those).
    """
    if user_id.count("@") != 1:
        return None
    if any(unicodedata.category(c) == "Cc" for c in user_id):
        return None
    if "<" in user_id or ">" in user_id:
        if user_id.count("<") != 1 or user_id.count(">") != 1 or not user_id.endswith(">"):
            return None
        candidate = user_id[:-1].partition("<")[2]
    else:
        candidate = user_id
    if candidate != candidate.strip() or candidate.endswith("."):
        return None
    try:
        return normalize_address(candidate)
    except InvalidAddress:
        return None


def _local_part(local: str) -> str:
    local = unicodedata.normalize("NFC", local.lower())
    if not local or len(local.encode()) > 64:
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    # An RFC 2047 encoded word: Python's header parser decodes it (into a line break, say)
    # and the mail would go to another mailbox or not be built at all.
    if "=?" in local:
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    for char in local:
        if char == "." or char in _ATEXT:
            continue
        if char.isascii() or unicodedata.category(char)[0] not in _UNICODE_LOCAL:
            raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    if unicodedata.category(local[0]).startswith("M"):
        raise InvalidAddress("The part before the @ is not a valid mailbox name.")
    return local


def _ascii_domain(domain: str) -> str:
    """The domain's ASCII form under UTS #46 non-transitional processing and IDNA 2008."""
    invalid = InvalidAddress("The domain is not a valid domain name.")
    lowered = domain.lower()
    try:
        mapped = idna.uts46_remap(domain, std3_rules=True, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise invalid from exc
    if mapped != lowered:
        # Full-width letters, ligatures, ideographic dots…: another spelling that the
        # mapping would turn into a different name. Refused, never folded.
        raise invalid
    labels = [_ascii_label(label) for label in lowered.split(".")]
    # One label is a host on the local network; an all-digit last label is an IPv4 address
    # written without the brackets of an address literal (RFC 3696 section 2).
    if len(labels) < 2 or labels[-1].isdigit():
        raise invalid
    return ".".join(labels)


def _ascii_label(label: str) -> str:
    try:
        if not label.isascii():
            label = idna.encode(label).decode("ascii")  # IDNA 2008: CONTEXTJ, bidi rules
        elif label.startswith("xn--"):
            # An A-label must be the one IDNA 2008 makes of its U-label, or it hides a name.
            canonical = idna.encode(idna.decode(label)).decode("ascii")
            label = label if canonical == label else ""
    except (idna.IDNAError, UnicodeError):
        label = ""
    if not _LABEL.match(label):
        raise InvalidAddress("The domain is not a valid domain name.")
    return label


def _mailable(address: str, local: str, domain: str) -> bool:
    """Do the header parser and smtplib read ``address`` back as this very mailbox?"""
    try:
        header = _HEADERS("To", address)
        parsed = header.addresses
        built = str(Address(username=local, domain=domain))
    except (ValueError, TypeError, IndexError):
        return False
    return (
        len(parsed) == 1
        and (parsed[0].display_name, parsed[0].username, parsed[0].domain) == ("", local, domain)
        and built == address
        and email.utils.parseaddr(address) == ("", address)
    )
