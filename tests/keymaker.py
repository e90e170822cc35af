"""Keys and signatures made packet by packet, for tests that need exact control.

GnuPG and Sequoia only make well-formed keys; the attacks and edge cases in the tests
(two key-flags subpackets, a flag the algorithm cannot serve, many self-signatures, edited
unhashed areas) need signatures we write ourselves. Keys are v4 legacy EdDSA (algorithm 22,
Ed25519) so that GnuPG 2.2 reads them too.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519

from service.openpgp.armor import armor_public_key
from service.openpgp.packets import (
    SUB_CREATION_TIME,
    SUB_EMBEDDED_SIGNATURE,
    SUB_ISSUER_FINGERPRINT,
    SUB_ISSUER_KEY_ID,
    SUB_KEY_FLAGS,
    SUB_REVOCATION_REASON,
    Packet,
    PublicKey,
    Signature,
    Tag,
    parse_packets,
    serialize,
    user_id_hash_prefix,
)

ED25519_OID = bytes.fromhex("092b06010401da470f01")
SHA256 = 8


def mpi(raw: bytes) -> bytes:
    raw = raw.lstrip(b"\0")
    bits = (len(raw) - 1) * 8 + raw[0].bit_length() if raw else 0
    return bits.to_bytes(2, "big") + raw


def subpacket(kind: int, body: bytes, *, critical: bool = False) -> bytes:
    length = len(body) + 1
    if length < 192:
        header = bytes([length])
    elif length < 16320:
        header = bytes([((length - 192) >> 8) + 192, (length - 192) & 0xFF])
    else:
        header = b"\xff" + length.to_bytes(4, "big")
    return header + bytes([kind | (0x80 if critical else 0)]) + body


@dataclass
class Key:
    """An Ed25519 (legacy EdDSA) key packet and its secret, able to sign."""

    created: int = field(default_factory=lambda: int(time.time()) - 86400)
    secret: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    @property
    def body(self) -> bytes:
        point = b"\x40" + self.secret.public_key().public_bytes_raw()
        return bytes([4]) + self.created.to_bytes(4, "big") + bytes([22]) + ED25519_OID + mpi(point)

    @property
    def public(self) -> PublicKey:
        return PublicKey.parse(self.body)

    def sign(
        self,
        sig_type: int,
        *parts: bytes,
        hashed: list[bytes] | None = None,
        unhashed: bytes | None = None,
        created: int | None = None,
    ) -> bytes:
        """A v4 signature over ``parts``; by default with creation time and issuer."""
        subs = [
            subpacket(SUB_CREATION_TIME, (created or self.created + 1).to_bytes(4, "big")),
            subpacket(SUB_ISSUER_FINGERPRINT, b"\x04" + bytes.fromhex(self.public.fingerprint)),
            *(hashed or []),
        ]
        area = b"".join(subs)
        head = bytes([4, sig_type, 22, SHA256]) + len(area).to_bytes(2, "big") + area
        digest = hashlib.sha256(
            b"".join(parts) + head + b"\x04\xff" + len(head).to_bytes(4, "big")
        ).digest()
        native = self.secret.sign(digest)
        if unhashed is None:
            unhashed = subpacket(SUB_ISSUER_KEY_ID, bytes.fromhex(self.public.key_id))
        return (
            head
            + len(unhashed).to_bytes(2, "big")
            + unhashed
            + digest[:2]
            + mpi(native[:32])
            + mpi(native[32:])
        )


def flags(value: int) -> bytes:
    return subpacket(SUB_KEY_FLAGS, bytes([value]))


def reason(code: int, text: bytes = b"") -> bytes:
    return subpacket(SUB_REVOCATION_REASON, bytes([code]) + text)


@dataclass
class Cert:
    """A certificate under construction: packets in order."""

    primary: Key = field(default_factory=Key)
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.packets:
            self.packets = [Packet(Tag.PUBLIC_KEY, self.primary.body)]

    @property
    def fingerprint(self) -> str:
        return self.primary.public.fingerprint

    def user_id(self, text: str, *, created: int | None = None) -> bytes:
        """A user ID packet and its self-certification, appended (again, for one more
        certification of a user ID the key has)."""
        raw = text.encode()
        sig = self.primary.sign(
            0x13,
            self.primary.public.hash_prefix,
            user_id_hash_prefix(raw),
            hashed=[flags(0x03)],
            created=created,
        )
        self.packets += [Packet(Tag.USER_ID, raw), Packet(Tag.SIGNATURE, sig)]
        return sig

    def subkey(
        self,
        key: Key,
        hashed: list[bytes],
        *,
        backsig: bool,
        tag: int = Tag.PUBLIC_SUBKEY,
    ) -> bytes:
        prefix = self.primary.public.hash_prefix
        sub_prefix = key.public.hash_prefix
        unhashed = subpacket(SUB_ISSUER_KEY_ID, bytes.fromhex(self.primary.public.key_id))
        if backsig:
            back = key.sign(0x19, prefix, sub_prefix)
            unhashed += subpacket(SUB_EMBEDDED_SIGNATURE, back)
        sig = self.primary.sign(0x18, prefix, sub_prefix, hashed=hashed, unhashed=unhashed)
        self.packets += [Packet(tag, key.body), Packet(Tag.SIGNATURE, sig)]
        return sig

    def revoke_key(self, code: int = 0) -> bytes:
        sig = self.primary.sign(0x20, self.primary.public.hash_prefix, hashed=[reason(code)])
        self.packets.insert(1, Packet(Tag.SIGNATURE, sig))
        return sig

    def data(self) -> bytes:
        return serialize(self.packets)

    def armored(self) -> bytes:
        return armor_public_key(self.data()).encode()


def signatures(data: bytes) -> list[Signature]:
    return [Signature.parse(p.body) for p in parse_packets(data, max_packets=100_000) if p.tag == 2]


def with_unhashed(sig: bytes, unhashed: bytes) -> bytes:
    """The same signature with its unhashed area replaced (what anyone can do)."""
    parsed = Signature.parse(sig)
    return (
        sig[: parsed.hashed_len]
        + len(unhashed).to_bytes(2, "big")
        + unhashed
        + sig[parsed.tail_start :]
    )
