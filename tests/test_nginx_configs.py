"""Every nginx configuration we ship or print in docs/deploy.md passes `nginx -t` with
Debian 12's nginx (1.22), with the shipped files included as the docs say.

Only the paths change: the shipped files' folder for /etc/nginx/keydir, a throwaway
certificate for Let's Encrypt's, a temporary folder for the cache. The caching front itself
carries real traffic in tests/test_bench.py (bench/run.py drives keydir through it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "nginx"
DOCS = ROOT / "docs" / "deploy.md"


def documented_blocks() -> list[str]:
    text = DOCS.read_text()
    blocks = []
    for match in re.finditer(r"^( *)```nginx\n(.*?)^\1```", text, re.S | re.M):
        indent = len(match.group(1))
        blocks.append("\n".join(line[indent:] for line in match.group(2).splitlines()))
    return blocks


def test_the_docs_show_the_configurations_this_test_checks() -> None:
    kinds = [block.lstrip().split()[0] for block in documented_blocks()]
    assert kinds == ["http", "server", "location"], kinds


@pytest.mark.parametrize("index", range(3))
def test_nginx_accepts_it(index: int, tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    block = documented_blocks()[index]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=keys.example.net", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "keydir").mkdir()
    (tmp_path / "keydir" / "keydir-http.conf").write_text(
        (SHIPPED / "keydir-http.conf")
        .read_text()
        .replace("/var/cache/keydir-nginx", str(tmp_path / "cache"))
    )
    shutil.copy(SHIPPED / "keydir-locations.conf", tmp_path / "keydir")
    block = re.sub(r"/etc/letsencrypt/live/[^/]+/fullchain\.pem", str(cert), block)
    block = re.sub(r"/etc/letsencrypt/live/[^/]+/privkey\.pem", str(key), block)
    block = block.replace("/etc/nginx/keydir/", f"{tmp_path / 'keydir'}/")
    kind = block.lstrip().split()[0]
    http_conf = f"include {tmp_path / 'keydir' / 'keydir-http.conf'};"
    if kind == "server":
        block = f"http {{\n{http_conf}\n{block}\n}}"
    elif kind == "location":
        block = f"http {{\nserver {{\nlisten 8080;\n{block}\n}}\n}}"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\n{block}\n"
    )
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
