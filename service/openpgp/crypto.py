"""Public-key signature verification for OpenPGP, on the `cryptography` package.

The caller parses packets and computes the signature digest (RFC 9580 section 5.2.4); this
module only knows algorithm ids, the algorithm-specific key fields of a key packet
(RFC 9580 section 5.5.5) and the algorithm-specific fields of a signature packet (after the
digest prefix and, for v6, the salt). ``verify_signature`` never raises: whatever the input,
the answer is True or False.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature


class UnsupportedAlgorithm(ValueError):
    """A hash or public-key algorithm we do not accept."""


class MalformedKeyMaterial(ValueError):
    """The key fields of a key packet are truncated or do not describe a key."""


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
_HASHLIB = {
    2: "sha1",
    8: "sha256",
    9: "sha384",
    10: "sha512",
    11: "sha224",
    12: "sha3_256",
    14: "sha3_512",
}
_CRYPTO_HASH: dict[int, type[hashes.HashAlgorithm]] = {
    2: hashes.SHA1,
    8: hashes.SHA256,
    9: hashes.SHA384,
    10: hashes.SHA512,
    11: hashes.SHA224,
    12: hashes.SHA3_256,
    14: hashes.SHA3_512,
}
_V6_SALT = {8: 16, 9: 24, 10: 32, 11: 16, 12: 16, 14: 32}

# Curve OIDs (RFC 9580 section 9.2), without the DER tag and length.
_OID_P256 = bytes.fromhex("2A8648CE3D030107")
_OID_P384 = bytes.fromhex("2B81040022")
_OID_P521 = bytes.fromhex("2B81040023")
_OID_BP256 = bytes.fromhex("2B2403030208010107")
_OID_BP384 = bytes.fromhex("2B240303020801010B")
_OID_BP512 = bytes.fromhex("2B240303020801010D")
_OID_ED25519 = bytes.fromhex("2B06010401DA470F01")
_OID_ED448 = bytes.fromhex("2B6571")
_OID_CV25519 = bytes.fromhex("2B060104019755010501")
_OID_X448 = bytes.fromhex("2B656F")

_ECDSA_CURVES: dict[bytes, tuple[str, int, type[ec.EllipticCurve]]] = {
    _OID_P256: ("nistp256", 256, ec.SECP256R1),
    _OID_P384: ("nistp384", 384, ec.SECP384R1),
    _OID_P521: ("nistp521", 521, ec.SECP521R1),
    _OID_BP256: ("brainpoolP256r1", 256, ec.BrainpoolP256R1),
    _OID_BP384: ("brainpoolP384r1", 384, ec.BrainpoolP384R1),
    _OID_BP512: ("brainpoolP512r1", 512, ec.BrainpoolP512R1),
}
_OTHER_CURVES: dict[bytes, tuple[str, int]] = {
    _OID_ED25519: ("ed25519", 255),
    _OID_ED448: ("ed448", 448),
    _OID_CV25519: ("cv25519", 255),
    _OID_X448: ("x448", 448),
}

# Larger moduli are refused before any arithmetic: verifying them costs time for nothing.
MAX_MODULUS_BITS = 16384

RSA_ALGORITHMS = frozenset({1, 2, 3})
ELGAMAL_ALGORITHMS = frozenset({16, 20})
# draft-ietf-openpgp-pqc: composite ML-DSA signatures and ML-KEM encryption.
# id -> (classical key size, ML key size, classical signature size, ML signature size)
_MLDSA = {30: (32, 1952, 64, 3309), 31: (57, 2592, 114, 4627)}
_MLKEM = {35: (32, 1184), 36: (56, 1568)}
_MLDSA_NAMES = {30: "ML-DSA-65+Ed25519", 31: "ML-DSA-87+Ed448"}
_MLKEM_NAMES = {35: "ML-KEM-768+X25519", 36: "ML-KEM-1024+X448"}


def hash_for(hash_algo: int) -> Any:
    """A new hashlib object for an OpenPGP hash algorithm id."""
    name = _HASHLIB.get(hash_algo)
    if name is None:
        raise UnsupportedAlgorithm(f"hash algorithm {hash_algo}")
    if hash_algo == 2:
        # SHA-1 is still how old self-signatures were made; Sequoia's policy judges them.
        return hashlib.new(name, usedforsecurity=False)
    return hashlib.new(name)


def v6_salt_size(hash_algo: int) -> int:
    """Salt size of v6 signatures per hash algorithm (RFC 9580 section 9.5)."""
    size = _V6_SALT.get(hash_algo)
    if size is None:
        raise UnsupportedAlgorithm(f"hash algorithm {hash_algo} in a v6 signature")
    return size


class _Reader:
    """Reads MPIs and fixed fields; raises MalformedKeyMaterial when the data runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise MalformedKeyMaterial("truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def mpi(self, max_bits: int = MAX_MODULUS_BITS + 64) -> int:
        """An MPI (RFC 9580 section 3.2) as an integer."""
        bits = int.from_bytes(self.take(2), "big")
        if bits > max_bits:
            raise MalformedKeyMaterial("number too large")
        return int.from_bytes(self.take((bits + 7) // 8), "big")

    def mpi_bytes(self, max_bits: int = MAX_MODULUS_BITS + 64) -> bytes:
        bits = int.from_bytes(self.take(2), "big")
        if bits > max_bits:
            raise MalformedKeyMaterial("number too large")
        return self.take((bits + 7) // 8)

    def oid(self) -> bytes:
        size = self.take(1)[0]
        if size in (0, 0xFF):
            raise MalformedKeyMaterial("reserved OID length")
        return self.take(size)

    def done(self) -> bool:
        return self.pos == len(self.data)


def key_strength(pk_algo: int, material: bytes) -> tuple[int, str | None]:
    """(size in bits, curve or scheme name) of a key; MalformedKeyMaterial if it is damaged.

    Unknown algorithms are not an error here (a key may carry a subkey of an algorithm we
    cannot use): they report (0, None).
    """
    reader = _Reader(material)
    if pk_algo in RSA_ALGORITHMS:
        n = reader.mpi()
        reader.mpi()  # e
        return n.bit_length(), None
    if pk_algo == 17:
        p = reader.mpi()
        for _ in range(3):  # q, g, y
            reader.mpi()
        return p.bit_length(), None
    if pk_algo in ELGAMAL_ALGORITHMS:
        p = reader.mpi()
        reader.mpi()  # g
        reader.mpi()  # y
        return p.bit_length(), None
    if pk_algo in (18, 19, 22):
        oid = reader.oid()
        reader.mpi_bytes()  # the point
        if pk_algo == 18:
            kdf = reader.take(reader.take(1)[0])
            if len(kdf) < 3:
                raise MalformedKeyMaterial("bad KDF parameters")
        if oid in _ECDSA_CURVES:
            name, bits, _curve = _ECDSA_CURVES[oid]
            return bits, name
        if oid in _OTHER_CURVES:
            return _OTHER_CURVES[oid][1], _OTHER_CURVES[oid][0]
        return 0, "unknown curve"
    fixed = {
        25: (32, "x25519", 255),
        26: (56, "x448", 448),
        27: (32, "ed25519", 255),
        28: (57, "ed448", 448),
    }
    if pk_algo in fixed:
        size, name, bits = fixed[pk_algo]
        reader.take(size)
        if not reader.done():
            raise MalformedKeyMaterial("wrong key size")
        return bits, name
    if pk_algo in _MLDSA:
        classic, post_quantum, _s1, _s2 = _MLDSA[pk_algo]
        reader.take(classic + post_quantum)
        if not reader.done():
            raise MalformedKeyMaterial("wrong key size")
        return 0, _MLDSA_NAMES[pk_algo]
    if pk_algo in _MLKEM:
        classic, post_quantum = _MLKEM[pk_algo]
        reader.take(classic + post_quantum)
        if not reader.done():
            raise MalformedKeyMaterial("wrong key size")
        return 0, _MLKEM_NAMES[pk_algo]
    return 0, None


def verify_signature(
    pk_algo: int, key_material: bytes, hash_algo: int, digest: bytes, sig_material: bytes
) -> bool:
    """True iff ``sig_material`` is a good signature by the key over ``digest``."""
    try:
        return _verify(pk_algo, key_material, hash_algo, digest, sig_material)
    except (InvalidSignature, MalformedKeyMaterial, UnsupportedAlgorithm, _CryptoUnsupported):
        return False
    except (ValueError, TypeError, OverflowError):
        # `cryptography` raises ValueError for points off the curve, bad sizes and the like.
        return False


def _prehashed(hash_algo: int) -> Prehashed:
    algorithm = _CRYPTO_HASH.get(hash_algo)
    if algorithm is None:
        raise UnsupportedAlgorithm(f"hash algorithm {hash_algo}")
    return Prehashed(algorithm())


def _verify(
    pk_algo: int, key_material: bytes, hash_algo: int, digest: bytes, sig_material: bytes
) -> bool:
    key = _Reader(key_material)
    sig = _Reader(sig_material)
    if pk_algo in (1, 3):  # RSA (encrypt-or-sign, sign-only)
        n, e = key.mpi(), key.mpi()
        if n.bit_length() > MAX_MODULUS_BITS or n < 3 or e < 3:
            return False
        value = sig.mpi_bytes()
        size = (n.bit_length() + 7) // 8
        if len(value) > size or not sig.done():
            return False
        public = rsa.RSAPublicNumbers(e, n).public_key()
        # Leading zero octets of the signature are stripped in the MPI: put them back.
        public.verify(value.rjust(size, b"\0"), digest, padding.PKCS1v15(), _prehashed(hash_algo))
        return True
    if pk_algo == 17:  # DSA
        p, q, g, y = key.mpi(), key.mpi(), key.mpi(), key.mpi()
        if p.bit_length() > MAX_MODULUS_BITS:
            return False
        r, s = sig.mpi(), sig.mpi()
        if not sig.done():
            return False
        dsa_key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        dsa_key.verify(encode_dss_signature(r, s), digest, _prehashed(hash_algo))
        return True
    if pk_algo == 19:  # ECDSA
        oid = key.oid()
        point = key.mpi_bytes()
        if oid not in _ECDSA_CURVES:
            return False
        curve = _ECDSA_CURVES[oid][2]()
        r, s = sig.mpi(), sig.mpi()
        if not sig.done():
            return False
        ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        ec_key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(_prehashed(hash_algo)))
        return True
    if pk_algo == 22:
        return _verify_legacy_eddsa(key, sig, digest)
    if pk_algo == 27:  # Ed25519 (RFC 9580 section 5.5.5.9)
        if len(key_material) != 32 or len(sig_material) != 64:
            return False
        ed25519.Ed25519PublicKey.from_public_bytes(key_material).verify(sig_material, digest)
        return True
    if pk_algo == 28:  # Ed448
        if len(key_material) != 57 or len(sig_material) != 114:
            return False
        ed448.Ed448PublicKey.from_public_bytes(key_material).verify(sig_material, digest)
        return True
    if pk_algo in _MLDSA:
        return _verify_mldsa(pk_algo, key_material, digest, sig_material)
    return False


def _verify_legacy_eddsa(key: _Reader, sig: _Reader, digest: bytes) -> bool:
    """EdDSA in the legacy encoding (RFC 9580 section 5.5.5.5), as GnuPG makes it."""
    oid = key.oid()
    point = key.mpi_bytes()
    first, second = sig.mpi_bytes(), sig.mpi_bytes()
    if not sig.done():
        return False
    if oid == _OID_ED25519 and len(point) == 33 and point[0] == 0x40:
        if len(first) > 32 or len(second) > 32:
            return False
        # r and s lose their leading zero octets as MPIs: pad each back to 32.
        native = first.rjust(32, b"\0") + second.rjust(32, b"\0")
        ed25519.Ed25519PublicKey.from_public_bytes(point[1:]).verify(native, digest)
        return True
    if oid == _OID_ED448 and len(point) == 58 and point[0] == 0x40:
        # Legacy Ed448 carries the whole native signature in the first MPI.
        if len(first) != 114:
            return False
        ed448.Ed448PublicKey.from_public_bytes(point[1:]).verify(first, digest)
        return True
    return False


def _verify_mldsa(pk_algo: int, key_material: bytes, digest: bytes, sig_material: bytes) -> bool:
    """Composite ML-DSA + EdDSA (draft-ietf-openpgp-pqc): both parts must verify the digest."""
    key_classic, key_pq, sig_classic, sig_pq = _MLDSA[pk_algo]
    if len(key_material) != key_classic + key_pq or len(sig_material) != sig_classic + sig_pq:
        return False
    ed_key, ml_key = key_material[:key_classic], key_material[key_classic:]
    ed_sig, ml_sig = sig_material[:sig_classic], sig_material[sig_classic:]
    if pk_algo == 30:
        ed25519.Ed25519PublicKey.from_public_bytes(ed_key).verify(ed_sig, digest)
        mldsa.MLDSA65PublicKey.from_public_bytes(ml_key).verify(ml_sig, digest)
    else:
        ed448.Ed448PublicKey.from_public_bytes(ed_key).verify(ed_sig, digest)
        mldsa.MLDSA87PublicKey.from_public_bytes(ml_key).verify(ml_sig, digest)
    return True
