"""The Dockerfile, checked without Docker: what it runs, as whom, where data lives, and that
its health check command works the way Docker reads it (exit 0 healthy, else unhealthy).

No Docker daemon runs where this suite runs, so the image itself is not built here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.serverutil import free_port, running_server

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    parsed = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def only(name: str) -> str:
    found = [rest for keyword, rest in instructions() if keyword == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def env() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            values.update(re.findall(r"(\w+)=(\S+)", rest))
    return values


def healthcheck_argv() -> list[str]:
    rest = only("HEALTHCHECK")
    _, _, command = rest.partition("CMD ")
    argv: list[str] = json.loads(command)  # exec form: no shell needed in the image
    return argv


def test_slim_python_311_base() -> None:
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", only("FROM"))


def test_the_server_runs_as_an_unprivileged_user() -> None:
    steps = instructions()
    users = [(i, rest) for i, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the server would run as root"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    cmd_index = next(i for i, (keyword, _) in enumerate(steps) if keyword == "CMD")
    assert last_index < cmd_index
    created = " ".join(rest for keyword, rest in steps[:last_index] if keyword == "RUN")
    uid = re.search(rf"useradd .*--uid (\d+) .*\b{user}\b", created)
    assert uid is not None, "the user is not created in the image"
    assert int(uid.group(1)) != 0


def test_default_command_is_keydir_serve_on_every_interface() -> None:
    argv = json.loads(only("CMD"))
    assert argv[:2] == ["keydir", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    port = argv[argv.index("--port") + 1] if "--port" in argv else "8080"
    assert only("EXPOSE") == port
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck_argv()[-1]


def test_the_sqlite_default_lives_in_a_volume_the_user_owns() -> None:
    volumes = json.loads(only("VOLUME"))
    url = env()["KEYDIR_DATABASE_URL"]
    assert url.startswith("sqlite:////")
    database = Path(url.removeprefix("sqlite:///"))
    assert any(database.parent == Path(volume) for volume in volumes), (url, volumes)
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert f"chown keydir:keydir {database.parent}" in runs


def test_what_the_image_copies_exists_and_passes_dockerignore() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for keyword, rest in instructions():
        if keyword != "COPY":
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_the_header_shows_how_to_migrate_and_run_a_worker() -> None:
    header = (ROOT / "Dockerfile").read_text()
    assert "keydir keydir migrate" in header
    assert "keydir keydir worker" in header
    assert "-v keydir-data:/data" in header


def test_the_health_check_command_tells_up_from_down(tmp_path: Path) -> None:
    """Docker runs the command and reads its exit status; run it the same way here, pointed
    at a real server (at a path this version serves) and at a closed port."""
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "urllib.request" in code
    compile(code, "<healthcheck>", "exec")
    port = free_port()

    def check(url: str) -> int:
        pointed = code.replace("http://127.0.0.1:8080/healthz", url)
        assert pointed != code
        return subprocess.run([sys.executable, "-c", pointed], timeout=30, check=False).returncode

    assert check(f"http://127.0.0.1:{port}/healthz") != 0  # nothing listens: unhealthy
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        port=port,
        KEYDIR_DATABASE_URL=f"sqlite:///{tmp_path / 'health.sqlite3'}",
    ) as base:
        assert check(f"{base}/") == 0
        assert check(f"{base}/no-such-page") != 0  # an error status is unhealthy too
