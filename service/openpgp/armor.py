"""ASCII armor (RFC 9580 section 6): decode what clients send, encode what we serve.

Decoding is lenient in the ways real uploads need (CRLF line ends, trailing blanks, several
armor blocks in one upload, a missing checksum, a missing blank line after the headers) and
strict where leniency would hide corruption (a checksum that is present must match; the
base64 must decode).
"""

from __future__ import annotations

import base64
import binascii
import re

from crcmod.predefined import mkPredefinedCrcFun

from service.openpgp.errors import InvalidArmor, SecretKeyError

_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*$")
_END = re.compile(rb"^-----END PGP ([A-Z0-9 ,/]+)-----[ \t]*$")
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
# CRC-24 of RFC 9580 section 6.1 (polynomial 0x1864CFB, initial value 0xB704CE), computed in C:
# a Python loop over each byte was the largest cost of storing a key.
_crc24 = mkPredefinedCrcFun("crc-24")


def crc24(data: bytes) -> int:
    """The RFC 9580 section 6.1 checksum."""
    result: int = _crc24(data)
    return result


def looks_armored(data: bytes) -> bool:
    """True when the input contains an armor header line (after optional leading text)."""
    return b"-----BEGIN PGP " in data[:65536]


def dearmor(data: bytes) -> bytes:
    """Return the concatenated binary contents of every armor block in ``data``.

    Text outside the blocks is ignored (people paste keys with a sentence around them).
    Raises SecretKeyError for a private key block and InvalidArmor for anything malformed.
    """
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    out = bytearray()
    blocks = 0
    i = 0
    while i < len(lines):
        begin = _BEGIN.match(lines[i].strip())
        i += 1
        if begin is None:
            continue
        kind = begin.group(1)
        if b"PRIVATE KEY" in kind or b"SECRET KEY" in kind:
            raise SecretKeyError
        # Headers run until a blank line; some tools omit that line entirely.
        while i < len(lines) and _HEADER.match(lines[i]):
            i += 1
        if i < len(lines) and not lines[i].strip():
            i += 1
        body: list[bytes] = []
        checksum: bytes | None = None
        while True:
            if i >= len(lines):
                raise InvalidArmor("The armored key has no END line; it looks cut off.")
            line = lines[i].strip()
            i += 1
            end = _END.match(line)
            if end is not None:
                if end.group(1) != kind:
                    raise InvalidArmor("The armor BEGIN and END lines do not match.")
                break
            if line.startswith(b"=") and len(line) == 5:
                checksum = line[1:]
                continue
            if line:
                body.append(line)
        try:
            decoded = base64.b64decode(b"".join(body), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArmor(
                "The armored key is damaged: its base64 text does not decode."
            ) from exc
        if checksum is not None:
            try:
                expected = int.from_bytes(base64.b64decode(checksum, validate=True), "big")
            except (binascii.Error, ValueError) as exc:
                raise InvalidArmor("The armor checksum line is damaged.") from exc
            if crc24(decoded) != expected:
                raise InvalidArmor(
                    "The armored key is damaged: its checksum does not match "
                    "(was it changed or cut while copying?)."
                )
        out += decoded
        blocks += 1
    if blocks == 0:
        raise InvalidArmor("No armored OpenPGP block was found in the text.")
    return bytes(out)


def armor_public_key(data: bytes) -> str:
    """Armor binary certificate bytes as a PUBLIC KEY BLOCK, ending with a newline.

    The trailing newline matters: rpm and several HKP clients expect it.
    """
    encoded = base64.b64encode(data).decode("ascii")
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    checksum = base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii")
    return (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"
        + "\n".join(lines)
        + f"\n={checksum}\n-----END PGP PUBLIC KEY BLOCK-----\n"
    )
