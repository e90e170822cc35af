"""Public-key signature verification for OpenPGP, on the `cryptography` package.

The caller parses packets and computes the signature digest (RFC 9580 section 5.2.4); this
module only knows algorithm ids, the algorithm-specific public key fields of a key packet
(RFC 9580 section 5.5.5) and the algorithm-specific fields of a signature (after the digest
prefix and, for v6, the salt). ``verify_signature`` never raises and its work is bounded:
whatever the input, the answer is True or False, and no key that ``key_strength`` accepts
makes it slow. ``key_strength`` raises only ``MalformedKeyMaterial`` (``RefusedKeyMaterial``
for well-formed keys we do not take). MPIs (RFC 9580 section 3.2) must be minimal, as Sequoia
requires: a declared bit count that disagrees with the value is malformed.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature


class UnsupportedAlgorithm(ValueError):
    """A hash algorithm we do not accept."""


class MalformedKeyMaterial(ValueError):
    """The key fields of a key packet are truncated or do not describe a key."""


class RefusedKeyMaterial(MalformedKeyMaterial):
    """Well-formed key fields of a kind we do not take, because checking signatures by such
    a key would be slow (or impossible with OpenSSL). ``str(exc)`` is a sentence for people."""


# RFC 9580 section 9.5. MD5 (1) and RIPEMD-160 (3) are broken or obsolete: not accepted.
HASH_ALGORITHMS: dict[int, str] = {
    2: "SHA1",
    8: "SHA256",
    9: "SHA384",
    10: "SHA512",
    11: "SHA224",
    12: "SHA3-256",
    14: "SHA3-512",
}
_HASHLIB_NAMES = {
    2: "sha1",
    8: "sha256",
    9: "sha384",
    10: "sha512",
    11: "sha224",
    12: "sha3_256",
    14: "sha3_512",
}
_CRYPTO_HASHES: dict[int, hashes.HashAlgorithm] = {
    2: hashes.SHA1(),  # noqa: S303 - old self-signatures are SHA-1; policy is the caller's
    8: hashes.SHA256(),
    9: hashes.SHA384(),
    10: hashes.SHA512(),
    11: hashes.SHA224(),
    12: hashes.SHA3_256(),
    14: hashes.SHA3_512(),
}
_V6_SALT_SIZES = {8: 16, 9: 24, 10: 32, 11: 16, 12: 16, 14: 32}

# Larger moduli are refused before any arithmetic: they cost time and no real key has one.
MAX_MODULUS_BITS = 16384
# RSA public exponents: real keys use 65537 (old ones 17, 35, 41 or 257, and Debian's keyring
# holds three with a random odd 32-bit one). A larger one makes each verification as slow as
# making a signature: with e as large as n, a 3072-bit key takes 8 ms a signature, 300 times
# more than with 65537, and an upload of such signatures kept a worker busy for minutes.
MAX_RSA_EXPONENT = 2**32
# DSA: only the sizes OpenSSL (through `cryptography`) verifies; any other key is refused
# when it is read, since verifying it would mean doing the arithmetic by hand, in Python
# (GnuPG once made 768- to 1024-bit keys; none is left in Debian's keyrings).
_OPENSSL_DSA_P_BITS = frozenset({1024, 2048, 3072, 4096})
_OPENSSL_DSA_Q_BITS = frozenset({160, 224, 256})

# EdDSA public keys of small order: OpenSSL accepts "signatures" by them that anyone can make
# (an all-zero key and signature verify a quarter of all messages), so they are refused. These
# are the y coordinates (RFC 8032 sections 5.1.3 and 5.2.3) of the points of order 1, 2, 4 and 8
# on edwards25519, and of order 1, 2 and 4 on edwards448.
_P25519 = 2**255 - 19
_Y_ORDER_8 = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
_SMALL_ORDER_Y_25519 = frozenset({0, 1, _P25519 - 1, _Y_ORDER_8, _P25519 - _Y_ORDER_8})
_P448 = 2**448 - 2**224 - 1
_SMALL_ORDER_Y_448 = frozenset({0, 1, _P448 - 1})


class _Curve(NamedTuple):
    name: str
    bits: int
    # Octets of the point as it is stored in the key's MPI.
    point_size: int
    # First octet of that point: 0x04 for SEC1 uncompressed, 0x40 for "prefixed native".
    point_prefix: int
    # GnuPG's Ed448 and X448: the point may also be native, without the prefix, and its MPI
    # may keep leading zero octets ("SOS").
    native_448: bool = False

    def holds(self, point: bytes) -> bool:
        if self.native_448 and len(point) == self.point_size - 1:
            return True
        return len(point) == self.point_size and point[0] == self.point_prefix


# Curve OIDs without the DER tag and length (RFC 9580 section 9.2), and secp256k1, which GnuPG
# supports. Names are GnuPG's.
_CURVES: dict[bytes, _Curve] = {
    bytes.fromhex("2A8648CE3D030107"): _Curve("nistp256", 256, 65, 0x04),
    bytes.fromhex("2B81040022"): _Curve("nistp384", 384, 97, 0x04),
    bytes.fromhex("2B81040023"): _Curve("nistp521", 521, 133, 0x04),
    bytes.fromhex("2B2403030208010107"): _Curve("brainpoolP256r1", 256, 65, 0x04),
    bytes.fromhex("2B240303020801010B"): _Curve("brainpoolP384r1", 384, 97, 0x04),
    bytes.fromhex("2B240303020801010D"): _Curve("brainpoolP512r1", 512, 129, 0x04),
    bytes.fromhex("2B8104000A"): _Curve("secp256k1", 256, 65, 0x04),
    bytes.fromhex("2B06010401DA470F01"): _Curve("ed25519", 255, 33, 0x40),
    bytes.fromhex("2B060104019755010501"): _Curve("cv25519", 255, 33, 0x40),
    bytes.fromhex("2B6571"): _Curve("ed448", 448, 58, 0x40, native_448=True),
    bytes.fromhex("2B656F"): _Curve("x448", 448, 57, 0x40, native_448=True),
}
_ECDSA_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(),
    "nistp384": ec.SECP384R1(),
    "nistp521": ec.SECP521R1(),
    "brainpoolP256r1": ec.BrainpoolP256R1(),
    "brainpoolP384r1": ec.BrainpoolP384R1(),
    "brainpoolP512r1": ec.BrainpoolP512R1(),
    "secp256k1": ec.SECP256K1(),
}

# Algorithms whose public key is one or more fixed-size octet strings: id -> (size, bits, name).
# 25-28: RFC 9580 section 5.5.5.7-10; 30-36: draft-ietf-openpgp-pqc (composite keys put the
# classical key first; SLH-DSA keys stand alone). Post-quantum keys have no meaningful bit size.
_FIXED_KEYS: dict[int, tuple[int, int, str]] = {
    25: (32, 255, "x25519"),
    26: (56, 448, "x448"),
    27: (32, 255, "ed25519"),
    28: (57, 448, "ed448"),
    30: (32 + 1952, 0, "ML-DSA-65+Ed25519"),
    31: (57 + 2592, 0, "ML-DSA-87+Ed448"),
    32: (32, 0, "SLH-DSA-SHAKE-128s"),
    33: (32, 0, "SLH-DSA-SHAKE-128f"),
    34: (64, 0, "SLH-DSA-SHAKE-256s"),
    35: (32 + 1184, 0, "ML-KEM-768+X25519"),
    36: (56 + 1568, 0, "ML-KEM-1024+X448"),
}


# Ed25519 and Ed448 (RFC 9580 sections 5.5.5.9-10 and 5.2.3.4-5) and the composites: octets
# of the EdDSA key and signature, then of the ML-DSA key and signature (FIPS 204).
_NATIVE_SIZES = {
    27: (32, 64, 0, 0),
    28: (57, 114, 0, 0),
    30: (32, 64, 1952, 3309),
    31: (57, 114, 2592, 4627),
}


def hash_for(hash_algo: int) -> hashlib._Hash:
    """A new hash object for an OpenPGP hash algorithm id; UnsupportedAlgorithm if refused."""
    name = _HASHLIB_NAMES.get(hash_algo)
    if name is None:
        raise UnsupportedAlgorithm(f"hash algorithm {hash_algo}")
    if hash_algo == 2:
        # SHA-1 still verifies old self-signatures; whether they count is the caller's policy.
        return hashlib.new(name, usedforsecurity=False)
    return hashlib.new(name)


def v6_salt_size(hash_algo: int) -> int:
    """Salt size of v6 signatures for a hash algorithm (RFC 9580 section 9.5)."""
    size = _V6_SALT_SIZES.get(hash_algo)
    if size is None:
        raise UnsupportedAlgorithm(f"hash algorithm {hash_algo} in a v6 signature")
    return size


class _Reader:
    """Reads fields in order; raises MalformedKeyMaterial when they are cut off or bad."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        if self._pos + size > len(self._data):
            raise MalformedKeyMaterial("truncated")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def mpi(self, *, keep_zeros: bool = False) -> bytes:
        """A minimal MPI's octets, big-endian (RFC 9580 section 3.2).

        ``keep_zeros`` also takes GnuPG's "SOS" form for octet strings (Ed448): leading zero
        octets kept and counted as eight bits each.
        """
        bits = int.from_bytes(self.take(2), "big")
        value = self.take((bits + 7) // 8)
        if keep_zeros and bits == 8 * len(value):
            return value
        if value and value[0].bit_length() != bits - 8 * (len(value) - 1):
            raise MalformedKeyMaterial("MPI bit count does not match its value")
        return value

    def oid(self) -> bytes:
        """A curve OID (RFC 9580 section 5.5.5.4): one length octet, 0 and 255 reserved."""
        size = self.take(1)[0]
        if size in (0, 0xFF):
            raise MalformedKeyMaterial("reserved OID length")
        return self.take(size)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MalformedKeyMaterial("trailing data")


def _oid_text(oid: bytes) -> str:
    """Dotted form of an unknown curve OID, to name it; MalformedKeyMaterial if not an OID."""
    if oid[-1] & 0x80:
        raise MalformedKeyMaterial("curve OID is cut off")
    arcs: list[int] = []
    value = 0
    for octet in oid:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    text = ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))
    return text if len(text) <= 40 else "unknown curve"


def key_strength(pk_algo: int, material: bytes) -> tuple[int, str | None]:
    """(size in bits, curve or scheme name) of a key's public fields.

    Raises MalformedKeyMaterial when they are cut off, too long or not of the algorithm's
    shape. An unknown algorithm is not an error here (a key may carry a subkey of an algorithm
    we cannot use): it reports (0, None).
    """
    reader = _Reader(material)
    if pk_algo in (1, 2, 3):  # RSA: n, e
        n = reader.mpi()
        e = int.from_bytes(reader.mpi(), "big")
        reader.end()
        if not _rsa_exponent_ok(e):
            raise RefusedKeyMaterial(
                f"This RSA key's public exponent is a {e.bit_length()}-bit number; only odd "
                "exponents up to 2^32 are accepted (keys made by current software use 65537)."
            )
        return int.from_bytes(n, "big").bit_length(), None
    if pk_algo in (16, 17, 20):  # ElGamal: p, g, y; DSA: p, q, g, y
        p = reader.mpi()
        q = reader.mpi()
        if pk_algo == 17:
            reader.mpi()
        reader.mpi()
        reader.end()
        p_bits = int.from_bytes(p, "big").bit_length()
        q_bits = int.from_bytes(q, "big").bit_length()
        if pk_algo == 17 and not _dsa_size_ok(p_bits, q_bits):
            raise RefusedKeyMaterial(
                f"This DSA key has a {p_bits}-bit prime with a {q_bits}-bit subgroup; only "
                "the standard sizes (1024, 2048, 3072 or 4096 bits with a 160-, 224- or "
                "256-bit subgroup) are accepted."
            )
        return p_bits, None
    if pk_algo in (18, 19, 22):  # ECDH, ECDSA, EdDSALegacy: OID, point (ECDH: KDF parameters)
        oid = reader.oid()
        curve = _CURVES.get(oid)
        point = reader.mpi(keep_zeros=curve is not None and curve.native_448)
        # RFC 9580 section 5.5.5.6: ECDH adds KDF parameters (size, reserved, hash, cipher).
        if pk_algo == 18 and len(reader.take(reader.take(1)[0])) < 3:
            raise MalformedKeyMaterial("ECDH KDF parameters are cut off")
        reader.end()
        if curve is None:
            return 0, _oid_text(oid)
        if not curve.holds(point):
            raise MalformedKeyMaterial(f"not a point on {curve.name}")
        return curve.bits, curve.name
    if pk_algo in _FIXED_KEYS:
        size, bits, name = _FIXED_KEYS[pk_algo]
        if len(material) != size:
            raise MalformedKeyMaterial(f"a {name} key has {size} octets")
        return bits, name
    return 0, None


def verify_signature(
    pk_algo: int, key_material: bytes, hash_algo: int, digest: bytes, sig_material: bytes
) -> bool:
    """True iff ``sig_material`` is a good signature by the key over ``digest``."""
    try:
        return _verify(pk_algo, key_material, hash_algo, digest, sig_material)
    except Exception:  # noqa: BLE001 - the contract: any failure is a bad signature
        # `cryptography` raises InvalidSignature, ValueError for points off the curve and bad
        # sizes, UnsupportedAlgorithm and more; our own reader raises MalformedKeyMaterial.
        return False


def _verify(
    pk_algo: int, key_material: bytes, hash_algo: int, digest: bytes, sig_material: bytes
) -> bool:
    algorithm = _CRYPTO_HASHES.get(hash_algo)
    if algorithm is None or len(digest) != algorithm.digest_size:
        return False
    key = _Reader(key_material)
    sig = _Reader(sig_material)
    if pk_algo in (1, 3):  # RSA encrypt-or-sign, RSA sign-only
        return _verify_rsa(key, sig, algorithm, digest)
    if pk_algo == 17:
        return _verify_dsa(key, sig, algorithm, digest)
    if pk_algo == 19:
        return _verify_ecdsa(key, sig, algorithm, digest)
    if pk_algo == 22:
        return _verify_eddsa_legacy(key, sig, digest)
    # RFC 9580 sections 5.2.3.4-5: Ed25519 needs a hash of at least 256 bits, Ed448 512 bits;
    # draft-ietf-openpgp-pqc: composite ML-DSA signatures need at least 256 bits.
    if pk_algo in (27, 30, 31) and algorithm.digest_size < 32:
        return False
    if pk_algo == 28 and algorithm.digest_size < 64:
        return False
    if pk_algo in (27, 28, 30, 31):
        return _verify_native(pk_algo, key_material, digest, sig_material)
    return False


def _rsa_exponent_ok(e: int) -> bool:
    return e % 2 == 1 and 3 <= e <= MAX_RSA_EXPONENT


def _dsa_size_ok(p_bits: int, q_bits: int) -> bool:
    return p_bits in _OPENSSL_DSA_P_BITS and q_bits in _OPENSSL_DSA_Q_BITS


def _verify_rsa(key: _Reader, sig: _Reader, algorithm: hashes.HashAlgorithm, digest: bytes) -> bool:
    n, e = key.mpi(), key.mpi()
    key.end()
    if len(n) * 8 > MAX_MODULUS_BITS or not _rsa_exponent_ok(int.from_bytes(e, "big")):
        return False
    value = sig.mpi()
    sig.end()
    if len(value) > len(n):
        return False
    public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    # An MPI drops the signature's leading zero octets; PKCS#1 wants it as long as n.
    signature = value.rjust(len(n), b"\0")
    public.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
    return True


def _verify_dsa(key: _Reader, sig: _Reader, algorithm: hashes.HashAlgorithm, digest: bytes) -> bool:
    p, q, g, y = (int.from_bytes(key.mpi(), "big") for _ in range(4))
    key.end()
    if not _dsa_size_ok(p.bit_length(), q.bit_length()):
        return False
    r, s = (int.from_bytes(sig.mpi(), "big") for _ in range(2))
    sig.end()
    if not _dsa_key_is_sound(p, q, g, y):
        return False
    public = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
    # OpenSSL takes the leftmost bits of a digest longer than q (FIPS 186-4 section 4.6).
    public.verify(encode_dss_signature(r, s), digest, Prehashed(algorithm))
    return True


@lru_cache(maxsize=64)
def _dsa_key_is_sound(p: int, q: int, g: int, y: int) -> bool:
    """Whether g generates a subgroup of prime order q and y is not trivial.

    Part of SP 800-89 section 5.3.1, which OpenSSL does not check: without it a key like
    g = y = p - 1 "verifies" signatures that anyone can make. Cached: a key has many signatures.
    """
    if q >= p:
        return False
    if not (1 < g < p - 1 and 1 < y < p - 1):
        return False
    return _probably_prime(q) and pow(g, q, p) == 1


def _probably_prime(n: int, rounds: int = 20) -> bool:
    """Miller-Rabin with random bases: a key cannot be built to pass for known bases."""
    if n % 2 == 0 or n < 5:
        return n in (2, 3)
    odd, twos = n - 1, 0
    while odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    for _ in range(rounds):
        x = pow(2 + secrets.randbelow(n - 3), odd, n)
        if x in (1, n - 1):
            continue
        for _ in range(twos - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _verify_ecdsa(
    key: _Reader, sig: _Reader, algorithm: hashes.HashAlgorithm, digest: bytes
) -> bool:
    curve = _CURVES.get(key.oid())
    point = key.mpi()
    key.end()
    if curve is None or curve.name not in _ECDSA_CURVES:
        return False
    if not curve.holds(point):
        return False
    r, s = sig.mpi(), sig.mpi()
    sig.end()
    if max(len(r), len(s)) > (curve.point_size - 1) // 2:
        return False
    public = ec.EllipticCurvePublicKey.from_encoded_point(_ECDSA_CURVES[curve.name], point)
    signature = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    public.verify(signature, digest, ec.ECDSA(Prehashed(algorithm)))
    return True


def _verify_eddsa_legacy(key: _Reader, sig: _Reader, digest: bytes) -> bool:
    """EdDSALegacy (RFC 9580 sections 5.2.3.3 and 5.5.5.5): the message is the digest."""
    curve = _CURVES.get(key.oid())
    if curve is None or curve.name not in ("ed25519", "ed448"):
        return False
    if curve.name == "ed25519":
        point = key.mpi()
        key.end()
        if not curve.holds(point):
            return False
        r, s = sig.mpi(), sig.mpi()
        sig.end()
        if len(r) > 32 or len(s) > 32 or _small_order(point[1:]):
            return False
        # R and S lose their leading zero octets as MPIs: pad each back to 32.
        public = ed25519.Ed25519PublicKey.from_public_bytes(point[1:])
        public.verify(r.rjust(32, b"\0") + s.rjust(32, b"\0"), digest)
        return True
    # GnuPG's Ed448 in this encoding (not in RFC 9580): R and S are 57-octet strings.
    point = key.mpi(keep_zeros=True)
    key.end()
    r, s = sig.mpi(keep_zeros=True), sig.mpi(keep_zeros=True)
    sig.end()
    if not curve.holds(point) or len(r) > 57 or len(s) > 57:
        return False
    native = point[-57:]
    if _small_order(native):
        return False
    public448 = ed448.Ed448PublicKey.from_public_bytes(native)
    public448.verify(r.rjust(57, b"\0") + s.rjust(57, b"\0"), digest)
    return True


def _small_order(eddsa_key: bytes) -> bool:
    """Whether an Ed25519 (32 octets) or Ed448 (57 octets) public key has small order."""
    if len(eddsa_key) == 32:
        # The top bit is the sign of x; y may be encoded unreduced.
        y = int.from_bytes(eddsa_key, "little") & ((1 << 255) - 1)
        return y % _P25519 in _SMALL_ORDER_Y_25519
    y = int.from_bytes(eddsa_key, "little") & ((1 << 455) - 1)
    return y % _P448 in _SMALL_ORDER_Y_448


def _verify_native(pk_algo: int, key: bytes, digest: bytes, sig: bytes) -> bool:
    """Ed25519, Ed448 (RFC 9580 5.2.3.4-5) and composite ML-DSA (draft-ietf-openpgp-pqc).

    Composites are the EdDSA part then the ML-DSA part, of key and of signature alike; both
    must verify over the digest, ML-DSA with the empty context.
    """
    ed_key_size, ed_sig_size, ml_key_size, ml_sig_size = _NATIVE_SIZES[pk_algo]
    if len(key) != ed_key_size + ml_key_size or len(sig) != ed_sig_size + ml_sig_size:
        return False
    ed_key, ml_key = key[:ed_key_size], key[ed_key_size:]
    ed_sig, ml_sig = sig[:ed_sig_size], sig[ed_sig_size:]
    if _small_order(ed_key):
        return False
    if ed_key_size == 32:
        ed25519.Ed25519PublicKey.from_public_bytes(ed_key).verify(ed_sig, digest)
    else:
        ed448.Ed448PublicKey.from_public_bytes(ed_key).verify(ed_sig, digest)
    if pk_algo == 30:
        mldsa.MLDSA65PublicKey.from_public_bytes(ml_key).verify(ml_sig, digest)
    elif pk_algo == 31:
        mldsa.MLDSA87PublicKey.from_public_bytes(ml_key).verify(ml_sig, digest)
    return True
