"""Make the committed test keys in this folder with the real gpg and pysequoia.

Run from the repository root: `.venv/bin/python tests/data/make_keys.py`. The keys are
committed so that tests never generate them; rerunning makes new keys (new fingerprints),
and `keys.json` records what each file holds. Tampered fixtures are built at the packet
level from the clean ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pysequoia

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from service.openpgp.armor import armor_public_key, dearmor  # noqa: E402
from service.openpgp.packets import Packet, parse_packets, serialize  # noqa: E402

T0 = "20240101T120000!"  # first life of the evolving key
T1 = "20240601T120000!"  # its later life: new subkey, new expiry
T2 = "20240901T120000!"  # its revocation
MINIMAL_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b"
    "0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e3334"
    "32ffc0000b080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708"
    "090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114"
    "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999a"
    "a2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7"
    "e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9"
)


class Gpg:
    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __call__(self, *args: str, stdin: bytes | None = None, time: str | None = None) -> bytes:
        command = ["gpg", "--batch", "--no-tty", "--passphrase", "", "--pinentry-mode", "loopback"]
        if time:
            command += ["--faked-system-time", time]
        result = subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            check=False,
            env={**os.environ, "GNUPGHOME": str(self.home)},
        )
        if result.returncode != 0:
            raise RuntimeError(f"gpg {args}: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def new_key(
        self, uid: str, algo: str, usage: str, expire: str = "never", time: str | None = None
    ) -> str:
        self("--quick-gen-key", uid, algo, usage, expire, time=time)
        return self.fingerprints()[-1]

    def fingerprints(self) -> list[str]:
        out = self("--with-colons", "--fixed-list-mode", "--list-keys").decode()
        fprs, last = [], ""
        for line in out.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and last == "pub":
                fprs.append(fields[9])
            if fields[0] in ("pub", "sub", "uid"):
                last = fields[0]
        return fprs

    def export(self, fpr: str) -> bytes:
        return self("--export", "--armor", fpr)

    def export_secret(self, fpr: str) -> bytes:
        return self("--export-secret-keys", "--armor", fpr)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            check=False,
        )


def packets_of(armored: bytes) -> list[Packet]:
    return parse_packets(dearmor(armored), max_packets=10_000)


def write(name: str, data: bytes | str) -> None:
    (HERE / name).write_bytes(data.encode() if isinstance(data, str) else data)
    print("wrote", name)


def armor_keyring(packets: list[Packet]) -> str:
    return armor_public_key(serialize(packets))


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)
    work = Path(tempfile.mkdtemp(prefix="keydir-keys-"))
    gpg = Gpg(work / "main")
    try:
        make(gpg, work)
    finally:
        gpg.close()
        shutil.rmtree(work, ignore_errors=True)


def make(gpg: Gpg, work: Path) -> None:
    # 1. RSA: certification-only primary, three user IDs, encryption and signing subkeys.
    rsa = gpg.new_key("Rita Rsa <rita@example.org>", "rsa3072", "cert")
    gpg("--quick-add-uid", rsa, "Rita at Work <rita.work@example.com>")
    gpg("--quick-add-uid", rsa, "R. Rsa <rita@example.net>")
    gpg("--quick-add-key", rsa, "rsa3072", "encr", "never")
    gpg("--quick-add-key", rsa, "rsa3072", "sign", "never")
    write("rsa_multi_uid.asc", gpg.export(rsa))
    write("rsa_multi_uid.sec.asc", gpg.export_secret(rsa))

    # 2-4. Ed25519, in three stages of one life, in its own home so the stages stay apart.
    life = Gpg(work / "life")
    try:
        ed = life.new_key("Eddie <eddie@example.org>", "ed25519", "cert,sign", time=T0)
        life("--quick-add-uid", ed, "Eddie Two <eddie2@example.org>", time=T0)
        life("--quick-add-key", ed, "cv25519", "encr", "never", time=T0)
        life("--quick-add-key", ed, "ed25519", "sign", "never", time=T0)
        write("ed25519.asc", life.export(ed))
        write("ed25519.pub.bin", life("--export", ed))
        write("ed25519.sec.asc", life.export_secret(ed))
        revocation = (life.home / "openpgp-revocs.d" / f"{ed}.rev").read_bytes()
        # gpg puts a ':' before the BEGIN line so that the file is not imported by accident.
        revocation = revocation.replace(b":-----BEGIN", b"-----BEGIN")
        write("ed25519_revocation_only.asc", revocation)
        life("--quick-add-key", ed, "cv25519", "encr", "never", time=T1)
        life("--quick-set-expire", ed, "2040-01-01", time=T1)
        write("ed25519_newer.asc", life.export(ed))
        life("--import", stdin=revocation, time=T2)
        write("ed25519_revoked.asc", life.export(ed))
    finally:
        life.close()
    clean = packets_of((HERE / "ed25519.asc").read_bytes())

    # 5. v6 keys made by Sequoia.
    for name, suite in (("v6_ed25519", None), ("v6_pq", pysequoia.CipherSuite.MLDSA65_Ed25519)):
        extra = {} if suite is None else {"cipher_suite": suite}
        tsk = pysequoia.Tsk.generate(
            user_ids=["Vera Six <vera@example.org>"], profile=pysequoia.Profile.RFC9580, **extra
        )
        write(f"{name}.asc", armor_public_key(bytes(tsk.extract_certificate())))
        if suite is None:
            write(f"{name}.sec.asc", str(tsk))

    # 6. A photo ID next to a user ID.
    photo = gpg.new_key("Pia Photo <pia@example.org>", "ed25519", "cert,sign")
    jpeg = work / "photo.jpg"
    jpeg.write_bytes(MINIMAL_JPEG)
    gpg("--command-fd", "0", "--edit-key", photo, stdin=f"addphoto\n{jpeg}\ny\nsave\n".encode())
    write("with_photo.asc", gpg.export(photo))

    # 7. A third-party certification on a user ID.
    certifier = gpg.new_key("Cert Ifier <certifier@example.net>", "ed25519", "cert,sign")
    gpg("--quick-add-key", certifier, "cv25519", "encr", "never")
    carl = gpg.new_key("Carl <carl@example.org>", "ed25519", "cert,sign")
    gpg("-u", certifier, "--quick-sign-key", carl)
    write("with_certification.asc", gpg.export(carl))
    write("certifier.asc", gpg.export(certifier))

    # 8. Someone else's subkey and its (valid, but foreign) binding glued onto key 2.
    foreign = packets_of((HERE / "certifier.asc").read_bytes())
    sub_at = next(i for i, p in enumerate(foreign) if p.tag == 14)
    write("foreign_subkey.asc", armor_keyring([*clean, foreign[sub_at], foreign[sub_at + 1]]))

    # 9. One byte of the encryption subkey's key material flipped.
    damaged = list(clean)
    enc_at = next(i for i, p in enumerate(damaged) if p.tag == 14 and p.body[5] == 18)
    body = bytearray(damaged[enc_at].body)
    body[-40] ^= 0x01
    damaged[enc_at] = Packet(14, bytes(body))
    write("damaged_subkey.asc", armor_keyring(damaged))

    # 10. A copy of a user ID self-signature with a later creation time and broken signature.
    garbage = list(clean)
    sig_at = next(i for i, p in enumerate(garbage) if p.tag == 2 and i > 1)
    sig = bytearray(garbage[sig_at].body)
    created = sig.find(b"\x05\x02")  # creation time subpacket: length 5, type 2
    sig[created + 2 : created + 6] = (
        int.from_bytes(sig[created + 2 : created + 6], "big") + 86400
    ).to_bytes(4, "big")
    for i in range(-20, -1):
        sig[i] ^= 0x5A
    garbage.insert(sig_at + 1, Packet(2, bytes(sig)))
    write("garbage_sig.asc", armor_keyring(garbage))

    # 11. Only SHA-1 self-signatures (as old keys have).
    sha1 = Gpg(work / "sha1")
    try:
        sha1(
            "--cert-digest-algo",
            "SHA1",
            "--digest-algo",
            "SHA1",
            "--quick-gen-key",
            "Old Sha <old@example.org>",
            "rsa2048",
            "cert,sign",
            "never",
            time="20150101T120000!",
        )
        write("sha1_only.asc", sha1.export(sha1.fingerprints()[0]))
    finally:
        sha1.close()

    # 12. Expired in 2021.
    expired = gpg.new_key(
        "Ex Pired <expired@example.org>", "ed25519", "cert,sign", "1y", time="20200101T120000!"
    )
    write("expired.asc", gpg.export(expired))

    # 13. Two keys: in two armor blocks, and in one.
    write("two_keys.asc", gpg.export(carl) + gpg.export(certifier))
    write("keyring.asc", gpg("--export", "--armor", carl, certifier))

    # 14. One of two user IDs revoked.
    uidrev = gpg.new_key("Una Rev <una@example.org>", "ed25519", "cert,sign")
    gpg("--quick-add-uid", uidrev, "Una Old <una.old@example.org>")
    gpg("--quick-revoke-uid", uidrev, "Una Old <una.old@example.org>")
    write("uid_revoked.asc", gpg.export(uidrev))

    # 15. More algorithms.
    for name, algo, sub in (
        ("nistp256", "nistp256", "nistp256"),
        ("brainpool", "brainpoolP256r1", "brainpoolP256r1"),
        ("dsa_elg", "dsa2048", "elg2048"),
    ):
        fpr = gpg.new_key(f"Algo {name} <{name}@example.org>", algo, "cert,sign")
        gpg("--quick-add-key", fpr, sub, "encr", "never")
        write(f"{name}.asc", gpg.export(fpr))

    # 16. A user ID with ':', '%' and non-ASCII letters.
    weird = gpg.new_key("Jörg Müller: 100% <joerg@example.org>", "ed25519", "cert,sign")
    write("weird_uid.asc", gpg.export(weird))

    # 17. A second, different key for Carl's address (one published key per address).
    carl2 = gpg.new_key("Carl New <carl@example.org>", "ed25519", "cert,sign")
    write("carl_second.asc", gpg.export(carl2))

    manifest = {}
    for path in sorted(HERE.glob("*.asc")):
        if path.name.endswith(".sec.asc") or path.name == "ed25519_revocation_only.asc":
            continue
        certs = pysequoia.Cert.split_bytes(path.read_bytes())
        manifest[path.name] = [cert.fingerprint.upper() for cert in certs]
    (HERE / "keys.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print("wrote keys.json")


if __name__ == "__main__":
    main()
