"""Signature verification for every algorithm, on keys and signatures built here.

Real keys made by gpg and pysequoia are covered in test_cert.py (they only load if every
self-signature verifies).
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from service.openpgp import crypto


def mpi(value: int | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.to_bytes((value.bit_length() + 7) // 8)
    raw = raw.lstrip(b"\0")
    bits = len(raw) * 8 - (8 - raw[0].bit_length()) if raw else 0
    return bits.to_bytes(2, "big") + raw


def oid(hex_oid: str) -> bytes:
    raw = bytes.fromhex(hex_oid)
    return bytes([len(raw)]) + raw


DIGEST = hashlib.sha256(b"what was signed").digest()


def _rsa() -> tuple[int, bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    sig = key.sign(DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return 1, mpi(numbers.n) + mpi(numbers.e), mpi(sig)


def _dsa() -> tuple[int, bytes, bytes]:
    key = dsa.generate_private_key(key_size=2048)
    pub = key.public_key().public_numbers()
    r, s = decode_dss_signature(key.sign(DIGEST, Prehashed(hashes.SHA256())))
    params = pub.parameter_numbers
    return 17, mpi(params.p) + mpi(params.q) + mpi(params.g) + mpi(pub.y), mpi(r) + mpi(s)


def _ecdsa(curve: ec.EllipticCurve, curve_oid: str) -> tuple[int, bytes, bytes]:
    key = ec.generate_private_key(curve)
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    r, s = decode_dss_signature(key.sign(DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))))
    return 19, oid(curve_oid) + mpi(point), mpi(r) + mpi(s)


def _eddsa_legacy() -> tuple[int, bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    sig = key.sign(DIGEST)
    public = key.public_key().public_bytes_raw()
    return 22, oid("2B06010401DA470F01") + mpi(b"\x40" + public), mpi(sig[:32]) + mpi(sig[32:])


def _ed25519() -> tuple[int, bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    return 27, key.public_key().public_bytes_raw(), key.sign(DIGEST)


def _ed448() -> tuple[int, bytes, bytes]:
    key = ed448.Ed448PrivateKey.generate()
    return 28, key.public_key().public_bytes_raw(), key.sign(DIGEST)


def _mldsa65() -> tuple[int, bytes, bytes]:
    ed = ed25519.Ed25519PrivateKey.generate()
    ml = mldsa.MLDSA65PrivateKey.generate()
    public = ed.public_key().public_bytes_raw() + ml.public_key().public_bytes_raw()
    return 30, public, ed.sign(DIGEST) + ml.sign(DIGEST)


MAKERS = {
    "rsa": _rsa,
    "dsa": _dsa,
    "p256": lambda: _ecdsa(ec.SECP256R1(), "2A8648CE3D030107"),
    "p384": lambda: _ecdsa(ec.SECP384R1(), "2B81040022"),
    "p521": lambda: _ecdsa(ec.SECP521R1(), "2B81040023"),
    "brainpool256": lambda: _ecdsa(ec.BrainpoolP256R1(), "2B2403030208010107"),
    "eddsa-legacy": _eddsa_legacy,
    "ed25519": _ed25519,
    "ed448": _ed448,
    "mldsa65-ed25519": _mldsa65,
}


@pytest.mark.parametrize("name", MAKERS)
def test_good_signature_verifies_and_any_change_breaks_it(name: str) -> None:
    algo, key, sig = MAKERS[name]()
    assert crypto.verify_signature(algo, key, 8, DIGEST, sig)
    other = bytes([DIGEST[0] ^ 1]) + DIGEST[1:]
    assert not crypto.verify_signature(algo, key, 8, other, sig)
    broken = sig[:-1] + bytes([sig[-1] ^ 1])
    assert not crypto.verify_signature(algo, key, 8, DIGEST, broken)
    assert not crypto.verify_signature(algo, key, 8, DIGEST, sig[:-3])
    assert not crypto.verify_signature(algo, key[:-1] + bytes([key[-1] ^ 1]), 8, DIGEST, sig)


def test_eddsa_signature_with_stripped_leading_zeros_verifies() -> None:
    # About one signature in 128 has r or s starting with a zero octet; GnuPG strips it.
    key = ed25519.Ed25519PrivateKey.generate()
    public = oid("2B06010401DA470F01") + mpi(b"\x40" + key.public_key().public_bytes_raw())
    for attempt in range(2000):
        digest = hashlib.sha256(attempt.to_bytes(4, "big")).digest()
        sig = key.sign(digest)
        if sig[0] == 0 or sig[32] == 0:
            encoded = mpi(sig[:32]) + mpi(sig[32:])
            assert len(encoded) < 2 + 32 + 2 + 32
            assert crypto.verify_signature(22, public, 8, digest, encoded)
            return
    pytest.fail("no signature with a leading zero octet in 2000 tries")


def test_huge_rsa_modulus_is_refused_without_work() -> None:
    n = (1 << 20000) - 1
    assert not crypto.verify_signature(1, mpi(n) + mpi(65537), 8, DIGEST, mpi(12345))


def test_unknown_and_encryption_algorithms_never_verify() -> None:
    _algo, key, sig = _ed25519()
    for other in (2, 16, 18, 25, 99):
        assert not crypto.verify_signature(other, key, 8, DIGEST, sig)


def test_hash_table() -> None:
    assert crypto.hash_for(8).name == "sha256"
    assert crypto.v6_salt_size(10) == 32
    for forbidden in (1, 3, 0, 99):
        with pytest.raises(crypto.UnsupportedAlgorithm):
            crypto.hash_for(forbidden)


def test_key_strength() -> None:
    assert crypto.key_strength(*_rsa()[:2]) == (2048, None)
    assert crypto.key_strength(27, os.urandom(32)) == (255, "ed25519")
    with pytest.raises(crypto.MalformedKeyMaterial):
        crypto.key_strength(27, os.urandom(31))
    with pytest.raises(crypto.MalformedKeyMaterial):
        crypto.key_strength(1, b"\x08\x00\x01")


@settings(max_examples=300, deadline=None)
@given(
    algo=st.integers(0, 40),
    key=st.binary(max_size=200),
    sig=st.binary(max_size=200),
    digest=st.binary(min_size=0, max_size=64),
)
def test_random_bytes_never_raise(algo: int, key: bytes, sig: bytes, digest: bytes) -> None:
    assert crypto.verify_signature(algo, key, 8, digest, sig) in (True, False)
    with contextlib.suppress(crypto.MalformedKeyMaterial):
        crypto.key_strength(algo, key)
