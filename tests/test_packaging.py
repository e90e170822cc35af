"""keydir as an operator installs it: the sdist built from the checkout, the wheel built from
that sdist (as pip does), installed (not editable) into a fresh virtualenv, then `migrate`,
`serve`, an upload and a lookup from it, on an empty SQLite file and an empty PostgreSQL
database.

The fresh virtualenv gets its dependencies from this one (a path entry, not an install), so
the test needs no package index; `keydir` and its `service` package come from the wheel only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from service import __version__
from service.db.session import make_engine
from tests.conftest import read_data
from tests.serverutil import running_server

ROOT = Path(__file__).resolve().parents[1]
BUILD = "import sys; from setuptools import build_meta as b; print(b.build_{}(sys.argv[1]))"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `keydir` program of a fresh virtualenv holding only the wheel."""
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    dist.mkdir()
    run(sys.executable, "-c", BUILD.format("sdist"), dist, cwd=ROOT)
    (sdist,) = dist.glob("keydir-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        tar.extractall(work / "src", filter="data")
    for needed in (
        "LICENSE",
        "tests/test_packaging.py",
        "tests/data/ed25519.asc",
        "service/migrations/env.py",
        "service/migrations/versions/0001_initial_schema.py",
        "openapi/openapi.json",
        "docs/deploy.md",
    ):
        assert needed in names, needed
    (source,) = (work / "src").iterdir()
    run(sys.executable, "-c", BUILD.format("wheel"), dist, cwd=source)
    (wheel,) = dist.glob("keydir-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    assert "service/migrations/script.py.mako" in files
    assert "service/migrations/versions/0001_initial_schema.py" in files
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in files), files
    # Nothing but our one package at the top of site-packages.
    assert {name.split("/", 1)[0] for name in files} == {
        "service",
        f"keydir-{__version__}.dist-info",
    }

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        wheel,
        cwd=work,
    )
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
    )
    # The dependencies of this virtualenv, appended to the path (.pth files in an appended
    # folder are not read, so this virtualenv's editable keydir stays out of sight).
    (Path(purelib.strip()) / "keydir_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    where = run(python, "-c", "import service; print(service.__file__)", cwd=work)
    assert where.startswith(str(venv)), where
    return venv / "bin" / "keydir"


@pytest.fixture
def empty_database(database: tuple[str, Engine], tmp_path: Path) -> Iterator[str]:
    """The URL of a database that no migration has touched yet (dropped afterwards)."""
    url, engine = database
    if engine.dialect.name == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    name = "keydir_packaging"

    def admin(statement: str) -> None:
        maintenance = make_engine(url)
        try:
            with maintenance.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(statement))
        finally:
            maintenance.dispose()

    admin(f"DROP DATABASE IF EXISTS {name}")
    admin(f"CREATE DATABASE {name}")
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_wheel_installs_migrates_serves_and_stores(
    installed: Path, empty_database: str, tmp_path: Path
) -> None:
    url = empty_database
    env = {**os.environ, "KEYDIR_DATABASE_URL": url}
    assert run(installed, "--version", cwd=tmp_path, env=env).strip() == f"keydir {__version__}"
    # No alembic.ini, no checkout: the migrations come from the installed package.
    assert not (tmp_path / "alembic.ini").exists()
    run(installed, "migrate", cwd=tmp_path, env=env)
    with running_server(
        tmp_path,
        tmp_path / "server.log",
        program=str(installed),
        KEYDIR_DATABASE_URL=url,
        KEYDIR_AUTO_MIGRATE="false",
    ) as base:
        request = urllib.request.Request(
            f"{base}/vks/v1/upload",
            data=json.dumps({"keytext": read_data("ed25519.asc").decode()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            fingerprint = json.loads(response.read())["key_fpr"]
        with urllib.request.urlopen(f"{base}/vks/v1/by-fingerprint/{fingerprint}") as found:
            assert found.status == 200
            assert found.read().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    stats = run(installed, "stats", "--json", cwd=tmp_path, env=env)
    assert json.loads(stats)["keys"] == 1
