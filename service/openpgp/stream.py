"""Keyrings of any size, read one certificate at a time (for bulk import).

Accepts what operators have lying around: binary keyrings (`gpg --export`, pubring.gpg with
its trust packets), SKS and Hockeypuck keydump files (concatenated binary certificates), and
armored files holding one or several PUBLIC KEY BLOCKs, each of which may carry many keys.
Memory stays bounded by the largest accepted key, whatever the size of the file: bytes are
read as they are needed and a key above the limit is skipped without being kept.

Only the framing is looked at here; each piece is parsed and verified by ``read_upload``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from service.openpgp.packets import PublicKey, Tag

DEFAULT_MAX_KEY_BYTES = 16 * 1024 * 1024
_SKIP = 1 << 16
_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*$")
_END = re.compile(rb"^-----END PGP ")
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")


@dataclass(frozen=True, slots=True)
class RawKey:
    """One certificate's packets as found in the file, or why they cannot be read."""

    number: int  # 1 for the first key of the file, counting the refused ones too
    offset: int  # byte offset of the key in the (decoded) OpenPGP data
    data: bytes  # the packets of the key; empty when ``error`` is set
    error: str | None = None
    fingerprint: str | None = None  # known here only when the key is refused unread


class _Damaged(Exception):
    """The framing is broken: nothing after this point can be trusted to line up."""


class _Armored:
    """A ``read(n)`` view of the binary contents of the armor blocks of a text stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._lines = iter(stream)
        self._buffer = bytearray()
        self._pending = b""  # base64 characters not yet a multiple of four
        self._inside = False
        self._headers = False
        self.refused_private_blocks = 0

    def _next_block(self) -> bool:
        for line in self._lines:
            begin = _BEGIN.match(line.strip())
            if begin is None:
                continue
            kind = begin.group(1)
            if b"PRIVATE KEY" in kind or b"SECRET KEY" in kind:
                # Never decoded, never kept: skip to the end of the block.
                self.refused_private_blocks += 1
                for inner in self._lines:
                    if _END.match(inner.strip()):
                        break
                continue
            self._inside = True
            self._headers = True
            return True
        return False

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted:
            if not self._inside and not self._next_block():
                return
            line = next(self._lines, None)
            if line is None:
                raise _Damaged("The armored text has no END line; it looks cut off.")
            line = line.strip()
            if self._headers:
                if _HEADER.match(line):
                    continue
                self._headers = False
                if not line:
                    continue
            if _END.match(line):
                if self._pending:
                    raise _Damaged("The armored text is damaged: its base64 is cut short.")
                self._inside = False
                continue
            if not line or (line.startswith(b"=") and len(line) == 5):
                continue  # the checksum: every byte we keep is covered by a signature
            text = self._pending + line
            usable = len(text) - len(text) % 4
            self._pending = text[usable:]
            try:
                self._buffer += base64.b64decode(text[:usable], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _Damaged("The armored text is damaged: its base64 does not decode.") from exc

    def read(self, size: int) -> bytes:
        self._fill(size)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


def is_armored(head: bytes) -> bool:
    return b"-----BEGIN PGP " in head


def iter_keys(stream: BinaryIO, *, max_key_bytes: int = DEFAULT_MAX_KEY_BYTES) -> Iterator[RawKey]:
    """Every certificate in ``stream`` (armored or binary), in file order.

    A key over ``max_key_bytes`` or a secret key comes out with ``error`` set and no data. When
    the framing breaks, one last RawKey says so and nothing more is read.
    """
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError("iter_keys needs a buffered stream (open the file in 'rb' mode)")
    reader: BinaryIO | _Armored = _Armored(stream) if is_armored(peek(65536)) else stream
    yield from _split(reader, max_key_bytes)
    if isinstance(reader, _Armored) and reader.refused_private_blocks:
        yield RawKey(
            0,
            0,
            b"",
            f"{reader.refused_private_blocks} PRIVATE KEY block(s) skipped: secret keys are "
            "never imported.",
        )


def _split(reader: BinaryIO | _Armored, max_key_bytes: int) -> Iterator[RawKey]:
    number = 0
    offset = 0
    start = 0
    parts: list[bytes] = []
    size = 0
    error: str | None = None
    fingerprint: str | None = None
    started = False

    def finish() -> RawKey:
        if error is not None:
            return RawKey(number, start, b"", error, fingerprint)
        return RawKey(number, start, b"".join(parts))

    while True:
        try:
            header = _read_header(reader)
        except _Damaged as exc:
            if started:
                yield finish()
            yield RawKey(number + 1, offset, b"", f"{exc} Nothing after byte {offset} was read.")
            return
        if header is None:
            break
        tag, head, length = header
        if tag in (Tag.PUBLIC_KEY, Tag.SECRET_KEY):
            if started:
                yield finish()
            started = True
            number += 1
            start, parts, size, error, fingerprint = offset, [], 0, None, None
            if tag == Tag.SECRET_KEY:
                error = "This is a secret key; secret keys are never imported."
        elif not started:
            if tag in (Tag.MARKER, Tag.TRUST, Tag.PADDING):
                _skip(reader, length)
                offset += len(head) + length
                continue
            started = True
            number += 1
            start, parts, size = offset, [], 0
            error = "Data before the first key (not part of any key) is skipped."
        offset += len(head) + length
        size += len(head) + length
        if error is None and size > max_key_bytes:
            error = f"This key is larger than {max_key_bytes} bytes; it is skipped."
            fingerprint = _fingerprint_of(parts)
            parts = []
        if error is not None:
            try:
                _skip(reader, length)
            except _Damaged as exc:
                yield finish()
                yield RawKey(number + 1, offset, b"", f"{exc} Nothing after it was read.")
                return
            continue
        body = reader.read(length)
        if len(body) != length:
            yield RawKey(number, start, b"", "The file ends inside this key; it looks cut off.")
            return
        parts.append(head)
        parts.append(body)
    if started:
        yield finish()


def _fingerprint_of(parts: list[bytes]) -> str | None:
    return _key_fingerprint(parts[1]) if len(parts) >= 2 else None


def _key_fingerprint(body: bytes) -> str | None:
    try:
        return PublicKey.parse(body).fingerprint
    except Exception:  # noqa: BLE001 - only a label for a report about a refused key
        return None


def primary_fingerprint(data: bytes) -> str | None:
    """The fingerprint of the key packet ``data`` starts with, if it can be read.

    Only a label for reports about a refused key: nothing is verified.
    """
    reader = io.BytesIO(data)
    try:
        header = _read_header(reader)
    except _Damaged:
        return None
    if header is None or header[0] not in (Tag.PUBLIC_KEY, Tag.SECRET_KEY):
        return None
    body = reader.read(header[2])
    return _key_fingerprint(body) if len(body) == header[2] else None


def _skip(reader: BinaryIO | _Armored, length: int) -> None:
    while length > 0:
        got = len(reader.read(min(length, _SKIP)))
        if got == 0:
            raise _Damaged("The file ends inside a key; it looks cut off.")
        length -= got


def _read_header(reader: BinaryIO | _Armored) -> tuple[int, bytes, int] | None:
    """(tag, header bytes, body length) of the next packet, or None at the end."""
    ctb_byte = reader.read(1)
    if not ctb_byte:
        return None
    ctb = ctb_byte[0]
    if not ctb & 0x80:
        raise _Damaged("A packet header is invalid: this is not OpenPGP data from here on.")
    if ctb & 0x40:
        tag = ctb & 0x3F
        first_byte = reader.read(1)
        if not first_byte:
            raise _Damaged("The file ends inside a packet header.")
        first = first_byte[0]
        if first < 192:
            return tag, ctb_byte + first_byte, first
        if first < 224:
            second = reader.read(1)
            if not second:
                raise _Damaged("The file ends inside a packet header.")
            return tag, ctb_byte + first_byte + second, ((first - 192) << 8) + second[0] + 192
        if first == 255:
            more = reader.read(4)
            if len(more) != 4:
                raise _Damaged("The file ends inside a packet header.")
            return tag, ctb_byte + first_byte + more, int.from_bytes(more, "big")
        raise _Damaged("A packet uses partial body lengths, which keys never use.")
    tag = (ctb >> 2) & 0x0F
    length_type = ctb & 0x03
    if length_type == 3:
        raise _Damaged("A packet has an indeterminate length, which keys never use.")
    width = 1 << length_type
    more = reader.read(width)
    if len(more) != width:
        raise _Damaged("The file ends inside a packet header.")
    return tag, ctb_byte + more, int.from_bytes(more, "big")
