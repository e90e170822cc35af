"""Web Key Directory names (draft-koch-openpgp-webkey-service, section 3.1)."""

from __future__ import annotations

import hashlib
import re

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ANGLE = re.compile(r"<([^<>]*)>")
HASH_PATTERN = re.compile(r"^[ybndrfg8ejkmcpqxot1uwisza345h769]{32}$")


def zbase32(data: bytes) -> str:
    """z-base-32 of ``data`` (RFC 6189 section 5.1.6), as WKD uses it for 20-byte hashes."""
    bits = len(data) * 8
    value = int.from_bytes(data, "big")
    pad = -bits % 5
    value <<= pad
    bits += pad
    return "".join(ZBASE32[(value >> (bits - 5 * (i + 1))) & 31] for i in range(bits // 5))


def _hash(local_part: str) -> str:
    digest = hashlib.sha1(local_part.encode("utf-8"), usedforsecurity=False).digest()
    return zbase32(digest)


def local_part_hash(local_part: str) -> str:
    """The hash as the draft defines it: only ASCII letters are lower-cased (GnuPG)."""
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in local_part)
    return _hash(lowered)


def hashes_for(user_id: str, address: str) -> tuple[str, str | None]:
    """(hash per the draft, other hash or None) for the address named in ``user_id``.

    The draft lower-cases only ASCII letters; most clients other than GnuPG lower-case every
    letter (`JÖRG` -> `jörg`). Both are indexed so that both find the key. ``address`` is
    the normalised address, whose local part is fully lower-cased.
    """
    matches = _ANGLE.findall(user_id)
    raw = (matches[-1] if matches else user_id).strip()
    raw_local = raw.rsplit("@", 1)[0] if "@" in raw else address.rsplit("@", 1)[0]
    draft = local_part_hash(raw_local)
    full = _hash(address.rsplit("@", 1)[0])
    return draft, (full if full != draft else None)


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1]
