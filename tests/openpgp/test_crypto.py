"""service.openpgp.crypto: every algorithm on signatures made here with `cryptography`, real
keys made by gpg, sq and pysequoia, and hostile input.

Layout: encoding helpers and one signer per algorithm; synthetic tests; a small test-only
packet parser (scaffolding, not the service's parser) and the real-key tests; fuzzing.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import pysequoia
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from pysequoia.packet import PacketPile

from service.openpgp import crypto
from tests.gpgutil import gnupg_home, gpg

DATA = Path(__file__).parent.parent / "data"

# ---------------------------------------------------------------------------------------------
# Encoding helpers and signers
# ---------------------------------------------------------------------------------------------

OIDS = {
    "nistp256": "2A8648CE3D030107",
    "nistp384": "2B81040022",
    "nistp521": "2B81040023",
    "brainpoolP256r1": "2B2403030208010107",
    "brainpoolP384r1": "2B240303020801010B",
    "brainpoolP512r1": "2B240303020801010D",
    "secp256k1": "2B8104000A",
    "ed25519": "2B06010401DA470F01",
    "cv25519": "2B060104019755010501",
    "ed448": "2B6571",
    "x448": "2B656F",
}
EC_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(),
    "nistp384": ec.SECP384R1(),
    "nistp521": ec.SECP521R1(),
    "brainpoolP256r1": ec.BrainpoolP256R1(),
    "brainpoolP384r1": ec.BrainpoolP384R1(),
    "brainpoolP512r1": ec.BrainpoolP512R1(),
    "secp256k1": ec.SECP256K1(),
}
HASHES: dict[int, hashes.HashAlgorithm] = {
    2: hashes.SHA1(),
    8: hashes.SHA256(),
    9: hashes.SHA384(),
    10: hashes.SHA512(),
    11: hashes.SHA224(),
    12: hashes.SHA3_256(),
    14: hashes.SHA3_512(),
}


def mpi(value: int | bytes) -> bytes:
    """A minimal MPI (RFC 9580 section 3.2)."""
    raw = (
        value.lstrip(b"\0")
        if isinstance(value, bytes)
        else value.to_bytes((value.bit_length() + 7) // 8, "big")
    )
    bits = (len(raw) - 1) * 8 + raw[0].bit_length() if raw else 0
    return bits.to_bytes(2, "big") + raw


def padded_mpi(raw: bytes) -> bytes:
    """Octets in MPI framing that keep leading zero octets (not minimal: GnuPG's SOS)."""
    return (len(raw) * 8).to_bytes(2, "big") + raw


def oid(name: str) -> bytes:
    raw = bytes.fromhex(OIDS[name])
    return bytes([len(raw)]) + raw


def _hash(hash_algo: int, data: bytes) -> bytes:
    state = crypto.hash_for(hash_algo)
    state.update(data)
    return state.digest()


@dataclass(frozen=True)
class Signer:
    """A private key and how OpenPGP writes its public key and signatures."""

    name: str
    algo: int
    key_material: bytes
    sign: Callable[[int, bytes], bytes]  # (hash id, digest) -> signature fields


@cache
def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def dsa_key(bits: int) -> dsa.DSAPrivateKey:
    return dsa.generate_private_key(key_size=bits)


def _rsa(algo: int, key: rsa.RSAPrivateKey) -> Signer:
    numbers = key.public_key().public_numbers()

    def sign(hash_algo: int, value: bytes) -> bytes:
        return mpi(key.sign(value, padding.PKCS1v15(), Prehashed(HASHES[hash_algo])))

    return Signer(f"rsa-algo{algo}", algo, mpi(numbers.n) + mpi(numbers.e), sign)


def _dsa(key: dsa.DSAPrivateKey) -> Signer:
    public = key.public_key().public_numbers()
    params = public.parameter_numbers

    def sign(hash_algo: int, value: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(value, Prehashed(HASHES[hash_algo])))
        return mpi(r) + mpi(s)

    material = mpi(params.p) + mpi(params.q) + mpi(params.g) + mpi(public.y)
    return Signer(f"dsa{key.key_size}", 17, material, sign)


def _ecdsa(curve: str) -> Signer:
    key = ec.generate_private_key(EC_CURVES[curve])
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def sign(hash_algo: int, value: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(value, ec.ECDSA(Prehashed(HASHES[hash_algo]))))
        return mpi(r) + mpi(s)

    return Signer(f"ecdsa-{curve}", 19, oid(curve) + mpi(point), sign)


def _eddsa_legacy_25519() -> Signer:
    key = ed25519.Ed25519PrivateKey.generate()

    def sign(_hash_algo: int, value: bytes) -> bytes:
        native = key.sign(value)
        return mpi(native[:32]) + mpi(native[32:])

    point = b"\x40" + key.public_key().public_bytes_raw()
    return Signer("eddsa-legacy-ed25519", 22, oid("ed25519") + mpi(point), sign)


def _eddsa_legacy_448() -> Signer:
    """GnuPG's encoding: prefixed native point; R and S as 57-octet strings."""
    key = ed448.Ed448PrivateKey.generate()

    def sign(_hash_algo: int, value: bytes) -> bytes:
        native = key.sign(value)
        return padded_mpi(native[:57]) + padded_mpi(native[57:])

    point = b"\x40" + key.public_key().public_bytes_raw()
    return Signer("eddsa-legacy-ed448", 22, oid("ed448") + mpi(point), sign)


def _ed25519() -> Signer:
    key = ed25519.Ed25519PrivateKey.generate()
    return Signer(
        "ed25519", 27, key.public_key().public_bytes_raw(), lambda _h, value: key.sign(value)
    )


def _ed448() -> Signer:
    key = ed448.Ed448PrivateKey.generate()
    return Signer(
        "ed448", 28, key.public_key().public_bytes_raw(), lambda _h, value: key.sign(value)
    )


def _mldsa65_ed25519() -> Signer:
    ed = ed25519.Ed25519PrivateKey.generate()
    ml = mldsa.MLDSA65PrivateKey.generate()
    public = ed.public_key().public_bytes_raw() + ml.public_key().public_bytes_raw()
    return Signer("mldsa65-ed25519", 30, public, lambda _h, value: ed.sign(value) + ml.sign(value))


def _mldsa87_ed448() -> Signer:
    ed = ed448.Ed448PrivateKey.generate()
    ml = mldsa.MLDSA87PrivateKey.generate()
    public = ed.public_key().public_bytes_raw() + ml.public_key().public_bytes_raw()
    return Signer("mldsa87-ed448", 31, public, lambda _h, value: ed.sign(value) + ml.sign(value))


MAKERS: dict[str, Callable[[], Signer]] = {
    "rsa2048": lambda: _rsa(1, rsa_key(2048)),
    "rsa2048-sign-only": lambda: _rsa(3, rsa_key(2048)),
    "dsa1024": lambda: _dsa(dsa_key(1024)),
    "dsa2048": lambda: _dsa(dsa_key(2048)),
    **{f"ecdsa-{curve}": partial(_ecdsa, curve) for curve in EC_CURVES},
    "eddsa-legacy-ed25519": _eddsa_legacy_25519,
    "eddsa-legacy-ed448": _eddsa_legacy_448,
    "ed25519": _ed25519,
    "ed448": _ed448,
    "mldsa65-ed25519": _mldsa65_ed25519,
    "mldsa87-ed448": _mldsa87_ed448,
}


@cache
def signer(name: str) -> Signer:
    return MAKERS[name]()


def hash_accepted(algo: int, hash_algo: int) -> bool:
    """RFC 9580 5.2.3.4-5 and draft-ietf-openpgp-pqc: minimum digest sizes for EdDSA/ML-DSA."""
    size = HASHES[hash_algo].digest_size
    return {27: size >= 32, 28: size >= 64, 30: size >= 32, 31: size >= 32}.get(algo, True)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ (1 << bit)]) + data[index + 1 :]


# ---------------------------------------------------------------------------------------------
# Synthetic signatures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_algo", sorted(HASHES))
@pytest.mark.parametrize("name", MAKERS)
def test_signature_verifies_for_every_algorithm_and_hash(name: str, hash_algo: int) -> None:
    made = signer(name)
    value = _hash(hash_algo, os.urandom(32))
    sig = made.sign(hash_algo, value)
    expected = hash_accepted(made.algo, hash_algo)
    assert crypto.verify_signature(made.algo, made.key_material, hash_algo, value, sig) is expected


@pytest.mark.parametrize("name", MAKERS)
def test_any_change_to_digest_signature_or_key_breaks_it(name: str) -> None:
    made = signer(name)
    value = _hash(10, os.urandom(32))
    sig = made.sign(10, value)
    key = made.key_material
    assert crypto.verify_signature(made.algo, key, 10, value, sig)
    rng = random.Random(name)
    # DSA and ECDSA use only the leftmost bits of a digest longer than the group order: the
    # first 20 octets are used by every key here.
    for index in range(20 if made.algo in (17, 19) else len(value)):
        assert not crypto.verify_signature(made.algo, key, 10, flip(value, index, 7), sig)
    # Every octet of short fields; a sample of long ones (ML-DSA keys and signatures).
    for field in ("sig", "key"):
        data = sig if field == "sig" else key
        indexes = range(len(data)) if len(data) <= 160 else rng.sample(range(len(data)), 160)
        for index in indexes:
            changed = flip(data, index, rng.randrange(8))
            args = (changed, sig) if field == "key" else (key, changed)
            assert not crypto.verify_signature(made.algo, args[0], 10, value, args[1]), (
                field,
                index,
            )
    for cut_sig in (sig[:-1], sig + b"\0", b""):
        assert not crypto.verify_signature(made.algo, key, 10, value, cut_sig)
    for cut_key in (key[:-1], key + b"\0", b""):
        assert not crypto.verify_signature(made.algo, cut_key, 10, value, sig)
    # Another key of the same algorithm (for DSA: with the same p, q and g) does not either.
    if made.algo in (1, 3):
        other = _rsa(made.algo, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif made.algo == 17:
        other = _dsa(dsa_key(crypto.key_strength(17, key)[0]).parameters().generate_private_key())
    else:
        other = MAKERS[name]()
    assert not crypto.verify_signature(made.algo, other.key_material, 10, value, sig)


def test_digest_of_the_wrong_length_for_its_hash_is_refused() -> None:
    made = signer("ed25519")
    value = _hash(8, b"data")
    sig = made.sign(8, value)
    assert crypto.verify_signature(27, made.key_material, 8, value, sig)
    # Same bytes claimed to be a SHA-512 digest, or an unknown/forbidden hash.
    for hash_algo in (10, 1, 3, 0, 99, -1):
        assert not crypto.verify_signature(27, made.key_material, hash_algo, value, sig)


def test_dsa_with_a_digest_longer_than_q_is_truncated() -> None:
    # FIPS 186-4 4.6: the leftmost bits of SHA-512 are used with a 2048/256 key.
    made = signer("dsa2048")
    assert crypto.key_strength(17, made.key_material) == (2048, None)
    for hash_algo in (10, 14, 9):
        value = _hash(hash_algo, os.urandom(16))
        sig = made.sign(hash_algo, value)
        assert crypto.verify_signature(17, made.key_material, hash_algo, value, sig)
        assert not crypto.verify_signature(17, made.key_material, hash_algo, flip(value, 31), sig)
        # Octets past q's 256 bits are not used at all.
        assert crypto.verify_signature(17, made.key_material, hash_algo, flip(value, 40), sig)


def test_degenerate_dsa_keys_are_refused() -> None:
    # OpenSSL does not check that g generates a subgroup of prime order q: with g = y = p - 1,
    # for one, anyone can make "signatures" (r = 1 or (p - 1) mod q, any s).
    key = dsa_key(1024)
    params = key.parameters().parameter_numbers()
    p, q, g, y = params.p, params.q, params.g, key.public_key().public_numbers().y
    value = _hash(8, b"dsa")
    r, s = decode_dss_signature(key.sign(value, Prehashed(hashes.SHA256())))
    good = mpi(r) + mpi(s)
    assert crypto.verify_signature(17, mpi(p) + mpi(q) + mpi(g) + mpi(y), 8, value, good)
    for bad_g, bad_y in ((p - 1, p - 1), (1, 1), (p - 1, y), (g, p - 1), (g, 1), (0, y)):
        material = mpi(p) + mpi(q) + mpi(bad_g) + mpi(bad_y)
        forged = [mpi(forged_r) + mpi(1) for forged_r in (1, (p - 1) % q)]
        for attempt in range(8):
            other = _hash(8, bytes([attempt]))
            assert not any(crypto.verify_signature(17, material, 8, other, f) for f in forged)
    # q too small, too large, or not prime; p over the DSA ceiling.
    for bad_q in (3, (1 << 300) + 1, q * 5, q + 2):
        material = mpi(p) + mpi(bad_q) + mpi(g) + mpi(y)
        assert not crypto.verify_signature(17, material, 8, value, good)
    material = mpi((1 << 4096) + 1) + mpi(q) + mpi(g) + mpi(y)
    assert not crypto.verify_signature(17, material, 8, value, good)


def test_miller_rabin() -> None:
    primes = [2, 3, 5, 7, 2**127 - 1, 2**255 - 19, dsa_key(1024).parameters().parameter_numbers().q]
    composites = [0, 1, 4, 9, 561, 41041, 3215031751, (2**61 - 1) * (2**89 - 1), 2**256 + 1]
    assert all(crypto._probably_prime(n) for n in primes)
    assert not any(crypto._probably_prime(n) for n in composites)


def test_rsa_signature_with_leading_zero_octets_is_padded_back() -> None:
    # About one signature in 256 starts with a zero octet; its MPI is one octet shorter.
    key = rsa_key(1024)
    numbers = key.public_key().public_numbers()
    material = mpi(numbers.n) + mpi(numbers.e)
    for attempt in range(4000):
        value = _hash(8, attempt.to_bytes(4, "big"))
        raw = key.sign(value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        if raw[0] == 0:
            assert len(mpi(raw)) < 2 + len(raw)
            assert crypto.verify_signature(1, material, 8, value, mpi(raw))
            # Not minimal (the zero octet kept, the bit count claiming it): malformed.
            assert not crypto.verify_signature(1, material, 8, value, padded_mpi(raw))
            return
    pytest.fail("no RSA signature with a leading zero octet in 4000 tries")


def test_eddsa_legacy_r_and_s_with_leading_zero_octets_are_padded_back() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    material = oid("ed25519") + mpi(b"\x40" + key.public_key().public_bytes_raw())
    seen = set()
    for attempt in range(5000):
        value = _hash(8, attempt.to_bytes(4, "big"))
        native = key.sign(value)
        for part, start in (("r", 0), ("s", 32)):
            if native[start] == 0 and part not in seen:
                seen.add(part)
                encoded = mpi(native[:32]) + mpi(native[32:])
                assert len(encoded) < 2 + 32 + 2 + 32
                assert crypto.verify_signature(22, material, 8, value, encoded)
                kept = padded_mpi(native[:32]) + padded_mpi(native[32:])
                assert not crypto.verify_signature(22, material, 8, value, kept)
        if seen == {"r", "s"}:
            return
    pytest.fail(f"only {seen} with a leading zero octet in 5000 tries")


def test_eddsa_legacy_ed448_accepts_leading_zeros_kept_or_stripped() -> None:
    key = ed448.Ed448PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    for point in (b"\x40" + raw, raw):
        material = oid("ed448") + padded_mpi(point)
        for attempt in range(3000):
            value = _hash(10, attempt.to_bytes(4, "big"))
            native = key.sign(value)
            if native[0] == 0:
                kept = padded_mpi(native[:57]) + padded_mpi(native[57:])
                stripped = mpi(native[:57]) + mpi(native[57:])
                assert crypto.verify_signature(22, material, 10, value, kept)
                assert crypto.verify_signature(22, material, 10, value, stripped)
                break
        else:
            pytest.fail("no Ed448 signature with a leading zero octet in 3000 tries")


def test_non_minimal_mpis_in_ecdsa_and_dsa_are_refused() -> None:
    for name in ("ecdsa-nistp256", "dsa1024"):
        made = signer(name)
        value = _hash(8, b"x")
        sig = made.sign(8, value)
        assert crypto.verify_signature(made.algo, made.key_material, 8, value, sig)
        # r with one more zero octet and the bit count of the longer field.
        bits = int.from_bytes(sig[:2], "big")
        size = (bits + 7) // 8
        longer = ((size + 1) * 8).to_bytes(2, "big") + b"\0" + sig[2 : 2 + size] + sig[2 + size :]
        assert not crypto.verify_signature(made.algo, made.key_material, 8, value, longer)
        # A bit count one too high for the value.
        wrong = (bits + 1).to_bytes(2, "big") + sig[2:]
        assert not crypto.verify_signature(made.algo, made.key_material, 8, value, wrong)


def test_composite_needs_both_parts_and_the_empty_context() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    ml = mldsa.MLDSA65PrivateKey.generate()
    key = ed.public_key().public_bytes_raw() + ml.public_key().public_bytes_raw()
    value = _hash(12, b"composite")
    good_ed, good_ml = ed.sign(value), ml.sign(value)
    assert crypto.verify_signature(30, key, 12, value, good_ed + good_ml)
    other = _hash(12, b"something else")
    assert not crypto.verify_signature(30, key, 12, value, ed.sign(other) + good_ml)
    assert not crypto.verify_signature(30, key, 12, value, good_ed + ml.sign(other))
    assert not crypto.verify_signature(30, key, 12, value, good_ed + ml.sign(value, b"ctx"))
    # The parts in the other order, or the ML-DSA part alone, are not a composite signature.
    assert not crypto.verify_signature(30, key, 12, value, good_ml + good_ed)
    assert not crypto.verify_signature(30, key[32:], 12, value, good_ml)
    # A key of the other composite does not fit.
    assert not crypto.verify_signature(31, key, 12, value, good_ed + good_ml)


def test_weak_hashes_are_refused_for_eddsa_and_composites() -> None:
    # RFC 9580 5.2.3.4-5: Ed25519 at least 256 bits, Ed448 at least 512 bits;
    # draft-ietf-openpgp-pqc: composite ML-DSA at least 256 bits. Legacy EdDSA has no minimum.
    cases = [("ed25519", 11), ("ed25519", 2), ("ed448", 8), ("ed448", 9), ("mldsa65-ed25519", 11)]
    for name, hash_algo in cases:
        made = signer(name)
        value = _hash(hash_algo, b"weak")
        sig = made.sign(hash_algo, value)
        assert not crypto.verify_signature(made.algo, made.key_material, hash_algo, value, sig)
    legacy = signer("eddsa-legacy-ed25519")
    value = _hash(2, b"old")
    assert crypto.verify_signature(22, legacy.key_material, 2, value, legacy.sign(2, value))


def _small_order_keys(size: int) -> list[bytes]:
    """Every encoding of a small-order point: both signs of x, and y reduced or not."""
    if size == 32:
        p, top = 2**255 - 19, 255
        d = -121665 * pow(121666, -1, p) % p
        # The order-8 points' y solves d*y^4 + 2*y^2 - 1 = 0 (their doubles have y = 0).
        ys = [0, 1, p - 1, crypto._Y_ORDER_8, p - crypto._Y_ORDER_8]
        assert all((d * y**4 + 2 * y**2 - 1) % p == 0 for y in ys[3:])
    else:
        p, top = 2**448 - 2**224 - 1, 455
        ys = [0, 1, p - 1]
    encodings = {y + k * p for y in ys for k in (0, 1) if y + k * p < 1 << top}
    return [(y | sign << top).to_bytes(size, "little") for y in encodings for sign in (0, 1)]


def test_small_order_eddsa_keys_are_refused() -> None:
    # OpenSSL verifies these "signatures", which anyone can make, for many messages.
    accepted_by_openssl = 0
    digests = [_hash(10, bytes([i])) for i in range(16)]
    for size, sig_size, public_key in (
        (32, 64, ed25519.Ed25519PublicKey),
        (57, 114, ed448.Ed448PublicKey),
    ):
        half = sig_size // 2
        identity = (1).to_bytes(half, "little")
        for key in _small_order_keys(size):
            for sig in (bytes(sig_size), identity + bytes(half), key + bytes(half)):
                for value in digests:
                    try:
                        public_key.from_public_bytes(key).verify(sig, value)
                        accepted_by_openssl += 1
                    except Exception:
                        pass
                    native_algo = 27 if size == 32 else 28
                    assert not crypto.verify_signature(native_algo, key, 10, value, sig)
                    curve = "ed25519" if size == 32 else "ed448"
                    legacy = oid(curve) + padded_mpi(b"\x40" + key)
                    halves = padded_mpi(sig[:half]) + padded_mpi(sig[half:])
                    assert not crypto.verify_signature(22, legacy, 10, value, halves)
    assert accepted_by_openssl > 100
    # In a composite, a good ML-DSA part does not make up for a small-order EdDSA key.
    ml = mldsa.MLDSA65PrivateKey.generate()
    value = digests[0]
    key = bytes(32) + ml.public_key().public_bytes_raw()
    for forged in (bytes(64), (1).to_bytes(32, "little") + bytes(32)):
        assert not crypto.verify_signature(30, key, 10, value, forged + ml.sign(value))


@pytest.mark.parametrize("algo", [0, 2, 16, 18, 20, 21, 23, 24, 25, 26, 29, 32, 33, 34, 35, 36, 99])
def test_encryption_only_and_unknown_algorithms_never_verify(algo: int) -> None:
    for name in ("ed25519", "rsa2048", "ecdsa-nistp256", "mldsa65-ed25519"):
        made = signer(name)
        value = _hash(10, b"x")
        sig = made.sign(10, value)
        assert not crypto.verify_signature(algo, made.key_material, 10, value, sig)


def test_ecdsa_point_must_be_uncompressed_and_on_the_curve() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    value = _hash(8, b"p")
    r, s = decode_dss_signature(key.sign(value, ec.ECDSA(Prehashed(hashes.SHA256()))))
    sig = mpi(r) + mpi(s)
    public = key.public_key()
    uncompressed = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    compressed = public.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    assert crypto.verify_signature(19, oid("nistp256") + mpi(uncompressed), 8, value, sig)
    assert not crypto.verify_signature(19, oid("nistp256") + mpi(compressed), 8, value, sig)
    off_curve = uncompressed[:-1] + bytes([uncompressed[-1] ^ 1])
    assert not crypto.verify_signature(19, oid("nistp256") + mpi(off_curve), 8, value, sig)
    # The right point under another curve's OID.
    assert not crypto.verify_signature(
        19, oid("brainpoolP256r1") + mpi(uncompressed), 8, value, sig
    )
    assert not crypto.verify_signature(19, oid("secp256k1") + mpi(uncompressed), 8, value, sig)


def test_huge_moduli_are_refused_fast() -> None:
    n = (1 << 20000) - 1
    start = time.perf_counter()
    assert not crypto.verify_signature(1, mpi(n) + mpi(65537), 8, _hash(8, b""), mpi(n - 2))
    just_over = (1 << 16384) + 1
    assert not crypto.verify_signature(1, mpi(just_over) + mpi(3), 8, _hash(8, b""), mpi(12345))
    # DSA: a huge p, and a huge q under a p the hand path would take.
    p = (1 << 20000) + 1
    assert not crypto.verify_signature(
        17, mpi(p) + mpi(3) + mpi(2) + mpi(5), 8, bytes(32), mpi(1) * 2
    )
    p768, q_huge = (1 << 767) + 1, (1 << 700) + 1
    dsa_material = mpi(p768) + mpi(q_huge) + mpi(2) + mpi(5)
    assert not crypto.verify_signature(17, dsa_material, 8, bytes(32), mpi(7) + mpi(9))
    assert time.perf_counter() - start < 0.5


def test_rsa_with_a_huge_exponent_stays_fast() -> None:
    key = rsa_key(2048)
    n = key.public_key().public_numbers().n
    e = n - 2  # odd, below n: a legal exponent, and as slow as they come
    value = _hash(8, b"e")
    start = time.perf_counter()
    for _ in range(5):
        assert not crypto.verify_signature(1, mpi(n) + mpi(e), 8, value, mpi(n // 3))
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------
# Hashes and key sizes
# ---------------------------------------------------------------------------------------------


def test_hash_table() -> None:
    for hash_algo, name in crypto.HASH_ALGORITHMS.items():
        state = crypto.hash_for(hash_algo)
        state.update(b"abc")
        expected = hashlib.new(name.lower().replace("-", "_"), b"abc").digest()
        assert state.digest() == expected
        assert state.digest_size == HASHES[hash_algo].digest_size
    assert crypto.hash_for(8) is not crypto.hash_for(8)
    assert set(crypto.HASH_ALGORITHMS) == {2, 8, 9, 10, 11, 12, 14}
    for refused in (0, 1, 3, 4, 7, 13, 15, 99, -1):
        with pytest.raises(crypto.UnsupportedAlgorithm):
            crypto.hash_for(refused)
    assert issubclass(crypto.UnsupportedAlgorithm, ValueError)
    assert issubclass(crypto.MalformedKeyMaterial, ValueError)


def test_v6_salt_sizes() -> None:
    expected = {8: 16, 9: 24, 10: 32, 11: 16, 12: 16, 14: 32}
    assert {h: crypto.v6_salt_size(h) for h in expected} == expected
    for refused in (1, 2, 3, 13, 99):
        with pytest.raises(crypto.UnsupportedAlgorithm):
            crypto.v6_salt_size(refused)


def _ecdh(curve: str, point: bytes) -> bytes:
    return oid(curve) + mpi(point) + bytes([3, 1, 8, 9])


KEY_SIZES = [
    (1, mpi((1 << 3071) | 1) + mpi(65537), (3072, None)),
    (2, mpi((1 << 4095) | 1) + mpi(65537), (4096, None)),
    (3, mpi((1 << 1023) | 1) + mpi(3), (1024, None)),
    (17, mpi((1 << 2047) | 1) + mpi((1 << 223) | 1) + mpi(2) + mpi(5), (2048, None)),
    (16, mpi((1 << 3071) | 1) + mpi(2) + mpi(5), (3072, None)),
    (20, mpi((1 << 1023) | 1) + mpi(2) + mpi(5), (1024, None)),
    (19, oid("nistp256") + mpi(b"\x04" + bytes(64)), (256, "nistp256")),
    (19, oid("nistp384") + mpi(b"\x04" + bytes(96)), (384, "nistp384")),
    (19, oid("nistp521") + mpi(b"\x04" + bytes(132)), (521, "nistp521")),
    (19, oid("brainpoolP256r1") + mpi(b"\x04" + bytes(64)), (256, "brainpoolP256r1")),
    (19, oid("brainpoolP384r1") + mpi(b"\x04" + bytes(96)), (384, "brainpoolP384r1")),
    (19, oid("brainpoolP512r1") + mpi(b"\x04" + bytes(128)), (512, "brainpoolP512r1")),
    (19, oid("secp256k1") + mpi(b"\x04" + bytes(64)), (256, "secp256k1")),
    (22, oid("ed25519") + mpi(b"\x40" + bytes(32)), (255, "ed25519")),
    (22, oid("ed448") + padded_mpi(b"\x40" + bytes(57)), (448, "ed448")),
    (22, oid("ed448") + padded_mpi(bytes(57)), (448, "ed448")),  # GnuPG: native, zeros kept
    (18, _ecdh("cv25519", b"\x40" + bytes(32)), (255, "cv25519")),
    (18, _ecdh("nistp384", b"\x04" + bytes(96)), (384, "nistp384")),
    (18, _ecdh("x448", b"\x40" + bytes(56)), (448, "x448")),
    (18, _ecdh("x448", b"\xff" * 56), (448, "x448")),
    (25, bytes(32), (255, "x25519")),
    (26, bytes(56), (448, "x448")),
    (27, bytes(32), (255, "ed25519")),
    (28, bytes(57), (448, "ed448")),
    (30, bytes(32 + 1952), (0, "ML-DSA-65+Ed25519")),
    (31, bytes(57 + 2592), (0, "ML-DSA-87+Ed448")),
    (32, bytes(32), (0, "SLH-DSA-SHAKE-128s")),
    (33, bytes(32), (0, "SLH-DSA-SHAKE-128f")),
    (34, bytes(64), (0, "SLH-DSA-SHAKE-256s")),
    (35, bytes(32 + 1184), (0, "ML-KEM-768+X25519")),
    (36, bytes(56 + 1568), (0, "ML-KEM-1024+X448")),
    # Unknown algorithms are not an error; unknown curves are named by their OID.
    (99, b"anything", (0, None)),
    (19, bytes([3, 0x2A, 0x03, 0x04]) + mpi(b"\x04\x01"), (0, "1.2.3.4")),
]


@pytest.mark.parametrize(
    ("algo", "material", "expected"),
    KEY_SIZES,
    ids=[f"algo{case[0]}-{case[2][1]}-{n}" for n, case in enumerate(KEY_SIZES)],
)
def test_key_strength(algo: int, material: bytes, expected: tuple[int, str | None]) -> None:
    assert crypto.key_strength(algo, material) == expected


def test_key_strength_of_keys_made_here() -> None:
    expected = {
        "rsa2048": (2048, None),
        "dsa1024": (1024, None),
        "ecdsa-nistp521": (521, "nistp521"),
        "ecdsa-brainpoolP512r1": (512, "brainpoolP512r1"),
        "eddsa-legacy-ed25519": (255, "ed25519"),
        "mldsa87-ed448": (0, "ML-DSA-87+Ed448"),
    }
    for name, strength in expected.items():
        made = signer(name)
        assert crypto.key_strength(made.algo, made.key_material) == strength


MALFORMED = [
    (1, b""),
    (1, b"\x08\x00"),  # bit count, no octets
    (1, mpi(1 << 2047)),  # no exponent
    (1, mpi(1 << 2047) + mpi(3) + b"\0"),  # trailing octet
    (1, b"\x08\x00\x01" + mpi(3)),  # claims 2048 bits, holds 8
    (1, b"\x00\x0a\x01\x00" + mpi(3)),  # 10 bits claimed for 256, which has 9
    (1, b"\x00\x10\x00\xff" + mpi(3)),  # a leading zero octet
    (17, mpi(5) + mpi(3) + mpi(2)),  # DSA without y
    (16, mpi(5) + mpi(3)),  # ElGamal without y
    (19, b""),
    (19, b"\x00" + mpi(b"\x04" + bytes(64))),  # OID length 0 is reserved
    (19, b"\xff" + bytes(255) + mpi(b"\x04")),  # and so is 255
    (19, oid("nistp256")),  # no point
    (19, oid("nistp256") + mpi(b"\x04" + bytes(63))),  # short point
    (19, oid("nistp256") + mpi(b"\x02" + bytes(32))),  # compressed point
    (22, oid("ed25519") + mpi(b"\x41" + bytes(32))),  # not the 0x40 prefix
    (22, oid("ed448") + padded_mpi(bytes(56))),  # one octet short of either form
    (22, oid("ed448") + padded_mpi(b"\x41" + bytes(57))),
    (18, oid("cv25519") + mpi(b"\x40" + bytes(32))),  # ECDH without KDF parameters
    (18, oid("cv25519") + mpi(b"\x40" + bytes(32)) + bytes([3, 1, 8])),  # cut off
    (18, oid("cv25519") + mpi(b"\x40" + bytes(32)) + bytes([2, 1, 8])),  # too short
    (19, bytes([3, 0x2A, 0x03, 0x84]) + mpi(b"\x04")),  # OID cut off inside an arc
    (25, bytes(31)),
    (26, bytes(57)),
    (27, bytes(33)),
    (28, bytes(56)),
    (30, bytes(32 + 1951)),
    (31, bytes(57 + 2593)),
    (35, bytes(32 + 1183)),
    (36, bytes(56 + 1569)),
    (32, bytes(64)),
]


@pytest.mark.parametrize(
    ("algo", "material"), MALFORMED, ids=[f"algo{case[0]}-{n}" for n, case in enumerate(MALFORMED)]
)
def test_key_strength_refuses_damaged_material(algo: int, material: bytes) -> None:
    with pytest.raises(crypto.MalformedKeyMaterial):
        crypto.key_strength(algo, material)


_N = (1 << 3071) | 1
REFUSED = [
    # RSA exponents that are even, below 3, or over 2^32 (slow to verify by).
    (1, mpi(_N) + mpi(65538), "exponent"),
    (1, mpi(_N) + mpi(1), "exponent"),
    (3, mpi(_N) + mpi(2**32 + 1), "exponent"),
    (2, mpi(_N) + mpi(_N - 2), "exponent"),
    # DSA sizes OpenSSL does not verify.
    (17, mpi((1 << 1535) | 1) + mpi((1 << 255) | 1) + mpi(2) + mpi(5), "1536-bit prime"),
    (17, mpi((1 << 767) | 1) + mpi((1 << 159) | 1) + mpi(2) + mpi(5), "768-bit prime"),
    (17, mpi((1 << 2047) | 1) + mpi((1 << 191) | 1) + mpi(2) + mpi(5), "192-bit subgroup"),
    (17, mpi((1 << 8191) | 1) + mpi((1 << 255) | 1) + mpi(2) + mpi(5), "8192-bit prime"),
]


@pytest.mark.parametrize(("algo", "material", "sentence"), REFUSED)
def test_key_strength_refuses_keys_that_are_slow_to_verify_by(
    algo: int, material: bytes, sentence: str
) -> None:
    with pytest.raises(crypto.RefusedKeyMaterial, match=sentence):
        crypto.key_strength(algo, material)
    # And verification by such a key is refused before any arithmetic.
    assert not crypto.verify_signature(algo, material, 8, bytes(32), mpi(3) + mpi(5))


def test_rsa_exponents_of_real_keys_are_taken() -> None:
    # 3, 17, 35, 41, 257, 65537, and the random odd 32-bit exponents of three subkeys in
    # Debian's keyring; 2^32 - 1 is the largest odd one accepted.
    for exponent in (3, 17, 35, 41, 257, 65537, 2437751197, 3413108609, 2**32 - 1):
        assert crypto.key_strength(1, mpi(_N) + mpi(exponent)) == (3072, None)


# ---------------------------------------------------------------------------------------------
# Real keys. Test scaffolding: a minimal parser of key and signature packets, just enough to
# compute the digest of RFC 9580 section 5.2.4. It is deliberately separate from the service's
# parser, so that the two cannot share a mistake.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedKey:
    body: bytes
    version: int
    algo: int
    material: bytes

    @property
    def hashed_form(self) -> bytes:
        if self.version == 6:
            return b"\x9b" + len(self.body).to_bytes(4, "big") + self.body
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body

    @property
    def fingerprint(self) -> bytes:
        if self.version == 6:
            return hashlib.sha256(self.hashed_form).digest()
        return hashlib.sha1(self.hashed_form, usedforsecurity=False).digest()


@dataclass(frozen=True)
class ParsedSig:
    version: int
    sig_type: int
    algo: int
    hash_algo: int
    hashed: bytes  # the signature's own hashed fields: version .. hashed subpackets
    subpackets: bytes  # hashed then unhashed subpacket areas, for the issuer
    prefix: bytes
    salt: bytes
    material: bytes


def parse_key(body: bytes) -> ParsedKey:
    version, algo = body[0], body[5]
    assert version in (4, 6), version
    material = body[6:]
    if version == 6:
        assert int.from_bytes(material[:4], "big") == len(material) - 4
        material = material[4:]
    return ParsedKey(body, version, algo, material)


def parse_sig(body: bytes) -> ParsedSig:
    version = body[0]
    assert version in (4, 6), version
    size = 2 if version == 4 else 4
    hashed_len = int.from_bytes(body[4 : 4 + size], "big")
    end = 4 + size + hashed_len
    unhashed_len = int.from_bytes(body[end : end + size], "big")
    unhashed = body[end + size : end + size + unhashed_len]
    pos = end + size + unhashed_len
    prefix = body[pos : pos + 2]
    pos += 2
    salt = b""
    if version == 6:
        salt = body[pos + 1 : pos + 1 + body[pos]]
        pos += 1 + body[pos]
        assert len(salt) == crypto.v6_salt_size(body[3])
    return ParsedSig(
        version=version,
        sig_type=body[1],
        algo=body[2],
        hash_algo=body[3],
        hashed=body[:end],
        subpackets=body[4 + size : end] + unhashed,
        prefix=prefix,
        salt=salt,
        material=body[pos:],
    )


def issued_by(sig: ParsedSig, key: ParsedKey) -> bool:
    """Whether an issuer (fingerprint 33 or key ID 16) subpacket names ``key``."""
    area, pos = sig.subpackets, 0
    key_id = key.fingerprint[:8] if key.version == 6 else key.fingerprint[-8:]
    while pos < len(area):
        first = area[pos]
        if first < 192:
            length, pos = first, pos + 1
        elif first < 255:
            length, pos = ((first - 192) << 8) + area[pos + 1] + 192, pos + 2
        else:
            length, pos = int.from_bytes(area[pos + 1 : pos + 5], "big"), pos + 5
        kind, value = area[pos] & 0x7F, area[pos + 1 : pos + length]
        if (kind == 33 and value[1:] == key.fingerprint) or (kind == 16 and value == key_id):
            return True
        pos += length
    return False


def signature_digest(sig: ParsedSig, key: ParsedKey, user_id: bytes | None) -> bytes:
    """RFC 9580 5.2.4: [salt] key [user ID] hashed fields, trailer (version, 0xFF, length)."""
    state = crypto.hash_for(sig.hash_algo)
    state.update(sig.salt)
    state.update(key.hashed_form)
    if user_id is not None:
        state.update(b"\xb4" + len(user_id).to_bytes(4, "big") + user_id)
    state.update(sig.hashed)
    state.update(bytes([sig.version, 0xFF]) + len(sig.hashed).to_bytes(4, "big"))
    return state.digest()


@dataclass(frozen=True)
class SelfSig:
    key: ParsedKey
    user_id: bytes | None  # None for a direct-key signature
    sig: ParsedSig


def self_signatures(data: bytes) -> tuple[ParsedKey, list[SelfSig]]:
    """The primary key and its user ID certifications and direct-key signatures."""
    key: ParsedKey | None = None
    user_id: bytes | None = None
    found: list[SelfSig] = []
    for packet in PacketPile.from_bytes(data):
        tag = str(packet.tag).rsplit(".", 1)[-1]
        if tag in ("PublicKey", "SecretKey") and key is None:
            key = parse_key(packet.body)
        elif tag == "UserID":
            user_id = packet.body
        elif tag in ("PublicSubkey", "SecretSubkey", "UserAttribute"):
            break
        elif tag == "Signature" and key is not None:
            sig = parse_sig(packet.body)
            certification = user_id is not None and 0x10 <= sig.sig_type <= 0x13
            direct = user_id is None and sig.sig_type == 0x1F
            if (certification or direct) and issued_by(sig, key):
                found.append(SelfSig(key, user_id, sig))
    assert key is not None
    return key, found


def check_real_key(data: bytes, expected_algo: int) -> tuple[ParsedKey, int]:
    """Every self-signature verifies; with a user ID octet changed, none does."""
    key, sigs = self_signatures(data)
    assert key.algo == expected_algo
    assert any(s.user_id is not None for s in sigs), "no user ID certification found"
    for item in sigs:
        sig = item.sig
        assert sig.algo == key.algo
        value = signature_digest(sig, key, item.user_id)
        assert value[:2] == sig.prefix, "the test parser computed the wrong digest"
        assert crypto.verify_signature(key.algo, key.material, sig.hash_algo, value, sig.material)
        if item.user_id is not None:
            changed = flip(item.user_id, 0, 5)
            other = signature_digest(sig, key, changed)
            assert other != value
            assert not crypto.verify_signature(
                key.algo, key.material, sig.hash_algo, other, sig.material
            )
    return key, len(sigs)


GPG_ALGOS = {
    "rsa3072": 1,
    "rsa1024": 1,
    "dsa2048": 17,
    "ed25519": 22,
    "nistp256": 19,
    "nistp384": 19,
    "nistp521": 19,
    "brainpoolP256r1": 19,
    "brainpoolP384r1": 19,
    "brainpoolP512r1": 19,
    "secp256k1": 19,
}
HAVE_GPG = shutil.which("gpg") is not None
HAVE_SQ = shutil.which("sq") is not None


@pytest.fixture(scope="module")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from gnupg_home(tmp_path_factory.mktemp("crypto") / "gnupg")


def gpg_make(home: Path, algo: str) -> tuple[bytes, str]:
    """A new gpg key (cert+sign primary, no subkey); its export and gpg's colon listing."""
    user_id = f"{algo} <{algo.lower()}@example.org>"
    made = gpg(home, "--passphrase", "", "--quick-gen-key", user_id, algo, "cert,sign", "never")
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    exported = gpg(home, "--export", f"={user_id}")
    listing = gpg(home, "--list-keys", f"={user_id}")
    return exported.stdout, listing.stdout.decode()


def gpg_make_dsa768(home: Path) -> bytes:
    # --quick-gen-key rounds DSA sizes to 2048; a parameter file keeps 768 (GnuPG 1.x-era size).
    params = (
        b"Key-Type: DSA\nKey-Length: 768\nName-Real: Dee\nName-Email: dee@example.org\n"
        b"Expire-Date: 0\n%no-protection\n%commit\n"
    )
    made = gpg(home, "--gen-key", stdin=params)
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    return gpg(home, "--export", "=Dee <dee@example.org>").stdout


@pytest.mark.gpg
@pytest.mark.skipif(not HAVE_GPG, reason="gpg is not installed")
@pytest.mark.parametrize("algo", GPG_ALGOS)
def test_gpg_made_keys_verify(gpg_home: Path, algo: str) -> None:
    data, listing = gpg_make(gpg_home, algo)
    key, _count = check_real_key(data, GPG_ALGOS[algo])
    # key_strength agrees with what gpg reports: size (field 3) and curve (field 17).
    pub = next(line.split(":") for line in listing.splitlines() if line.startswith("pub:"))
    assert crypto.key_strength(key.algo, key.material) == (int(pub[2]), pub[16] or None)


@pytest.mark.gpg
@pytest.mark.skipif(not HAVE_GPG, reason="gpg is not installed")
def test_gpg_made_768_bit_dsa_key_is_refused(gpg_home: Path) -> None:
    # OpenSSL does not verify this size; doing it by hand, in Python, is what made such keys
    # a way to keep a worker (or, for a lone signature, the server) busy.
    key, sigs = self_signatures(gpg_make_dsa768(gpg_home))
    with pytest.raises(crypto.RefusedKeyMaterial, match="768-bit prime"):
        crypto.key_strength(17, key.material)
    for item in sigs:
        value = signature_digest(item.sig, key, item.user_id)
        assert value[:2] == item.sig.prefix
        assert not crypto.verify_signature(
            17, key.material, item.sig.hash_algo, value, item.sig.material
        )


SQ_SUITES = {"cv25519": 22, "rsa3k": 1}


@pytest.mark.sq
@pytest.mark.skipif(not HAVE_SQ, reason="sq is not installed")
@pytest.mark.parametrize("suite", SQ_SUITES)
def test_sq_made_keys_verify(tmp_path: Path, suite: str) -> None:
    # sq 0.27 offers rsa3k, rsa4k and cv25519 (no NIST curves: pysequoia covers those below).
    secret = tmp_path / "key.pgp"
    command = ["sq", "key", "generate", "--userid", "A <a@example.org>", "--cipher-suite", suite]
    subprocess.run(
        [*command, "--export", str(secret)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cert = subprocess.run(
        ["sq", "key", "extract-cert", str(secret)], check=True, capture_output=True, timeout=60
    ).stdout
    check_real_key(cert, SQ_SUITES[suite])


PYSEQUOIA_SUITES = [
    # (profile, cipher suite, expected primary algorithm)
    ("RFC4880", "Cv25519", 22),
    ("RFC4880", "Cv448", 28),
    ("RFC4880", "P256", 19),
    ("RFC4880", "P384", 19),
    ("RFC4880", "P521", 19),
    ("RFC4880", "RSA2k", 1),
    ("RFC9580", "Cv25519", 27),
    ("RFC9580", "Cv448", 28),
    ("RFC9580", "P256", 19),
    ("RFC9580", "P521", 19),
    ("RFC9580", "RSA2k", 1),
    ("RFC9580", "MLDSA65_Ed25519", 30),
    ("RFC9580", "MLDSA87_Ed448", 31),
]


@pytest.mark.parametrize(("profile", "suite", "algo"), PYSEQUOIA_SUITES)
def test_pysequoia_made_keys_verify(profile: str, suite: str, algo: int) -> None:
    tsk = pysequoia.Tsk.generate(
        user_id="A <a@example.org>",
        profile=getattr(pysequoia.Profile, profile),
        cipher_suite=getattr(pysequoia.CipherSuite, suite),
    )
    key, count = check_real_key(bytes(tsk.extract_certificate()), algo)
    assert key.version == (6 if profile == "RFC9580" else 4)
    if key.version == 6:
        assert count >= 2  # the direct-key signature as well as the certification


# Committed keys (tests/data/make_keys.py): gpg's DSA/ElGamal, SHA-1-only and brainpool keys
# and Sequoia's v6 keys run even where no gpg is installed.
FIXTURES = {
    "dsa_elg.asc": 17,
    "sha1_only.asc": 1,
    "brainpool.asc": 19,
    "nistp256.asc": 19,
    "rsa_multi_uid.asc": 1,
    "ed25519.asc": 22,
    "with_certification.asc": 22,
    "weird_uid.asc": 22,
    "v6_ed25519.asc": 27,
    "v6_pq.asc": 30,
}


@pytest.mark.parametrize("name", FIXTURES)
def test_committed_real_keys_verify(name: str) -> None:
    check_real_key((DATA / name).read_bytes(), FIXTURES[name])


# ---------------------------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------------------------


def _never_raises(algo: int, key: bytes, hash_algo: int, value: bytes, sig: bytes) -> None:
    assert crypto.verify_signature(algo, key, hash_algo, value, sig) in (True, False)
    try:
        bits, name = crypto.key_strength(algo, key)
    except crypto.MalformedKeyMaterial:
        return
    assert bits >= 0
    assert name is None or isinstance(name, str)


@settings(max_examples=400, deadline=None)
@given(
    algo=st.integers(0, 40),
    key=st.binary(max_size=300),
    hash_algo=st.sampled_from([*HASHES, 0, 1, 3, 255]),
    value=st.binary(max_size=64),
    sig=st.binary(max_size=300),
)
def test_random_bytes_never_raise(
    algo: int, key: bytes, hash_algo: int, value: bytes, sig: bytes
) -> None:
    _never_raises(algo, key, hash_algo, value, sig)


def _mpis(draw: st.DrawFn, count: int, max_bytes: int) -> bytes:
    """Well-framed MPIs, sometimes with a wrong bit count, to get past the framing checks."""
    out = b""
    for _ in range(count):
        raw = draw(st.binary(max_size=max_bytes))
        out += draw(st.sampled_from([mpi(raw), padded_mpi(raw)])) if raw else mpi(0)
    return out


@st.composite
def structured(draw: st.DrawFn) -> tuple[int, bytes, bytes]:
    """Inputs shaped like real ones, so that the cryptographic code itself gets garbage."""
    algo = draw(st.sampled_from([1, 3, 16, 17, 18, 19, 20, 22, 25, 26, 27, 28, 30, 31, 35]))
    if algo in (1, 3):
        return algo, _mpis(draw, 2, 300), _mpis(draw, 1, 300)
    if algo in (16, 17, 20):
        return algo, _mpis(draw, 4 if algo == 17 else 3, 140), _mpis(draw, 2, 40)
    if algo in (18, 19, 22):
        curve = draw(st.sampled_from(sorted(OIDS)))
        size = draw(st.sampled_from([33, 57, 58, 65, 97, 129, 133]))
        prefix = draw(st.sampled_from([b"\x04", b"\x40", b"\x02"]))
        point = prefix + draw(st.binary(min_size=size - 1, max_size=size - 1))
        kdf = bytes([3, 1, 8, 9]) if algo == 18 else b""
        return algo, oid(curve) + mpi(point) + kdf, _mpis(draw, 2, 70)
    key_size, sig_size = {
        25: (32, 64),
        26: (56, 64),
        27: (32, 64),
        28: (57, 114),
        30: (32 + 1952, 64 + 3309),
        31: (57 + 2592, 114 + 4627),
        35: (32 + 1184, 64),
    }[algo]
    key = draw(st.binary(min_size=key_size, max_size=key_size))
    return algo, key, draw(st.binary(min_size=sig_size, max_size=sig_size))


@settings(max_examples=400, deadline=None)
@given(case=structured(), hash_algo=st.sampled_from(sorted(HASHES)))
def test_structured_garbage_never_raises(case: tuple[int, bytes, bytes], hash_algo: int) -> None:
    algo, key, sig = case
    value = os.urandom(HASHES[hash_algo].digest_size)
    _never_raises(algo, key, hash_algo, value, sig)
    assert not crypto.verify_signature(algo, key, hash_algo, value, sig)


@cache
def fixed_signature(name: str) -> tuple[bytes, bytes]:
    """One digest and signature per signer (signing is randomised; Hypothesis must replay)."""
    value = _hash(10, b"fuzz")
    return value, signer(name).sign(10, value)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(MAKERS)))
def test_mutated_real_signatures_never_raise(data: st.DataObject, name: str) -> None:
    made = signer(name)
    value, sig = fixed_signature(name)
    key = made.key_material
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(["key", "sig"]))
        blob = key if target == "key" else sig
        index = data.draw(st.integers(0, len(blob)))
        cut = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if cut == "flip" and index < len(blob):
            blob = flip(blob, index, data.draw(st.integers(0, 7)))
        elif cut == "cut":
            blob = blob[:index]
        else:
            blob = blob[:index] + data.draw(st.binary(min_size=1, max_size=3)) + blob[index:]
        key, sig = (blob, sig) if target == "key" else (key, blob)
    _never_raises(made.algo, key, 10, value, sig)
