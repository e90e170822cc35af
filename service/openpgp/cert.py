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
    KEY_FLAG_AUTH,
    KEY_FLAG_CERTIFY,
    KEY_FLAG_ENCRYPT_COMMS,
    KEY_FLAG_ENCRYPT_STORAGE,
    KEY_FLAG_SIGN,
    SIGN_ONLY_ALGORITHMS,
    SUB_EMBEDDED_SIGNATURE,
    SUB_KEY_FLAGS,
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
MAX_ENGINE_RSA_BITS = 4096
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
    # Lookups by this subkey's own fingerprint may answer with this certificate:
    # its binding carries a verified back-signature, or its algorithm can only encrypt and
    # so cannot be someone else's primary key bound here to capture lookups of that key.
    findable: bool = True


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
    """Add loose signatures (revocation certificates) to a stored certificate.

    Key revocations and direct-key signatures go to the key, user ID revocations to the user
    ID and subkey revocations to the subkey they verify over; anything else is dropped. Only
    the loose signatures are verified (the stored ones were when they were stored), and a
    signature the key already holds adds nothing. The result equals ``stored`` when nothing
    new verified.
    """
    by_type: dict[int, list[Packet]] = {}
    for body in signatures:
        by_type.setdefault(body[1] if len(body) > 1 else -1, []).append(Packet(Tag.SIGNATURE, body))
    raw = stored._raw
    extended = _RawCert(
        raw.primary,
        [
            *raw.direct,
            *by_type.get(SigType.KEY_REVOCATION, []),
            *by_type.get(SigType.DIRECT_KEY, []),
        ],
        [
            _Component(c.packet, [*c.sigs, *by_type.get(SigType.CERT_REVOCATION, [])])
            for c in raw.user_ids
        ],
        [
            _Component(c.packet, [*c.sigs, *by_type.get(SigType.SUBKEY_REVOCATION, [])])
            for c in raw.subkeys
        ],
    )
    # Stored signatures are trusted where they are stored, never as a loose copy: a stored
    # revocation of one user ID (or subkey) sent back alone is offered to every user ID
    # (or subkey), and must verify over each to be kept there.
    loose = {p.body for packets in by_type.values() for p in packets}
    known = {p.body for p in _packets(raw)} - loose
    return _finish(_canonicalize(extended, trusted=known.__contains__), strict=False)


def _packets(raw: _RawCert) -> list[Packet]:
    packets: list[Packet] = [raw.primary, *raw.direct]
    for comp in (*raw.user_ids, *raw.subkeys):
        packets.append(comp.packet)
        packets.extend(comp.sigs)
    return packets


def signature_issuers(body: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(fingerprints, key ids) a loose signature names as its issuer: those of its hashed
    area, or, when it names none there (old GnuPG), those of its unhashed area; empty if it
    is damaged."""
    try:
        sig = Signature.parse(body)
    except MalformedKey:
        return frozenset(), frozenset()
    fprs, ids = sig.hashed_issuers()
    if fprs or ids:
        return fprs, ids
    return sig.issuers()


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

# Self-signatures kept per component (the key itself, a user ID, a subkey), revocations aside:
# the newest, which clients use, and a few before it, which Sequoia uses to check signatures
# made back then. Only the owner can make more, and older ones add nothing for today's
# clients (GnuPG's `clean` drops them too).
MAX_SELF_SIGNATURES = 4

# Algorithms that cannot sign (RSA encrypt-only, ElGamal, ECDH, X25519, X448, and the
# ML-KEM composites): a binding that gives such a subkey a signing, certifying or
# authentication flag, or an encryption flag to a sign-only algorithm, is refused.
ENCRYPT_ONLY_ALGORITHMS = frozenset({2, 16, 18, 25, 26, 35, 36})
_SIGNING_FLAGS = KEY_FLAG_CERTIFY | KEY_FLAG_SIGN | KEY_FLAG_AUTH
_ENCRYPTION_FLAGS = KEY_FLAG_ENCRYPT_COMMS | KEY_FLAG_ENCRYPT_STORAGE


def _union(a: _RawCert, b: _RawCert) -> _RawCert:
    """``a`` plus what ``b`` adds: new components, revocations, and newer self-signatures.

    A signature ``a`` already holds (the same hashed area, whatever the unhashed bytes) is
    never taken again. A self-signature of ``b`` older than the newest one ``a`` already has
    on the same component is not taken (exports often drop superseded self-signatures, so an
    old copy still carries them): uploading an older copy of a key changes nothing at all.
    """

    def merge_sigs(x: list[Packet], y: list[Packet]) -> list[Packet]:
        parsed = [Signature.parse(p.body) for p in x]
        seen = {sig.identity for sig in parsed}
        newest = max(
            (sig.created for sig in parsed if sig.sig_type not in _REVOCATIONS), default=-1
        )
        taken = list(x)
        for packet in y:
            sig = Signature.parse(packet.body)
            if sig.identity in seen:
                continue
            if sig.sig_type in _REVOCATIONS or sig.created > newest:
                taken.append(packet)
                seen.add(sig.identity)
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


def _bounded(sigs: list[Signature]) -> list[Signature]:
    """One of each statement, and a bounded number of statements, in the order given.

    Copies of one signature (same hashed area) collapse to the first. Of the revocations,
    the newest per reason stays; of the other self-signatures, the ``MAX_SELF_SIGNATURES``
    newest. Only the owner can make distinct signatures, so nobody else can grow a key
    through this.
    """
    unique: dict[bytes, Signature] = {}
    for sig in sigs:
        unique.setdefault(sig.identity, sig)
    revocations: dict[int | None, Signature] = {}
    others: list[Signature] = []
    for sig in unique.values():
        if sig.sig_type in _REVOCATIONS:
            kept = revocations.get(sig.revocation_reason)
            if kept is None or sig.created > kept.created:
                revocations[sig.revocation_reason] = sig
        else:
            others.append(sig)
    newest = sorted(others, key=lambda sig: sig.created, reverse=True)[:MAX_SELF_SIGNATURES]
    chosen = {id(sig) for sig in (*revocations.values(), *newest)}
    return [sig for sig in unique.values() if id(sig) in chosen]


def _grouped(components: list[_Component]) -> list[_Component]:
    """Components with the same packet merged into the first (their signatures joined)."""
    groups: dict[bytes, _Component] = {}
    for comp in components:
        if comp.packet.body in groups:
            groups[comp.packet.body].sigs.extend(comp.sigs)
        else:
            groups[comp.packet.body] = _Component(comp.packet, list(comp.sigs))
    return list(groups.values())


def _canonicalize(
    raw: _RawCert, trusted: Callable[[bytes], bool] = lambda _body: False
) -> _RawCert:
    """Keep only verified self-signed material, normalised; see the module docstring.

    ``trusted`` names signature packets verified before (stored material): they are not
    verified again, so a small upload cannot make us re-verify a whole stored key.
    """
    primary = PublicKey.parse(raw.primary.body)

    def candidate(body: bytes, types: frozenset[int]) -> Signature | None:
        try:
            sig = Signature.parse(body)
        except MalformedKey:
            return None
        if sig.sig_type not in types or not sig.exportable:
            return None
        # Readers disagree on which of two key-flags subpackets counts (we read the first,
        # Sequoia and GnuPG the last): such a signature has no one meaning.
        if sig.count(SUB_KEY_FLAGS) > 1:
            return None
        fprs, ids = sig.issuers()
        # Someone else's signature: drop it without spending a verification on it. For a
        # revocation only an issuer in the hashed area counts, so that an edited copy cannot
        # hide the owner's revocation.
        if sig.sig_type in _REVOCATIONS:
            fprs, ids = sig.hashed_issuers()
        if (fprs or ids) and primary.fingerprint not in fprs and primary.key_id not in ids:
            return None
        return sig

    def verified(sigs: list[Packet], types: frozenset[int], *parts: bytes) -> list[Signature]:
        kept: list[Signature] = []
        accepted: set[bytes] = set()
        for packet in sigs:
            sig = candidate(packet.body, types)
            # A copy of a signature already taken is dropped anyway: never verify it.
            if sig is None or sig.identity in accepted:
                continue
            if trusted(packet.body) or verify_over(primary, sig, primary.hash_prefix, *parts):
                kept.append(sig)
                accepted.add(sig.identity)
        return kept

    def normalized(sigs: list[Signature]) -> list[Packet]:
        return [Packet(Tag.SIGNATURE, sig.normalized(primary)) for sig in _bounded(sigs)]

    direct_types = frozenset({SigType.DIRECT_KEY, SigType.KEY_REVOCATION})
    direct = verified(raw.direct, direct_types)
    # A key revocation misplaced after a user ID or subkey still revokes the key.
    for comp in (*raw.user_ids, *raw.subkeys):
        direct.extend(verified(comp.sigs, frozenset({SigType.KEY_REVOCATION})))

    user_ids: list[_Component] = []
    for comp in _grouped(raw.user_ids):
        sigs = _bounded(
            verified(
                comp.sigs,
                CERTIFICATIONS | {SigType.CERT_REVOCATION},
                user_id_hash_prefix(comp.packet.body),
            )
        )
        # A user ID with only its revocation is kept: cleaned exports (GnuPG's
        # export-clean, Debian's keyrings) carry a revoked user ID that way, and the
        # revocation must reach the stored user ID. It is never published by itself: only
        # an address confirmed before (through a certification) is served.
        if sigs:
            user_ids.append(_Component(comp.packet, normalized(sigs)))

    subkeys: list[_Component] = []
    for comp in _grouped(raw.subkeys):
        try:
            subkey = PublicKey.parse(comp.packet.body)
        except KeyRejected:
            continue  # damaged or unsupported subkey: drop it, keep the rest of the key
        if subkey.fingerprint == primary.fingerprint or subkey.version != primary.version:
            continue
        backsigs: dict[bytes, bytes | None] = {}
        bindings: list[Signature] = []
        for sig in verified(comp.sigs, frozenset({SigType.SUBKEY_BINDING}), subkey.hash_prefix):
            if not _flags_fit(subkey, sig.key_flags):
                continue
            ok, embedded = _backsig(primary, subkey, sig, trusted=trusted(sig.body))
            if ok:
                bindings.append(sig)
                backsigs.setdefault(sig.identity, embedded)
        bindings = _bounded(bindings)
        if not bindings:
            continue  # unbound, foreign or damaged: never stored, never served
        revocations = _bounded(
            verified(comp.sigs, frozenset({SigType.SUBKEY_REVOCATION}), subkey.hash_prefix)
        )
        packets = [
            Packet(Tag.SIGNATURE, sig.normalized(primary, backsigs[sig.identity]))
            for sig in bindings
        ] + [Packet(Tag.SIGNATURE, sig.normalized(primary)) for sig in revocations]
        subkeys.append(_Component(comp.packet, packets))
    return _RawCert(raw.primary, normalized(direct), user_ids, subkeys)


def _flags_fit(subkey: PublicKey, flags: int | None) -> bool:
    """Whether a binding's key flags ask only for what the subkey's algorithm can do."""
    if flags is None:
        return True
    if flags & _SIGNING_FLAGS and subkey.algorithm in ENCRYPT_ONLY_ALGORITHMS:
        return False
    return not (flags & _ENCRYPTION_FLAGS and subkey.algorithm in SIGN_ONLY_ALGORITHMS)


def _needs_backsig(subkey: PublicKey, binding: Signature) -> bool:
    """Whether a binding makes its subkey a signing key (kept only with a back-signature)."""
    if binding.sig_type != SigType.SUBKEY_BINDING:
        return False
    flags = binding.key_flags
    if flags is not None:
        return bool(flags & KEY_FLAG_SIGN)
    return subkey.algorithm in SIGN_ONLY_ALGORITHMS


def _backsig(
    primary: PublicKey, subkey: PublicKey, binding: Signature, *, trusted: bool
) -> tuple[bool, bytes | None]:
    """Whether a binding may stand, and the back-signature to keep in its unhashed area.

    A signing subkey must sign back its binding (RFC 9580 section 5.2.1, type 0x19).
    Without this, anyone could bind someone else's signing key to their own certificate and
    claim that person's signatures. Only the back-signature that verified is kept (itself
    normalised); one in the hashed area needs no copy.
    """
    if not _needs_backsig(subkey, binding):
        return True, None
    hashed = [s.body for s in binding.hashed if s.type == SUB_EMBEDDED_SIGNATURE]
    unhashed = [s.body for s in binding.unhashed if s.type == SUB_EMBEDDED_SIGNATURE]
    for in_hashed, body in [(True, b) for b in hashed] + [(False, b) for b in unhashed]:
        try:
            back = Signature.parse(body)
        except MalformedKey:
            continue
        if back.sig_type != SigType.PRIMARY_KEY_BINDING:
            continue
        if trusted or verify_over(subkey, back, primary.hash_prefix, subkey.hash_prefix):
            return True, None if in_hashed else back.normalized(subkey)
    return False, None


def _serialize(raw: _RawCert) -> bytes:
    return serialize(_packets(raw))


def _policy_refusal(primary: PublicKey, raw: _RawCert) -> KeyRejected:
    """Why no self-signature survives Sequoia's standard policy, for people."""
    all_sigs = [*raw.direct, *(p for c in raw.user_ids for p in c.sigs)]
    if not all_sigs:
        return NoValidSelfSignature()
    if all(Signature.parse(p.body).hash_algorithm == SHA1 for p in all_sigs):
        return WeakSelfSignatures()
    if primary.algorithm in (1, 3) and primary.bits > MAX_ENGINE_RSA_BITS:
        # The engine's RSA implementation stops at 4096 bits; its error says only "no
        # binding signature", which would send people hunting for a weak hash.
        return UnsupportedKey(
            f"RSA keys larger than {MAX_ENGINE_RSA_BITS} bits (this one has {primary.bits}) "
            "are not supported by our OpenPGP engine yet."
        )
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
                findable=key.algorithm in ENCRYPT_ONLY_ALGORITHMS
                or any(_needs_backsig(key, Signature.parse(p.body)) for p in comp.sigs),
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
