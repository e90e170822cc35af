"""Running the real gpg in tests: import a key into a fresh home and read what it saw."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GpgKey:
    fingerprint: str
    subkeys: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    revoked: bool = False


def gnupg_home(path: Path) -> Iterator[Path]:
    """Make an empty GnuPG home; after use, stop the agent and dirmngr it started."""
    path.mkdir(mode=0o700)
    yield path
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": str(path)},
        check=False,
        capture_output=True,
    )


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gpg", "--batch", "--no-tty", "--with-colons", *args],
        input=stdin,
        env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True,
        check=False,
        timeout=60,
    )


def import_key(home: Path, data: bytes) -> list[GpgKey]:
    """Import ``data`` into ``home``; return the keys gpg then lists. Fails if gpg fails."""
    result = gpg(home, "--import", stdin=data)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return list_keys(home)


def show_keys(home: Path, data: bytes) -> list[GpgKey]:
    """What gpg reads from ``data`` without importing it (`gpg --show-keys`).

    GnuPG 2.2 refuses to *import* a key that carries no user ID ("new key but contains no
    user ID - skipped"), which is what keydir serves until an address is confirmed; it still
    parses such a key, and this shows what it parsed.
    """
    result = gpg(home, "--fixed-list-mode", "--show-keys", stdin=data)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return _parse_listing(result.stdout)


def list_keys(home: Path) -> list[GpgKey]:
    return _parse_listing(gpg(home, "--fixed-list-mode", "--list-keys").stdout)


def _parse_listing(listing: bytes) -> list[GpgKey]:
    keys: list[GpgKey] = []
    last = ""
    for line in listing.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            keys.append(GpgKey(fingerprint="", revoked=fields[1] == "r"))
        elif fields[0] == "fpr" and keys:
            if last == "pub":
                keys[-1].fingerprint = fields[9]
            elif last == "sub":
                keys[-1].subkeys.append(fields[9])
        elif fields[0] == "uid" and keys:
            keys[-1].user_ids.append(fields[9])
        if fields[0] in ("pub", "sub", "uid"):
            last = fields[0]
    return keys
