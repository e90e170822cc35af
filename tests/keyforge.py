"""Hand-made v4 OpenPGP keys for tests: key packets, user IDs and self-signatures built field
by field (RFC 9580 sections 5.2 and 5.5) and signed with `cryptography`, so that a test can
make what no real client would (huge exponents, odd DSA sizes, thousands of signatures).

Scaffolding only: the service never imports this.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from service.openpgp.packets import Packet, SigType, Tag, serialize, user_id_hash_prefix

SHA256 = 8
CREATED = 1_700_000_000
ED25519_OID = bytes.fromhex("092B06010401DA470F01")
CV25519_OID = bytes.fromhex("0A2B060104019755010501")


def mpi(value: int) -> bytes:
    """A minimal MPI (RFC 9580 section 3.2)."""
    return value.bit_length().to_bytes(2, "big") + value.to_bytes((value.bit_length() + 7) // 8)


def subpacket(kind: int, body: bytes, *, critical: bool = False) -> bytes:
    size = len(body) + 1
    header = bytes([size]) if size < 192 else b"\xff" + size.to_bytes(4, "big")
    return header + bytes([kind | (0x80 if critical else 0)]) + body


@dataclass(frozen=True)
class Key:
    """A v4 key packet and, when we made the key, a way to sign with it."""

    algorithm: int
    material: bytes
    sign: Callable[[bytes], bytes] | None = None  # SHA-256 digest -> signature fields
    created: int = CREATED

    @property
    def body(self) -> bytes:
        return b"\x04" + self.created.to_bytes(4, "big") + bytes([self.algorithm]) + self.material

    @property
    def hash_prefix(self) -> bytes:
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha1(self.hash_prefix, usedforsecurity=False).digest()


def rsa_key(bits: int = 2048, exponent: int = 65537) -> Key:
    """An RSA key; with an exponent `cryptography` cannot make, the key cannot sign."""
    if exponent in (3, 65537):
        private = rsa.generate_private_key(exponent, bits)
        numbers = private.public_key().public_numbers()

        def sign(digest: bytes) -> bytes:
            return mpi(
                int.from_bytes(private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())))
            )

        return Key(1, mpi(numbers.n) + mpi(numbers.e), sign)
    modulus = rsa.generate_private_key(65537, bits).public_key().public_numbers().n
    return Key(1, mpi(modulus) + mpi(exponent))


def dsa_key(parameters: dsa.DSAParameters) -> Key:
    private = parameters.generate_private_key()
    numbers = private.public_key().public_numbers()
    params = numbers.parameter_numbers

    def sign(digest: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(digest, Prehashed(hashes.SHA256())))
        return mpi(r) + mpi(s)

    return Key(17, mpi(params.p) + mpi(params.q) + mpi(params.g) + mpi(numbers.y), sign)


def ed25519_key() -> Key:
    """An EdDSALegacy (algorithm 22) key, as GnuPG 2.2 makes them."""
    private = ed25519.Ed25519PrivateKey.generate()
    point = b"\x40" + private.public_key().public_bytes_raw()

    def sign(digest: bytes) -> bytes:
        made = private.sign(digest)
        return mpi(int.from_bytes(made[:32])) + mpi(int.from_bytes(made[32:]))

    return Key(22, ED25519_OID + mpi(int.from_bytes(point)), sign)


def cv25519_subkey(created: int = CREATED) -> Key:
    """An ECDH encryption subkey (no back-signature needed)."""
    point = b"\x40" + os.urandom(32)
    kdf = bytes([3, 1, SHA256, 9])  # KDF parameters: SHA-256, AES-256
    return Key(18, CV25519_OID + mpi(int.from_bytes(point)) + kdf, created=created)


def signature(
    signer: Key,
    sig_type: int,
    *parts: bytes,
    hashed: Sequence[bytes] = (),
    created: int = CREATED,
    forged: bool = False,
) -> bytes:
    """A v4 signature packet body by ``signer`` over ``parts`` (after the signer's key).

    ``forged`` puts random values where the signature goes, with the right digest prefix:
    it costs a full verification to find out that it is bad.
    """
    area = (
        subpacket(2, created.to_bytes(4, "big"))
        + subpacket(33, b"\x04" + signer.fingerprint)
        + b"".join(hashed)
    )
    head = bytes([4, sig_type, signer.algorithm, SHA256]) + len(area).to_bytes(2, "big") + area
    state = hashlib.sha256(signer.hash_prefix)
    for part in parts:
        state.update(part)
    state.update(head + b"\x04\xff" + len(head).to_bytes(4, "big"))
    digest = state.digest()
    unhashed = subpacket(16, signer.fingerprint[-8:])
    values = forged_values(signer) if forged or signer.sign is None else signer.sign(digest)
    return head + len(unhashed).to_bytes(2, "big") + unhashed + digest[:2] + values


def forged_values(signer: Key) -> bytes:
    """Signature fields of the right shape for ``signer``, but random."""
    if signer.algorithm == 17:
        q = _mpis(signer.material, 2)[1]
        return b"".join(mpi(_full_size_below(q)) for _ in range(2))
    if signer.algorithm == 1:
        n = _mpis(signer.material, 1)[0]
        return mpi(_full_size_below(n))
    return b"".join(mpi(int.from_bytes(os.urandom(32)) | 1) for _ in range(2))


def _full_size_below(limit: int) -> int:
    """A random number below ``limit`` with as many bits as ``limit``: the signature then
    has the same size every time."""
    low = 1 << (limit.bit_length() - 1)
    return low + int.from_bytes(os.urandom(limit.bit_length() // 8 + 8)) % (limit - low)


def _mpis(material: bytes, count: int) -> list[int]:
    values, pos = [], 0
    for _ in range(count):
        size = (int.from_bytes(material[pos : pos + 2], "big") + 7) // 8
        values.append(int.from_bytes(material[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return values


def user_id_signature(
    key: Key, user_id: bytes, *, created: int = CREATED, forged: bool = False
) -> bytes:
    """A positive certification of ``user_id`` by ``key`` (certify and sign)."""
    return signature(
        key,
        SigType.POSITIVE_CERT,
        user_id_hash_prefix(user_id),
        hashed=[subpacket(27, b"\x03")],
        created=created,
        forged=forged,
    )


def subkey_binding(key: Key, subkey: Key) -> bytes:
    """A binding of an encryption subkey (no back-signature)."""
    return signature(
        key, SigType.SUBKEY_BINDING, subkey.hash_prefix, hashed=[subpacket(27, b"\x0c")]
    )


def certificate(
    key: Key,
    user_ids: Sequence[bytes],
    *,
    subkeys: Sequence[Key] = (),
    extra_user_id_signatures: Sequence[bytes] = (),
) -> bytes:
    """Binary certificate: ``key``, each user ID with its self-signature (the first also with
    ``extra_user_id_signatures``), each subkey with its binding."""
    packets = [Packet(Tag.PUBLIC_KEY, key.body)]
    for n, uid in enumerate(user_ids):
        packets += [Packet(Tag.USER_ID, uid), Packet(Tag.SIGNATURE, user_id_signature(key, uid))]
        if n == 0:
            packets += [Packet(Tag.SIGNATURE, body) for body in extra_user_id_signatures]
    for subkey in subkeys:
        packets += [
            Packet(Tag.PUBLIC_SUBKEY, subkey.body),
            Packet(Tag.SIGNATURE, subkey_binding(key, subkey)),
        ]
    return serialize(packets)
