"""Editing OpenPGP packets as an attacker would: with no secret key at all.

The unhashed subpacket area of a signature is not covered by the signature, so anyone may
rewrite it and the signature still verifies. These helpers take a served key apart, rewrite
the unhashed area of one of its signatures, frame the packets again (in any of the legal
packet header forms) and armor the result, or build lone signatures to upload on their own.
They also read what GnuPG concluded about a key's revocations from its colon listing.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.openpgp.armor import dearmor, looks_armored
from service.openpgp.packets import (
    Packet,
    Signature,
    Subpacket,
    Tag,
    parse_packets,
)
from tests.gpgutil import gpg

SUB_NOTATION = 20
SUB_ISSUER_KEY_ID = 16
SUB_ISSUER_FINGERPRINT = 33
# Not assigned by RFC 9580 or LibrePGP: an implementation that meets it marked critical must
# treat the signature as invalid.
UNKNOWN_SUBPACKET = 42

KEY_REVOCATION = 0x20
SUBKEY_REVOCATION = 0x28
CERT_REVOCATION = 0x30
SUBKEY_BINDING = 0x18
DIRECT_KEY = 0x1F


# -- packets -------------------------------------------------------------------------------


def packets_of(data: bytes | str) -> list[Packet]:
    """The packets of armored or binary OpenPGP data."""
    raw = data.encode() if isinstance(data, str) else data
    if looks_armored(raw):
        raw = dearmor(raw)
    return parse_packets(raw, max_packets=100_000)


FRAMES = ("new", "new5", "old", "old4")


def frame(packet: Packet, style: str = "new") -> bytes:
    """``packet`` with a header of the given form (RFC 9580 section 4.2), all of them legal:
    ``new`` (shortest new-format length), ``new5`` (new format, always the five-octet
    length), ``old`` (legacy format, shortest length type) and ``old4`` (legacy, four-octet
    length)."""
    length = len(packet.body)
    if style in ("new", "new5"):
        if style == "new" and length < 192:
            encoded = bytes([length])
        elif style == "new" and length < 8384:
            encoded = bytes([((length - 192) >> 8) + 192, (length - 192) & 0xFF])
        else:
            encoded = b"\xff" + length.to_bytes(4, "big")
        return bytes([0xC0 | packet.tag]) + encoded + packet.body
    if packet.tag > 15:
        return frame(packet, "new")  # legacy headers hold tags up to 15 only
    if style == "old" and length < 256:
        return bytes([0x80 | packet.tag << 2]) + bytes([length]) + packet.body
    if style == "old" and length < 65536:
        return bytes([0x80 | packet.tag << 2 | 1]) + length.to_bytes(2, "big") + packet.body
    return bytes([0x80 | packet.tag << 2 | 2]) + length.to_bytes(4, "big") + packet.body


def reframe(packets: Sequence[Packet], style: str = "new") -> bytes:
    return b"".join(frame(p, style) for p in packets)


def armor(data: bytes, label: str = "PGP PUBLIC KEY BLOCK") -> str:
    """ASCII armor (RFC 9580 section 6) with its CRC-24 checksum."""
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode("ascii")
    return "\n".join(
        [f"-----BEGIN {label}-----", "", *lines, f"={crc}", f"-----END {label}-----", ""]
    )


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


# -- finding signatures ----------------------------------------------------------------------


def signature_type(packet: Packet) -> int | None:
    return Signature.parse(packet.body).sig_type if packet.tag == Tag.SIGNATURE else None


def find_signature(packets: Sequence[Packet], sig_type: int, *, after: int = 0) -> int:
    """Index of the first signature of ``sig_type`` at or after index ``after``."""
    for i in range(after, len(packets)):
        if signature_type(packets[i]) == sig_type:
            return i
    raise AssertionError(f"no signature of type {sig_type:#x} in the key")


def find_user_id(packets: Sequence[Packet], text: str) -> int:
    for i, packet in enumerate(packets):
        if packet.tag == Tag.USER_ID and packet.body == text.encode():
            return i
    raise AssertionError(f"no user ID {text!r} in the key")


# -- the unhashed area -------------------------------------------------------------------------


def encode_subpacket(sub: Subpacket, *, five_octet_length: bool = False) -> bytes:
    """One subpacket (RFC 9580 section 5.2.3.7), its length in the shortest form unless asked."""
    content = bytes([sub.type | (0x80 if sub.critical else 0)]) + sub.body
    length = len(content)
    if five_octet_length or length >= 16320:
        encoded = b"\xff" + length.to_bytes(4, "big")
    elif length < 192:
        encoded = bytes([length])
    else:
        encoded = bytes([((length - 192) >> 8) + 192, (length - 192) & 0xFF])
    return encoded + content


def unhashed_area(body: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a signature body into (what the signature covers, the unhashed area, the rest)."""
    sig = Signature.parse(body)
    size = 4 if sig.version == 6 else 2
    start = sig.hashed_len + size
    end = start + int.from_bytes(body[sig.hashed_len : start], "big")
    return body[: sig.hashed_len], body[start:end], body[end:]


def with_unhashed_bytes(body: bytes, area: bytes) -> bytes:
    """``body`` with its unhashed area replaced by ``area`` (raw subpacket bytes)."""
    covered, _, rest = unhashed_area(body)
    size = 4 if body[0] == 6 else 2
    if len(area) >= 1 << (8 * size):
        raise ValueError("the unhashed area does not fit its length field")
    return covered + len(area).to_bytes(size, "big") + area + rest


def with_unhashed(body: bytes, subpackets: Sequence[Subpacket]) -> bytes:
    return with_unhashed_bytes(body, b"".join(encode_subpacket(s) for s in subpackets))


def unhashed_subpackets(body: bytes) -> list[Subpacket]:
    return list(Signature.parse(body).unhashed)


def add_critical_unknown(body: bytes) -> bytes:
    """The signature with an unknown subpacket, marked critical, added to its unhashed area."""
    extra = Subpacket(UNKNOWN_SUBPACKET, True, b"attack")
    return with_unhashed(body, [*unhashed_subpackets(body), extra])


def notation(name: str, value: bytes, *, critical: bool) -> Subpacket:
    """A notation data subpacket (RFC 9580 section 5.2.3.24), human-readable flag set."""
    flags = b"\x80\x00\x00\x00"
    encoded = flags + len(name).to_bytes(2, "big") + len(value).to_bytes(2, "big")
    return Subpacket(SUB_NOTATION, critical, encoded + name.encode() + value)


def add_critical_notation(body: bytes) -> bytes:
    """The signature with a critical notation (one nobody knows) in its unhashed area."""
    extra = notation("attack@keydir.example", b"hidden", critical=True)
    return with_unhashed(body, [*unhashed_subpackets(body), extra])


def remove_issuer(body: bytes) -> bytes:
    """The signature without the issuer key ID and fingerprint of its unhashed area."""
    kept = [
        s
        for s in unhashed_subpackets(body)
        if s.type not in (SUB_ISSUER_KEY_ID, SUB_ISSUER_FINGERPRINT)
    ]
    assert len(kept) < len(unhashed_subpackets(body)), "no issuer in the unhashed area"
    return with_unhashed(body, kept)


def add_padding(body: bytes, size: int, *, seed: int = 0, as_notation: bool = False) -> bytes:
    """The signature with about ``size`` bytes of non-critical junk in its unhashed area: an
    unknown subpacket (or a notation) that every implementation must ignore."""
    filler = random.Random(seed).randbytes(size)
    if as_notation:
        extra = notation(f"pad{seed}@keydir.example", filler, critical=False)
    else:
        extra = Subpacket(UNKNOWN_SUBPACKET, False, filler)
    return with_unhashed(body, [*unhashed_subpackets(body), extra])


def add_garbage_bytes(body: bytes, *, seed: int = 0) -> bytes:
    """A copy differing only in a few random non-critical unknown subpackets."""
    rng = random.Random(seed)
    extra = [Subpacket(100 + rng.randrange(10), False, rng.randbytes(rng.randrange(1, 40)))]
    return with_unhashed(body, [*unhashed_subpackets(body), *extra])


# Each way of editing a revocation that GnuPG then cannot accept, by name.
TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "critical-unknown": add_critical_unknown,
    "critical-notation": add_critical_notation,
    "issuer-removed": remove_issuer,
}


def replace_signature(packets: Sequence[Packet], index: int, body: bytes) -> list[Packet]:
    out = list(packets)
    out[index] = Packet(Tag.SIGNATURE, body)
    return out


def insert_after(packets: Sequence[Packet], index: int, body: bytes) -> list[Packet]:
    out = list(packets)
    out.insert(index + 1, Packet(Tag.SIGNATURE, body))
    return out


# -- lone signatures ---------------------------------------------------------------------------


def lone_signature(body: bytes, style: str = "new") -> bytes:
    """One signature packet on its own, as a revocation certificate is uploaded."""
    return frame(Packet(Tag.SIGNATURE, body), style)


def garbage_signature(key_id: str) -> bytes:
    """A 26-byte "signature" body that verifies nothing but names ``key_id`` as its issuer:
    v4, key revocation, EdDSA, SHA-256, an empty hashed area, one issuer subpacket in the
    unhashed area, and two one-bit MPIs."""
    body = (
        bytes([4, KEY_REVOCATION, 22, 8])
        + b"\x00\x00"
        + b"\x00\x0a"
        + b"\x09\x10"
        + bytes.fromhex(key_id)
        + b"\x00\x00"
        + b"\x00\x01\x01"
        + b"\x00\x01\x01"
    )
    assert len(body) == 26
    return body


# -- what GnuPG concluded ----------------------------------------------------------------------


@dataclass
class GpgView:
    """One key as `gpg --with-colons --list-keys` shows it: validity letters by component."""

    fingerprint: str = ""
    validity: str = ""
    subkeys: dict[str, str] = field(default_factory=dict)  # fingerprint -> validity
    user_ids: dict[str, str] = field(default_factory=dict)  # text -> validity

    @property
    def revoked(self) -> bool:
        return self.validity == "r"


def gpg_view(home: Path, fingerprint: str) -> GpgView | None:
    """What the gpg of ``home`` knows of ``fingerprint`` (None when it holds no such key)."""
    listing = gpg(home, "--fixed-list-mode", "--list-keys", fingerprint)
    if listing.returncode != 0:
        return None
    views = parse_listing(listing.stdout)
    return next((v for v in views if v.fingerprint == fingerprint), None)


def parse_listing(listing: bytes) -> list[GpgView]:
    views: list[GpgView] = []
    last, validity = "", ""
    for line in listing.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        kind = fields[0]
        if kind == "pub":
            views.append(GpgView(validity=fields[1]))
        elif kind == "fpr" and views:
            if last == "pub":
                views[-1].fingerprint = fields[9]
            elif last == "sub":
                views[-1].subkeys[fields[9]] = validity
        elif kind == "uid" and views:
            views[-1].user_ids[_unescape(fields[9])] = fields[1]
        if kind in ("pub", "sub", "uid"):
            last, validity = kind, fields[1]
    return views


def _unescape(text: str) -> str:
    """gpg escapes ':' and control characters in colon listings as \\xNN."""
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        if raw[i : i + 2] == b"\\x" and i + 4 <= len(raw):
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


# -- owners' keys, made with the real gpg ------------------------------------------------------


class Keysmith:
    """Makes owners' keys and their revocations with the real gpg, in one GnuPG home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        # gpg's clock for what it makes next (`--faked-system-time`, e.g. "20250101T000000!"),
        # so that tests order signatures in time without waiting.
        self.clock: str | None = None

    def __call__(self, *args: str, stdin: bytes | None = None) -> bytes:
        faked = ("--faked-system-time", self.clock) if self.clock else ()
        result = gpg(
            self.home,
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
            *faked,
            *args,
            stdin=stdin,
        )
        assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
        return result.stdout

    def _fingerprints(self) -> list[str]:
        views = parse_listing(self("--fixed-list-mode", "--list-keys"))
        return [v.fingerprint for v in views]

    def new_key(self, user_id: str, *more_user_ids: str, signing_subkey: bool = False) -> str:
        """An Ed25519 key with an encryption subkey (and a signing one); its fingerprint."""
        before = set(self._fingerprints())
        # --yes: a module-wide keysmith makes the same user ID once per database.
        self("--yes", "--quick-gen-key", user_id, "ed25519", "cert,sign", "never")
        (fpr,) = set(self._fingerprints()) - before
        for more in more_user_ids:
            self("--quick-add-uid", fpr, more)
        self("--quick-add-key", fpr, "cv25519", "encr", "never")
        if signing_subkey:
            self("--quick-add-key", fpr, "ed25519", "sign", "never")
        return fpr

    def export(self, fpr: str) -> bytes:
        return self("--export", "--armor", fpr)

    def view(self, fpr: str) -> GpgView:
        found = gpg_view(self.home, fpr)
        assert found is not None
        return found

    def revocation_certificate(self, fpr: str) -> bytes:
        """The revocation certificate gpg made with the key (without its safety colon)."""
        made = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_bytes()
        return made.replace(b":-----BEGIN", b"-----BEGIN")

    def revoke_key(self, fpr: str) -> None:
        self("--import", stdin=self.revocation_certificate(fpr))

    def revoke_subkey(self, fpr: str, number: int = 1) -> str:
        """Revoke the ``number``-th subkey (gpg's `key N`, `revkey`); its fingerprint."""
        script = f"key {number}\nrevkey\ny\n0\n\ny\nsave\n".encode()
        self("--command-fd", "0", "--edit-key", fpr, stdin=script)
        return list(self.view(fpr).subkeys)[number - 1]

    def revoke_user_id(self, fpr: str, user_id: str) -> None:
        self("--quick-revoke-uid", fpr, user_id)
