"""Key material that is slow (or impossible) to verify by, and key packets too long for a v4
key, are refused when the key is read: a sentence for a primary key, the subkey dropped for
a subkey. Uploaded for real, through VKS and HKP."""

from __future__ import annotations

import os

from fastapi.testclient import TestClient

from service.openpgp.armor import armor_public_key, dearmor
from service.openpgp.packets import Packet, Tag, parse_packets, serialize
from tests import keyforge
from tests.keyforge import Key, mpi


def _upload(client: TestClient, data: bytes) -> tuple[int, str]:
    response = client.post("/vks/v1/upload", json={"keytext": armor_public_key(data)})
    return response.status_code, response.text


def _hkp_add(client: TestClient, data: bytes) -> tuple[int, str]:
    response = client.post("/pks/add", data={"keytext": armor_public_key(data)})
    return response.status_code, response.text


def _served_subkeys(client: TestClient, fingerprint: str) -> int:
    response = client.get(f"/vks/v1/by-fingerprint/{fingerprint}")
    assert response.status_code == 200
    packets = parse_packets(dearmor(response.content), max_packets=1000)
    return sum(p.tag == Tag.PUBLIC_SUBKEY for p in packets)


def _with_subkey(primary: Key, subkey_packet: bytes, binding: bytes | None) -> bytes:
    """A good key of ``primary`` with one user ID and one more (sub)key packet after it."""
    base = keyforge.certificate(primary, [b"Owner <owner@example.org>"])
    extra = [Packet(Tag.PUBLIC_SUBKEY, subkey_packet)]
    if binding is not None:
        extra.append(Packet(Tag.SIGNATURE, binding))
    return base + serialize(extra)


def test_a_key_packet_over_65535_octets_is_a_sentence_never_a_500(client: TestClient) -> None:
    # Its fingerprint cannot be computed (the length goes into it in two octets): this
    # answered 500 as a primary key and as a subkey.
    huge = Key(100, os.urandom(70_000))
    forged = keyforge.user_id_signature(keyforge.ed25519_key(), b"x <x@example.org>")
    data = serialize(
        [
            Packet(Tag.PUBLIC_KEY, huge.body),
            Packet(Tag.USER_ID, b"x <x@example.org>"),
            Packet(Tag.SIGNATURE, forged),
        ]
    )
    status, text = _upload(client, data)
    assert status == 400, text
    assert "longer than 65,535 octets" in text
    status, text = _hkp_add(client, data)
    assert status == 422, text
    assert "longer than 65,535 octets" in text

    owner = keyforge.ed25519_key()
    status, text = _upload(client, _with_subkey(owner, huge.body, None))
    assert status == 200, text
    assert _served_subkeys(client, owner.fingerprint.hex().upper()) == 0


def test_rsa_key_with_a_huge_public_exponent_is_refused(client: TestClient) -> None:
    # Every signature by such a key costs as much to verify as to make: a 1 MB upload of
    # them kept a worker busy for minutes, and a lone signature the server itself.
    slow = keyforge.rsa_key(2048, exponent=(1 << 2000) + 1)
    data = keyforge.certificate(slow, [b"Slow <slow@example.org>"])
    status, text = _upload(client, data)
    assert status == 400, text
    assert "public exponent is a 2001-bit number" in text
    even = keyforge.rsa_key(2048, exponent=65538)
    status, text = _hkp_add(client, keyforge.certificate(even, [b"Even <even@example.org>"]))
    assert status == 422, text
    assert "only odd exponents up to 2^32" in text

    # As an encryption subkey, validly bound by a good primary key, it is dropped.
    owner = keyforge.ed25519_key()
    subkey = keyforge.rsa_key(2048, exponent=2**32 + 1)
    status, text = _upload(
        client, _with_subkey(owner, subkey.body, keyforge.subkey_binding(owner, subkey))
    )
    assert status == 200, text
    assert _served_subkeys(client, owner.fingerprint.hex().upper()) == 0
    fine = keyforge.rsa_key(2048)
    status, text = _upload(
        client, _with_subkey(owner, fine.body, keyforge.subkey_binding(owner, fine))
    )
    assert status == 200, text
    assert _served_subkeys(client, owner.fingerprint.hex().upper()) == 1


def test_dsa_key_of_a_size_openssl_does_not_verify_is_refused(client: TestClient) -> None:
    # These were verified by hand, in Python: slow, and holding the interpreter's lock.
    p, q = (1 << 1535) | 1, (1 << 255) | 1
    odd = Key(17, mpi(p) + mpi(q) + mpi(2) + mpi(5))
    data = keyforge.certificate(odd, [b"Odd <odd@example.org>"])
    status, text = _upload(client, data)
    assert status == 400, text
    assert "DSA key has a 1536-bit prime with a 256-bit subgroup" in text
