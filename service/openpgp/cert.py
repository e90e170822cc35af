"""Certificates as keydir stores and serves them.

A certificate is canonicalised before anything else sees it: every self-signature is verified
here (pysequoia verifies none that we could ask about), and everything that is not a verified
self-signature of this very key is dropped: third-party certifications, user attributes
(photos), trust and padding packets, foreign or damaged subkeys and their bindings, signing
subkeys without a valid back-signature, garbage or non-exportable signatures. What remains is
kept as the exact packet bodies received. pysequoia then judges the result under Sequoia's
standard policy (which user IDs are valid, expiry, revocation), as the clients that fetch it do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pysequoia

from service.openpgp import armor
from service.openpgp.addresses import address_of_user_id
from service.openpgp.errors import (
    KeyRejected,
    KeyTooLarge,
    MalformedKey,
    NotAPublicKey,
    NoValidSelfSignature,
    TooManyKeys,
    UnsupportedKey,
    WeakSelfSignatures,
)
from service.openpgp.packets import (
    CERTIFICATIONS,
    KEY_FLAG_SIGN,
    SIGN_ONLY_ALGORITHMS,
    Packet,
    PublicKey,
    Signature,
    SigType,
    Tag,
    parse_packets,
    serialize,
    user_id_hash_prefix,
    verify_over,
)

SHA1 = 2
DEFAULT_MAX_PACKETS = 50_000
DEFAULT_MAX_KEYS = 100


@dataclass(slots=True)
class _Component:
    packet: Packet
    sigs: list[Packet] = field(default_factory=list)


@dataclass(slots=True)
class _RawCert:
    """Packets of one certificate as framed in the input, not yet checked."""

    primary: Packet
    direct: list[Packet] = field(default_factory=list)
    user_ids: list[_Component] = field(default_factory=list)
    subkeys: list[_Component] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserId:
    raw: bytes
    text: str
    address: str | None
    valid: bool  # has a self-signature that Sequoia's standard policy accepts, not revoked
    revoked: bool


@dataclass(frozen=True, slots=True)
class Subkey:
    fingerprint: str
    key_id: str
    algorithm: int
    bits: int
    curve: str | None
    created: datetime


@dataclass(frozen=True, slots=True)
class Certificate:
    """A canonical certificate: only verified self-signed material, in received bytes."""

    fingerprint: str
    key_id: str
    version: int
    algorithm: int
    bits: int
    curve: str | None
    created: datetime
    expires: datetime | None
    revoked: bool
    user_ids: tuple[UserId, ...]
    subkeys: tuple[Subkey, ...]
    data: bytes
    _raw: _RawCert = field(repr=False, compare=False)

    @property
    def addresses(self) -> dict[str, UserId]:
        """Valid or revoked user IDs by normalised address (the first user ID per address)."""
        found: dict[str, UserId] = {}
        for uid in self.user_ids:
            if uid.address and (uid.valid or uid.revoked):
                found.setdefault(uid.address, uid)
        return found

    def published(self, addresses: Iterable[str]) -> bytes:
        """Binary certificate carrying only the user IDs of ``addresses`` (may be none).

        Revoked user IDs of those addresses stay in, with their revocations, so that clients
        learn of the revocation.
        """
        wanted = set(addresses)
        keep = [
            comp
            for comp, uid in zip(self._raw.user_ids, self.user_ids, strict=True)
            if uid.address in wanted and (uid.valid or uid.revoked)
        ]
        return _serialize(_RawCert(self._raw.primary, self._raw.direct, keep, self._raw.subkeys))

    def armored(self, addresses: Iterable[str]) -> str:
        return armor.armor_public_key(self.published(addresses))

    def without_user_ids(self) -> Certificate:
        """The same key with every user ID and its signatures removed (identity deleted)."""
        raw = _RawCert(self._raw.primary, self._raw.direct, [], self._raw.subkeys)
        return _finish(raw, strict=False)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """How much of one key is accepted. Only the key's own verified material counts:
    what others attach (certifications, foreign subkeys) is dropped before counting, so
    nobody but the key's owner can push a key over these limits."""

    max_user_ids: int = 100
    max_subkeys: int = 100
    max_user_id_bytes: int = 1024


def enforce_limits(cert: Certificate, limits: KeyLimits) -> None:
    """Raise KeyTooLarge with a sentence when ``cert`` exceeds ``limits``."""
    if len(cert.user_ids) > limits.max_user_ids:
        raise KeyTooLarge(
            f"This key has {len(cert.user_ids)} user IDs; at most {limits.max_user_ids} are "
            "accepted. Revoke or remove the ones you no longer use."
        )
    if len(cert.subkeys) > limits.max_subkeys:
        raise KeyTooLarge(
            f"This key has {len(cert.subkeys)} subkeys; at most {limits.max_subkeys} are accepted."
        )
    for uid in cert.user_ids:
        if len(uid.raw) > limits.max_user_id_bytes:
            raise KeyTooLarge(
                f"A user ID of this key is {len(uid.raw)} bytes long; at most "
                f"{limits.max_user_id_bytes} are accepted."
            )


@dataclass(frozen=True, slots=True)
class ParsedUpload:
    certificates: list[Certificate]
    # Signatures that came without a key, e.g. a revocation certificate: the caller matches
    # them to a stored key with ``attach_signatures``.
    loose_signatures: list[bytes]


def decode(data: bytes) -> bytes:
    """Binary OpenPGP data from armored or binary input."""
    if armor.looks_armored(data):
        return armor.dearmor(data)
    if data and data[0] & 0x80 == 0:
        # Binary OpenPGP always starts with a packet header (high bit set); this is text.
        raise MalformedKey(
            "This is not an OpenPGP key: expected an armored key starting with "
            "-----BEGIN PGP PUBLIC KEY BLOCK----- or binary OpenPGP data."
        )
    return data


def read_upload(
    data: bytes,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    max_packets: int = DEFAULT_MAX_PACKETS,
    limits: KeyLimits | None = None,
) -> ParsedUpload:
    """Parse an upload of one or more public keys (armored or binary).

    Raises a KeyRejected subclass with a sentence for people when the input is not acceptable.
    """
    binary = decode(data)
    if not binary:
        raise MalformedKey("The upload is empty.")
    packets = parse_packets(binary, max_packets=max_packets)
    raws, loose = _split(packets)
    if len(raws) > max_keys:
        raise TooManyKeys(f"The upload holds {len(raws)} keys; at most {max_keys} are accepted.")
    if not raws and not loose:
        raise NotAPublicKey
    certs = [_finish(_canonicalize(raw)) for raw in raws]
    for cert in certs:
        enforce_limits(cert, limits or KeyLimits())
    return ParsedUpload(certs, [p.body for p in loose])


def load(data: bytes) -> Certificate:
    """Rebuild a Certificate from bytes this package produced (``Certificate.data``).

    Signatures are not verified again: they were when the bytes were made.
    """
    raws, _ = _split(parse_packets(data, max_packets=10 * DEFAULT_MAX_PACKETS))
    if len(raws) != 1:
        raise MalformedKey("Stored certificate data is damaged.")
    return _finish(_canonicalize(raws[0], trusted=lambda _body: True), strict=False)


def merge(stored: Certificate, update: Certificate) -> Certificate:
    """The union of two canonical versions of one certificate.

    An older copy adds nothing; new subkeys, user IDs and self-signatures (new expiry,
    revocations) are taken. Both inputs are already verified, so nothing is checked again.
    """
    if stored.fingerprint != update.fingerprint:
        raise ValueError("merge of two different certificates")
    raw = _union(stored._raw, update._raw)
    return _finish(_canonicalize(raw, trusted=lambda _body: True))


def attach_signatures(stored: Certificate, signatures: Iterable[bytes]) -> Certificate:
    """Add loose signatures (a revocation certificate) to a stored certificate.

    Only key revocations and direct-key signatures made by the key itself are taken; anything
    else is dropped. The result equals ``stored`` when nothing verified.
    """
    raw = _RawCert(
        stored._raw.primary,
        [*stored._raw.direct, *(Packet(Tag.SIGNATURE, body) for body in signatures)],
        stored._raw.user_ids,
        stored._raw.subkeys,
    )
    known = {p.body for p in stored._raw.direct}
    return _finish(_canonicalize(raw, trusted=known.__contains__))


def signature_issuers(body: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(fingerprints, key ids) a loose signature names as issuer; empty if it is damaged."""
    try:
        return Signature.parse(body).issuers()
    except MalformedKey:
        return frozenset(), frozenset()


def _split(packets: list[Packet]) -> tuple[list[_RawCert], list[Packet]]:
    raws: list[_RawCert] = []
    loose: list[Packet] = []
    current: _RawCert | None = None
    # Where a signature goes: the primary's own list, or the last user ID or subkey seen.
    target: list[Packet] | None = None
    for packet in packets:
        tag = packet.tag
        if tag == Tag.PUBLIC_KEY:
            current = _RawCert(packet)
            raws.append(current)
            target = current.direct
        elif tag in (Tag.MARKER, Tag.TRUST, Tag.PADDING):
            continue
        elif current is None:
            if tag == Tag.SIGNATURE:
                loose.append(packet)
                continue
            raise NotAPublicKey
        elif tag == Tag.USER_ID:
            comp = _Component(packet)
            current.user_ids.append(comp)
            target = comp.sigs
        elif tag == Tag.PUBLIC_SUBKEY:
            comp = _Component(packet)
            current.subkeys.append(comp)
            target = comp.sigs
        elif tag == Tag.SIGNATURE:
            assert target is not None
            target.append(packet)
        else:
            # User attributes (photos) and unknown packets: dropped with their signatures.
            target = []
    return raws, loose


_REVOCATIONS = frozenset(
    {SigType.KEY_REVOCATION, SigType.SUBKEY_REVOCATION, SigType.CERT_REVOCATION}
)


def _union(a: _RawCert, b: _RawCert) -> _RawCert:
    """``a`` plus what ``b`` adds: new components, revocations, and newer self-signatures.

    A self-signature of ``b`` older than the newest one ``a`` already has on the same
    component is not taken (exports often drop superseded self-signatures, so an old copy
    still carries them): uploading an older copy of a key changes nothing at all.
    """

    def merge_sigs(x: list[Packet], y: list[Packet]) -> list[Packet]:
        seen = {p.body for p in x}
        newest = max(
            (
                sig.created
                for sig in map(Signature.parse, (p.body for p in x))
                if sig.sig_type not in _REVOCATIONS
            ),
            default=-1,
        )
        taken = list(x)
        for packet in y:
            if packet.body in seen:
                continue
            sig = Signature.parse(packet.body)
            if sig.sig_type in _REVOCATIONS or sig.created > newest:
                taken.append(packet)
                seen.add(packet.body)
        return taken

    def merge_components(x: list[_Component], y: list[_Component]) -> list[_Component]:
        result = [_Component(c.packet, list(c.sigs)) for c in x]
        index = {c.packet.body: c for c in result}
        for comp in y:
            if comp.packet.body in index:
                existing = index[comp.packet.body]
                existing.sigs = merge_sigs(existing.sigs, comp.sigs)
            else:
                copy = _Component(comp.packet, list(comp.sigs))
                result.append(copy)
                index[comp.packet.body] = copy
        return result

    return _RawCert(
        a.primary,
        merge_sigs(a.direct, b.direct),
        merge_components(a.user_ids, b.user_ids),
        merge_components(a.subkeys, b.subkeys),
    )


def _canonicalize(
    raw: _RawCert, trusted: Callable[[bytes], bool] = lambda _body: False
) -> _RawCert:
    """Keep only verified self-signed material; see the module docstring."""
    primary = PublicKey.parse(raw.primary.body)

    def self_signature(body: bytes) -> Signature | None:
        try:
            sig = Signature.parse(body)
        except MalformedKey:
            return None
        if not sig.exportable:
            return None
        fprs, ids = sig.issuers()
        # Someone else's signature: drop it without spending a verification on it.
        if (fprs or ids) and primary.fingerprint not in fprs and primary.key_id not in ids:
            return None
        return sig

    def keep(sigs: list[Packet], types: frozenset[int], *parts: bytes) -> list[Packet]:
        kept: list[Packet] = []
        seen: set[bytes] = set()
        for packet in sigs:
            if packet.body in seen:
                continue
            sig = self_signature(packet.body)
            if sig is None or sig.sig_type not in types:
                continue
            if trusted(packet.body) or verify_over(primary, sig, primary.hash_prefix, *parts):
                kept.append(packet)
                seen.add(packet.body)
        return kept

    direct = keep(raw.direct, frozenset({SigType.DIRECT_KEY, SigType.KEY_REVOCATION}))
    # A key revocation misplaced after a user ID or subkey still revokes the key.
    for comp in (*raw.user_ids, *raw.subkeys):
        extra = keep(comp.sigs, frozenset({SigType.KEY_REVOCATION}))
        direct.extend(p for p in extra if p not in direct)

    user_ids: list[_Component] = []
    seen_uids: dict[bytes, _Component] = {}
    for comp in raw.user_ids:
        sigs = keep(
            comp.sigs,
            CERTIFICATIONS | {SigType.CERT_REVOCATION},
            user_id_hash_prefix(comp.packet.body),
        )
        if comp.packet.body in seen_uids:
            existing = seen_uids[comp.packet.body]
            existing.sigs.extend(p for p in sigs if p not in existing.sigs)
        elif sigs:
            new = _Component(comp.packet, sigs)
            seen_uids[comp.packet.body] = new
            user_ids.append(new)
    # A user ID with only a revocation and no certification says nothing: drop it.
    user_ids = [
        c
        for c in user_ids
        if any(Signature.parse(p.body).sig_type in CERTIFICATIONS for p in c.sigs)
    ]

    subkeys: list[_Component] = []
    seen_subkeys: dict[str, _Component] = {}
    for comp in raw.subkeys:
        try:
            subkey = PublicKey.parse(comp.packet.body)
        except KeyRejected:
            continue  # damaged or unsupported subkey: drop it, keep the rest of the key
        if subkey.fingerprint == primary.fingerprint or subkey.version != primary.version:
            continue
        bindings = [
            p
            for p in keep(comp.sigs, frozenset({SigType.SUBKEY_BINDING}), subkey.hash_prefix)
            if trusted(p.body) or _backsig_ok(primary, subkey, Signature.parse(p.body))
        ]
        if not bindings:
            continue  # unbound, foreign or damaged: never stored, never served
        revocations = keep(comp.sigs, frozenset({SigType.SUBKEY_REVOCATION}), subkey.hash_prefix)
        if subkey.fingerprint in seen_subkeys:
            existing = seen_subkeys[subkey.fingerprint]
            existing.sigs.extend(p for p in (*bindings, *revocations) if p not in existing.sigs)
        else:
            new = _Component(comp.packet, [*bindings, *revocations])
            seen_subkeys[subkey.fingerprint] = new
            subkeys.append(new)
    return _RawCert(raw.primary, direct, user_ids, subkeys)


def _backsig_ok(primary: PublicKey, subkey: PublicKey, binding: Signature) -> bool:
    """A signing subkey must sign back its binding (RFC 9580 section 5.2.1, type 0x19).

    Without this, anyone could bind someone else's signing key to their own certificate and
    claim that person's signatures.
    """
    flags = binding.key_flags
    needs = (
        bool(flags & KEY_FLAG_SIGN)
        if flags is not None
        else subkey.algorithm in SIGN_ONLY_ALGORITHMS
    )
    if not needs:
        return True
    for body in binding.embedded_signatures():
        try:
            back = Signature.parse(body)
        except MalformedKey:
            continue
        if back.sig_type == SigType.PRIMARY_KEY_BINDING and verify_over(
            subkey, back, primary.hash_prefix, subkey.hash_prefix
        ):
            return True
    return False


def _serialize(raw: _RawCert) -> bytes:
    packets: list[Packet] = [raw.primary, *raw.direct]
    for comp in (*raw.user_ids, *raw.subkeys):
        packets.append(comp.packet)
        packets.extend(comp.sigs)
    return serialize(packets)


def _policy_refusal(primary: PublicKey, raw: _RawCert) -> KeyRejected:
    """Why no self-signature survives Sequoia's standard policy, for people."""
    all_sigs = [*raw.direct, *(p for c in raw.user_ids for p in c.sigs)]
    if not all_sigs:
        return NoValidSelfSignature()
    if all(Signature.parse(p.body).hash_algorithm == SHA1 for p in all_sigs):
        return WeakSelfSignatures()
    if primary.curve and primary.curve.startswith("brainpool"):
        return UnsupportedKey(
            f"Keys on the {primary.curve} curve are not supported by our OpenPGP engine yet. "
            "Keys on Curve25519 (ed25519), NIST curves or RSA are."
        )
    return NoValidSelfSignature(
        "This key's self-signatures verify, but none is acceptable under current security "
        "policy (a weak algorithm or hash, or a key that is too small). Refresh them with "
        "a current GnuPG or Sequoia, or create a new key."
    )


def _finish(raw: _RawCert, *, strict: bool = True) -> Certificate:
    """Judge a canonical certificate under Sequoia's standard policy (at the current time).

    ``strict`` refuses a key with no policy-valid self-signature. Stored keys are loaded
    leniently: a key whose identity was deleted has no user ID left to bind it, and a stored
    key may have fallen out of policy since (its self-signatures' hash was deprecated).
    """
    primary = PublicKey.parse(raw.primary.body)
    data = _serialize(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            engine = pysequoia.Cert.from_bytes(data)
    except RuntimeError as exc:
        raise UnsupportedKey(
            "This key could not be read by our OpenPGP engine; it may use an algorithm or "
            "packet that is not supported."
        ) from exc
    try:
        valid_texts = {str(u) for u in engine.user_ids}
        expires = engine.expiration
        revoked = engine.is_revoked
    except RuntimeError as exc:
        if strict:
            raise _policy_refusal(primary, raw) from exc
        valid_texts, expires = set(), None
        revoked = any(
            Signature.parse(p.body).sig_type == SigType.KEY_REVOCATION for p in raw.direct
        )
    if strict and not raw.user_ids and not raw.direct:
        raise NoValidSelfSignature

    user_ids: list[UserId] = []
    for comp in raw.user_ids:
        text = comp.packet.body.decode("utf-8", "replace")
        revoked_uid = any(
            Signature.parse(p.body).sig_type == SigType.CERT_REVOCATION for p in comp.sigs
        )
        user_ids.append(
            UserId(
                raw=comp.packet.body,
                text=text,
                address=address_of_user_id(text),
                valid=text in valid_texts,
                revoked=revoked_uid and text not in valid_texts,
            )
        )
    subkeys = []
    for comp in raw.subkeys:
        key = PublicKey.parse(comp.packet.body)
        subkeys.append(
            Subkey(
                fingerprint=key.fingerprint,
                key_id=key.key_id,
                algorithm=key.algorithm,
                bits=key.bits,
                curve=key.curve,
                created=datetime.fromtimestamp(key.created, UTC),
            )
        )
    return Certificate(
        fingerprint=primary.fingerprint,
        key_id=primary.key_id,
        version=primary.version,
        algorithm=primary.algorithm,
        bits=primary.bits,
        curve=primary.curve,
        created=datetime.fromtimestamp(primary.created, UTC),
        expires=expires,
        revoked=revoked,
        user_ids=tuple(user_ids),
        subkeys=tuple(subkeys),
        data=data,
        _raw=raw,
    )
