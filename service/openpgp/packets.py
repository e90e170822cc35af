"""OpenPGP packet framing and the fields of key and signature packets (RFC 9580 sections 4-5).

Packet bodies are kept as the exact bytes received: everything we serve is built from them,
so no signed byte is ever re-encoded. Only the framing (the packet header, which no signature
covers) is written anew, always in the new format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

from service.openpgp import crypto
from service.openpgp.errors import MalformedKey, SecretKeyError, UnsupportedKey


class Tag(IntEnum):
    PKESK = 1
    SIGNATURE = 2
    SKESK = 3
    ONE_PASS_SIG = 4
    SECRET_KEY = 5
    PUBLIC_KEY = 6
    SECRET_SUBKEY = 7
    COMPRESSED = 8
    SED = 9
    MARKER = 10
    LITERAL = 11
    TRUST = 12
    USER_ID = 13
    PUBLIC_SUBKEY = 14
    USER_ATTRIBUTE = 17
    SEIPD = 18
    MDC = 19
    AEAD = 20
    PADDING = 21


class SigType(IntEnum):
    GENERIC_CERT = 0x10
    PERSONA_CERT = 0x11
    CASUAL_CERT = 0x12
    POSITIVE_CERT = 0x13
    SUBKEY_BINDING = 0x18
    PRIMARY_KEY_BINDING = 0x19
    DIRECT_KEY = 0x1F
    KEY_REVOCATION = 0x20
    SUBKEY_REVOCATION = 0x28
    CERT_REVOCATION = 0x30


CERTIFICATIONS = frozenset(
    {SigType.GENERIC_CERT, SigType.PERSONA_CERT, SigType.CASUAL_CERT, SigType.POSITIVE_CERT}
)

# Signature subpacket types (RFC 9580 section 5.2.3.7).
SUB_CREATION_TIME = 2
SUB_SIG_EXPIRATION = 3
SUB_EXPORTABLE = 4
SUB_KEY_EXPIRATION = 9
SUB_ISSUER_KEY_ID = 16
SUB_PRIMARY_USER_ID = 25
SUB_KEY_FLAGS = 27
SUB_REVOCATION_REASON = 29
SUB_EMBEDDED_SIGNATURE = 32
SUB_ISSUER_FINGERPRINT = 33
# Every type an implementation may meet (RFC 9580 plus LibrePGP's 34, 37, 38, 40). A critical
# subpacket of any other type makes the signature invalid (RFC 9580 section 5.2.3.7).
KNOWN_SUBPACKETS = frozenset({*range(2, 13), 16, *range(20, 36), 37, 38, 39, 40})

KEY_FLAG_CERTIFY = 0x01
KEY_FLAG_SIGN = 0x02
KEY_FLAG_ENCRYPT_COMMS = 0x04
KEY_FLAG_ENCRYPT_STORAGE = 0x08
KEY_FLAG_AUTH = 0x20

# Algorithms that can only sign: a subkey of one of these without key flags is a signing
# subkey and needs a back-signature (RFC 9580 section 5.2.1, 0x19).
SIGN_ONLY_ALGORITHMS = frozenset({3, 17, 19, 22, 27, 28, 30, 31})


@dataclass(frozen=True, slots=True)
class Packet:
    tag: int
    body: bytes

    def serialize(self) -> bytes:
        return _header(self.tag, len(self.body)) + self.body


def _header(tag: int, length: int) -> bytes:
    if length < 192:
        encoded = bytes([length])
    elif length < 8384:
        length -= 192
        encoded = bytes([(length >> 8) + 192, length & 0xFF])
    else:
        encoded = b"\xff" + length.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + encoded


def serialize(packets: list[Packet]) -> bytes:
    return b"".join(p.serialize() for p in packets)


def parse_packets(data: bytes, *, max_packets: int) -> list[Packet]:
    """Split binary OpenPGP data into packets, refusing anything that is not well framed."""
    packets: list[Packet] = []
    pos = 0
    end = len(data)
    while pos < end:
        if len(packets) >= max_packets:
            raise MalformedKey(f"The key has more than {max_packets} packets.")
        ctb = data[pos]
        pos += 1
        if not ctb & 0x80:
            raise MalformedKey("The data is not OpenPGP: a packet header is invalid.")
        if ctb & 0x40:  # new format (RFC 9580 section 4.2.1)
            tag = ctb & 0x3F
            if pos >= end:
                raise MalformedKey("The key data is cut off inside a packet header.")
            first = data[pos]
            if first < 192:
                length, pos = first, pos + 1
            elif first < 224:
                if pos + 2 > end:
                    raise MalformedKey("The key data is cut off inside a packet header.")
                length = ((first - 192) << 8) + data[pos + 1] + 192
                pos += 2
            elif first == 255:
                if pos + 5 > end:
                    raise MalformedKey("The key data is cut off inside a packet header.")
                length = int.from_bytes(data[pos + 1 : pos + 5], "big")
                pos += 5
            else:
                # Partial body lengths are only for data packets, never inside a key.
                _refuse_tag(tag)
                raise MalformedKey("The key uses partial packet lengths, which keys never use.")
        else:  # legacy format (RFC 9580 section 4.2.2)
            tag = (ctb >> 2) & 0x0F
            length_type = ctb & 0x03
            if length_type == 3:
                _refuse_tag(tag)
                raise MalformedKey("The key uses an indeterminate packet length.")
            size = 1 << length_type
            if pos + size > end:
                raise MalformedKey("The key data is cut off inside a packet header.")
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if pos + length > end:
            _refuse_tag(tag)
            raise MalformedKey("The key data is cut off: a packet is longer than the data.")
        _refuse_tag(tag)
        packets.append(Packet(tag, data[pos : pos + length]))
        pos += length
    return packets


def _refuse_tag(tag: int) -> None:
    if tag in (Tag.SECRET_KEY, Tag.SECRET_SUBKEY):
        raise SecretKeyError
    if tag in (
        Tag.PKESK,
        Tag.SKESK,
        Tag.ONE_PASS_SIG,
        Tag.COMPRESSED,
        Tag.SED,
        Tag.LITERAL,
        Tag.SEIPD,
        Tag.MDC,
        Tag.AEAD,
    ):
        raise MalformedKey(
            "This is an OpenPGP message (encrypted, compressed or literal data), not a key."
        )


@dataclass(frozen=True)
class PublicKey:
    """A primary key or subkey packet, parsed."""

    body: bytes
    version: int
    created: int
    algorithm: int
    material: bytes
    bits: int
    curve: str | None

    @classmethod
    def parse(cls, body: bytes) -> PublicKey:
        if not body:
            raise MalformedKey("A key packet is empty.")
        version = body[0]
        if version in (2, 3):
            raise UnsupportedKey(
                "This is a version 3 key (from PGP 2.x). Such keys are insecure and are not "
                "accepted; please create a new key."
            )
        if version not in (4, 6):
            raise UnsupportedKey(f"Version {version} keys are not supported.")
        if len(body) < 6:
            raise MalformedKey("A key packet is cut off.")
        if version == 4 and len(body) > 0xFFFF:
            # Its fingerprint hashes the packet's length in two octets (RFC 9580 5.5.4.2).
            raise MalformedKey(
                "A key packet is longer than 65,535 octets, which a version 4 key cannot be."
            )
        created = int.from_bytes(body[1:5], "big")
        algorithm = body[5]
        material = body[6:]
        if version == 6:
            if len(material) < 4:
                raise MalformedKey("A key packet is cut off.")
            size = int.from_bytes(material[:4], "big")
            material = material[4:]
            if size != len(material):
                raise MalformedKey("A key packet's length fields disagree.")
        try:
            bits, curve = crypto.key_strength(algorithm, material)
        except crypto.RefusedKeyMaterial as exc:
            raise UnsupportedKey(str(exc)) from exc
        except crypto.MalformedKeyMaterial as exc:
            raise MalformedKey("A key packet holds damaged key material.") from exc
        return cls(body, version, created, algorithm, material, bits, curve)

    @cached_property
    def hash_prefix(self) -> bytes:
        """How this key enters a signature hash (RFC 9580 section 5.2.4)."""
        if self.version == 6:
            return b"\x9b" + len(self.body).to_bytes(4, "big") + self.body
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body

    @cached_property
    def fingerprint(self) -> str:
        """Upper-case hex: SHA-1 for v4, SHA-256 for v6 (RFC 9580 section 5.5.4)."""
        if self.version == 6:
            return hashlib.sha256(self.hash_prefix).hexdigest().upper()
        return hashlib.sha1(self.hash_prefix, usedforsecurity=False).hexdigest().upper()

    @property
    def key_id(self) -> str:
        """The 64-bit key id: low 8 bytes of a v4 fingerprint, high 8 bytes of a v6 one."""
        return self.fingerprint[:16] if self.version == 6 else self.fingerprint[-16:]


@dataclass(frozen=True, slots=True)
class Subpacket:
    type: int
    critical: bool
    body: bytes


@dataclass(slots=True)
class Signature:
    """A v4 or v6 signature packet, parsed (RFC 9580 section 5.2.3)."""

    body: bytes
    version: int
    sig_type: int
    algorithm: int
    hash_algorithm: int
    hashed: list[Subpacket]
    unhashed: list[Subpacket]
    hashed_len: int  # bytes of the body that the signature covers, from its start
    tail_start: int  # where the digest prefix starts, right after the unhashed area
    digest_prefix: bytes
    salt: bytes
    material: bytes
    _issuers: tuple[frozenset[str], frozenset[str]] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> Signature:
        """Parse a signature; raise MalformedKey when it is damaged or of a version we skip."""
        if not body:
            raise MalformedKey("A signature packet is empty.")
        version = body[0]
        if version not in (4, 6):
            raise MalformedKey(f"Version {version} signatures are not used.")
        count_size = 4 if version == 6 else 2
        if len(body) < 4 + count_size:
            raise MalformedKey("A signature packet is cut off.")
        sig_type, algorithm, hash_algorithm = body[1], body[2], body[3]
        pos = 4
        hashed_size = int.from_bytes(body[pos : pos + count_size], "big")
        pos += count_size
        if pos + hashed_size > len(body):
            raise MalformedKey("A signature packet is cut off.")
        hashed = _parse_subpackets(body[pos : pos + hashed_size])
        pos += hashed_size
        hashed_len = pos
        if pos + count_size > len(body):
            raise MalformedKey("A signature packet is cut off.")
        unhashed_size = int.from_bytes(body[pos : pos + count_size], "big")
        pos += count_size
        if pos + unhashed_size > len(body):
            raise MalformedKey("A signature packet is cut off.")
        unhashed = _parse_subpackets(body[pos : pos + unhashed_size])
        pos += unhashed_size
        tail_start = pos
        if pos + 2 > len(body):
            raise MalformedKey("A signature packet is cut off.")
        digest_prefix = body[pos : pos + 2]
        pos += 2
        salt = b""
        if version == 6:
            if pos >= len(body):
                raise MalformedKey("A signature packet is cut off.")
            salt_size = body[pos]
            salt = body[pos + 1 : pos + 1 + salt_size]
            if len(salt) != salt_size:
                raise MalformedKey("A signature packet is cut off.")
            pos += 1 + salt_size
        return cls(
            body=body,
            version=version,
            sig_type=sig_type,
            algorithm=algorithm,
            hash_algorithm=hash_algorithm,
            hashed=hashed,
            unhashed=unhashed,
            hashed_len=hashed_len,
            tail_start=tail_start,
            digest_prefix=digest_prefix,
            salt=salt,
            material=body[pos:],
        )

    def _subpacket(self, kind: int, *, hashed_only: bool = True) -> bytes | None:
        for sub in self.hashed:
            if sub.type == kind:
                return sub.body
        if not hashed_only:
            for sub in self.unhashed:
                if sub.type == kind:
                    return sub.body
        return None

    @property
    def created(self) -> int:
        raw = self._subpacket(SUB_CREATION_TIME)
        return int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else 0

    @property
    def key_flags(self) -> int | None:
        raw = self._subpacket(SUB_KEY_FLAGS)
        if raw is None:
            return None
        return raw[0] if raw else 0

    @property
    def exportable(self) -> bool:
        raw = self._subpacket(SUB_EXPORTABLE)
        return raw is None or raw != b"\x00"

    @property
    def has_unknown_critical(self) -> bool:
        return any(s.critical and s.type not in KNOWN_SUBPACKETS for s in self.hashed)

    def count(self, kind: int) -> int:
        """How often a subpacket type occurs in the hashed area."""
        return sum(1 for s in self.hashed if s.type == kind)

    @property
    def revocation_reason(self) -> int | None:
        raw = self._subpacket(SUB_REVOCATION_REASON)
        return raw[0] if raw else None

    @property
    def identity(self) -> bytes:
        """What the signer signed: the packet up to the end of the hashed area.

        Two signatures with the same identity are one statement of their signer, however
        their unhashed areas or (malleable) signature values differ: we keep one of them.
        """
        return self.body[: self.hashed_len]

    def normalized(self, issuer: PublicKey, embedded: bytes | None = None) -> bytes:
        """This signature with its unhashed area rebuilt to what clients need.

        The unhashed area is not covered by the signature, so anyone can rewrite it: GnuPG
        judges a signature bad when it carries an unknown critical subpacket there, treats
        copies that differ only there as one signature, and needs an issuer to find the
        key. It keeps only the issuer of the verified signer (as key id and fingerprint,
        where the hashed area lacks them; no key id in v6 signatures, RFC 9580 section
        5.2.3.12) and ``embedded`` (a verified back-signature), the way Sequoia's
        ``Signature::normalize`` does.
        """
        subs: list[bytes] = []
        hashed_types = {s.type for s in self.hashed}
        if self.version == 4 and SUB_ISSUER_KEY_ID not in hashed_types:
            subs.append(encode_subpacket(SUB_ISSUER_KEY_ID, bytes.fromhex(issuer.key_id)))
        if SUB_ISSUER_FINGERPRINT not in hashed_types:
            subs.append(
                encode_subpacket(
                    SUB_ISSUER_FINGERPRINT,
                    bytes([issuer.version]) + bytes.fromhex(issuer.fingerprint),
                )
            )
        if embedded is not None:
            subs.append(encode_subpacket(SUB_EMBEDDED_SIGNATURE, embedded))
        area = b"".join(subs)
        count_size = 4 if self.version == 6 else 2
        return (
            self.body[: self.hashed_len]
            + len(area).to_bytes(count_size, "big")
            + area
            + self.body[self.tail_start :]
        )

    def issuers(self) -> tuple[frozenset[str], frozenset[str]]:
        """(fingerprints, key ids) this signature names as its issuer, upper-case hex.

        Read from both areas: the unhashed issuer is only a hint, and we use it only to skip
        verifying what is surely someone else's signature.
        """
        if self._issuers is None:
            fprs: set[str] = set()
            ids: set[str] = set()
            for sub in (*self.hashed, *self.unhashed):
                if sub.type == SUB_ISSUER_FINGERPRINT and len(sub.body) in (21, 33):
                    fprs.add(sub.body[1:].hex().upper())
                elif sub.type == SUB_ISSUER_KEY_ID and len(sub.body) == 8:
                    ids.add(sub.body.hex().upper())
            self._issuers = (frozenset(fprs), frozenset(ids))
        return self._issuers

    def hashed_issuers(self) -> tuple[frozenset[str], frozenset[str]]:
        """(fingerprints, key ids) named in the hashed area: the signer vouches for these."""
        fprs = frozenset(
            s.body[1:].hex().upper()
            for s in self.hashed
            if s.type == SUB_ISSUER_FINGERPRINT and len(s.body) in (21, 33)
        )
        ids = frozenset(
            s.body.hex().upper()
            for s in self.hashed
            if s.type == SUB_ISSUER_KEY_ID and len(s.body) == 8
        )
        return fprs, ids

    def embedded_signatures(self) -> list[bytes]:
        """Bodies of embedded signatures (back-signatures live here), hashed area first."""
        return [s.body for s in (*self.hashed, *self.unhashed) if s.type == SUB_EMBEDDED_SIGNATURE]

    def trailer(self) -> bytes:
        """The hashed part of the packet plus the final trailer (RFC 9580 section 5.2.4)."""
        covered = self.body[: self.hashed_len]
        return covered + bytes([self.version, 0xFF]) + len(covered).to_bytes(4, "big")


def encode_subpacket(kind: int, body: bytes) -> bytes:
    """One non-critical subpacket (RFC 9580 section 5.2.3.7)."""
    length = len(body) + 1
    if length < 192:
        header = bytes([length])
    elif length < 16320:
        length -= 192
        header = bytes([(length >> 8) + 192, length & 0xFF])
    else:
        header = b"\xff" + length.to_bytes(4, "big")
    return header + bytes([kind]) + body


def _parse_subpackets(area: bytes) -> list[Subpacket]:
    subs: list[Subpacket] = []
    pos = 0
    while pos < len(area):
        first = area[pos]
        if first < 192:
            length, pos = first, pos + 1
        elif first < 255:
            if pos + 2 > len(area):
                raise MalformedKey("A signature subpacket is cut off.")
            length = ((first - 192) << 8) + area[pos + 1] + 192
            pos += 2
        else:
            if pos + 5 > len(area):
                raise MalformedKey("A signature subpacket is cut off.")
            length = int.from_bytes(area[pos + 1 : pos + 5], "big")
            pos += 5
        if length == 0 or pos + length > len(area):
            raise MalformedKey("A signature subpacket is cut off.")
        kind = area[pos]
        subs.append(Subpacket(kind & 0x7F, bool(kind & 0x80), area[pos + 1 : pos + length]))
        pos += length
    return subs


def user_id_hash_prefix(body: bytes) -> bytes:
    """How a user ID enters a certification hash (RFC 9580 section 5.2.4)."""
    return b"\xb4" + len(body).to_bytes(4, "big") + body


def verify_over(signer: PublicKey, sig: Signature, *parts: bytes) -> bool:
    """True iff ``sig`` by ``signer`` verifies over the concatenation of ``parts``."""
    if sig.algorithm != signer.algorithm:
        return False
    # A v6 key makes v6 signatures and a v4 key v4 ones (RFC 9580 section 5.2.3).
    if sig.version != signer.version:
        return False
    if sig.has_unknown_critical:
        return False
    try:
        digest_state = crypto.hash_for(sig.hash_algorithm)
        if sig.version == 6 and len(sig.salt) != crypto.v6_salt_size(sig.hash_algorithm):
            return False
    except crypto.UnsupportedAlgorithm:
        return False
    if sig.version == 6:
        digest_state.update(sig.salt)
    for part in parts:
        digest_state.update(part)
    digest_state.update(sig.trailer())
    digest = digest_state.digest()
    if digest[:2] != sig.digest_prefix:
        return False
    return crypto.verify_signature(
        signer.algorithm, signer.material, sig.hash_algorithm, digest, sig.material
    )
