"""keydir's lookup and import benchmark: one command, every figure in one run.

    .venv/bin/python bench/run.py                     # 10,000 keys, SQLite and PostgreSQL
    .venv/bin/python bench/run.py --keys 1000000      # a million keys (bulk-loaded rows)

Seeds the database, starts `keydir serve` on it, drives it with wrk on loopback for each
lookup (bounded in time), and does the same to nginx serving the very same response bodies
as static files, the practical upper bound on this machine; then nginx as a caching front
(deploy/nginx/) before keydir; then `keydir import` for keys/s. Prints one table; ratios
compare runs of the same minute, never figures of another day.

Needs wrk and nginx (Debian packages wrk, nginx-light) and, for PostgreSQL, a server that
--pg-url reaches (its database is emptied).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench import seed  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.db.session import make_engine  # noqa: E402

KEYDIR = str(Path(sys.executable).parent / "keydir")
LUA = ROOT / "bench" / "lookup.lua"
NGINX_DIR = ROOT / "deploy" / "nginx"
KINDS = ["vks-fpr", "vks-keyid", "vks-email", "hkp-get", "hkp-index", "wkd"]
NO_LIMITS = {
    "KEYDIR_RATE_UPLOADS_PER_HOUR": "0",
    "KEYDIR_RATE_MAIL_REQUESTS_PER_HOUR": "0",
    "KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE": "0",
}


@dataclass
class Result:
    what: str
    backend: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"bench: nothing answered at {url}")


def paths_for(kind: str, targets: list[seed.Target]) -> list[str]:
    out = []
    for t in targets:
        if kind == "vks-fpr":
            out.append(f"/vks/v1/by-fingerprint/{t.fingerprint}")
        elif kind == "vks-keyid":
            out.append(f"/vks/v1/by-keyid/{t.key_id}")
        elif kind == "vks-email":
            out.append(f"/vks/v1/by-email/{quote(t.address)}")
        elif kind == "hkp-get":
            out.append(f"/pks/lookup?op=get&options=mr&search=0x{t.fingerprint}")
        elif kind == "hkp-index":
            out.append(f"/pks/lookup?op=index&options=mr&search={quote(t.address)}")
        elif kind == "wkd":
            local = t.address.split("@", 1)[0]
            out.append(f"/.well-known/openpgpkey/{t.domain}/hu/{t.wkd_hash}?l={local}")
    return out


def wrk(url: str, paths: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, int]:
    listing = workdir / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(listing),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    data: dict[str, int] = json.loads(line[4:])
    return data


def measure(
    what: str,
    backend: str,
    url: str,
    paths: list[str],
    *,
    args: argparse.Namespace,
    work: Path,
) -> Result:
    data = wrk(url, paths, args, work)
    failures = ("connect_errors", "read_errors", "write_errors", "timeouts", "status_errors")
    errors = sum(data[k] for k in failures)
    result = Result(
        what,
        backend,
        data["requests"] / (data["duration_us"] / 1e6),
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        errors,
    )
    print(
        f"  {what:<34} {backend:<11} {result.requests_per_second:>9,.0f} req/s  "
        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {errors}",
        flush=True,
    )
    return result


@contextmanager
def keydir_server(url: str, args: argparse.Namespace, work: Path, **env: str) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / f"keydir-{port}.log").open("wb")
    process = subprocess.Popen(
        [KEYDIR, "serve", "--port", str(port), "--workers", str(args.workers)],
        env={
            **os.environ,
            "KEYDIR_DATABASE_URL": url,
            "KEYDIR_BASE_URL": base,
            "KEYDIR_AUTO_MIGRATE": "false",
            "KEYDIR_DISPATCH_MAIL": "false",
            "KEYDIR_LOG_LEVEL": "warning",
            **NO_LIMITS,
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(base + "/")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextmanager
def nginx(conf: str, work: Path, name: str) -> Iterator[None]:
    prefix = work / name
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    process = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(path), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"bench: nginx did not start: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def nginx_main(work: Path, http: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {os_workers()};\npid {work}/nginx-{id(http)}.pid;\n"
        f"error_log {work}/nginx-error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n  keepalive_requests 100000;\n"
        f"{http}\n}}\n"
    )


def os_workers() -> int:
    return os.cpu_count() or 1


def static_root(work: Path, base: str, targets: list[seed.Target]) -> Path:
    """The exact bodies keydir answered for the by-fingerprint lookups, as files."""
    root = work / "static"
    folder = root / "vks" / "v1" / "by-fingerprint"
    folder.mkdir(parents=True, exist_ok=True)
    for t in targets:
        with urllib.request.urlopen(f"{base}/vks/v1/by-fingerprint/{t.fingerprint}") as r:
            (folder / t.fingerprint).write_bytes(r.read())
    return root


def prepare(backend: str, args: argparse.Namespace, work: Path) -> str:
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (work / f"bench.sqlite3{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{work / 'bench.sqlite3'}"
    url: str = args.pg_url
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def seed_database(url: str, keys: int, pool: list[tuple[bytes, str]]) -> None:
    engine = make_engine(url)
    upgrade(engine)
    started = time.monotonic()
    seed.publish_pool(engine, pool)
    confirmed = time.monotonic()
    seed.clone(engine, keys)
    if url.startswith("postgresql"):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    print(
        f"  seeded {keys:,} keys: {len(pool):,} uploaded and confirmed in "
        f"{confirmed - started:.1f} s, the rest bulk-loaded in "
        f"{time.monotonic() - confirmed:.1f} s",
        flush=True,
    )


def import_rate(url: str, files: list[str]) -> float:
    out = subprocess.run(
        [KEYDIR, "import", "--quiet", *files],
        env={**os.environ, "KEYDIR_DATABASE_URL": url, "KEYDIR_AUTO_MIGRATE": "true"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"read ([\d,]+) keys in ([\d.]+) s", out)
    assert match is not None, out
    print("  " + out.splitlines()[0], flush=True)
    return int(match.group(1).replace(",", "")) / float(match.group(2))


def warm_up(base: str, targets: list[seed.Target], work: Path) -> None:
    """A few seconds of every lookup, so that each server process has its connections."""
    for kind in KINDS:
        (work / "warm.txt").write_text("\n".join(paths_for(kind, targets[:200])))
        subprocess.run(
            ["wrk", "-t1", "-c8", "-d1s", "-s", str(LUA), base, "--", str(work / "warm.txt")],
            capture_output=True,
            check=True,
        )


def nginx_static(
    base: str, targets: list[seed.Target], args: argparse.Namespace, work: Path
) -> Result:
    root = static_root(work, base, targets)
    port = free_port()
    http = (
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n"
        "    default_type application/pgp-keys;\n"
        '    add_header Cache-Control "public, max-age=60";\n  }\n'
    )
    with nginx(nginx_main(work, http), work, "static"):
        return measure(
            "nginx static (by-fingerprint)",
            "-",
            f"http://127.0.0.1:{port}",
            paths_for("vks-fpr", targets),
            args=args,
            work=work,
        )


def caching_front(
    backend: str,
    label: str,
    base: str,
    targets: list[seed.Target],
    *,
    args: argparse.Namespace,
    work: Path,
) -> Result:
    """The documented nginx front (deploy/nginx/), exactly as shipped, before this server.

    The hot keys are asked for once before the measured run: a front serves hot keys from
    its cache, and the very first requests for a key wait for each other (proxy_cache_lock).
    """
    http_conf = (NGINX_DIR / "keydir-http.conf").read_text()
    http_conf = http_conf.replace("/var/cache/keydir-nginx", str(work / f"cache-{backend}"))
    http_conf = http_conf.replace(
        "server 127.0.0.1:8080;", f"server {base.removeprefix('http://')};"
    )
    port = free_port()
    http = (
        f"{http_conf}\n  server {{\n    listen 127.0.0.1:{port};\n"
        f"    include {NGINX_DIR / 'keydir-locations.conf'};\n  }}\n"
    )
    with nginx(nginx_main(work, http), work, f"front-{backend}"):
        hot = paths_for("vks-fpr", targets[: args.hot])
        for path in hot:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10):
                pass
        return measure(
            f"caching front, {args.hot} hot keys",
            label,
            f"http://127.0.0.1:{port}",
            hot,
            args=args,
            work=work,
        )


def variants(
    url: str, backend: str, targets: list[seed.Target], args: argparse.Namespace, work: Path
) -> list[Result]:
    """The same lookups with one thing changed, for a ratio within the run."""
    out = []
    runs = [
        ("by-fingerprint, fast path off", "vks-fpr", {"KEYDIR_LOOKUP_FAST_PATH": "false"}),
        (
            "by-fingerprint, 5 s in-process cache",
            "vks-fpr",
            {"KEYDIR_LOOKUP_CACHE_SECONDS": "5", "KEYDIR_LOOKUP_CACHE_ENTRIES": "20000"},
        ),
        (
            "by-email, rate limit on (database)",
            "vks-email",
            {"KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE": "1000000000"},
        ),
    ]
    if args.redis_url:
        runs.append(
            (
                "by-email, rate limit on (Redis)",
                "vks-email",
                {
                    "KEYDIR_RATE_ADDRESS_LOOKUPS_PER_MINUTE": "1000000000",
                    "KEYDIR_REDIS_URL": args.redis_url,
                },
            )
        )
    for what, kind, env in runs:
        with keydir_server(url, args, work, **env) as base:
            warm_up(base, targets, work)
            out.append(measure(what, backend, base, paths_for(kind, targets), args=args, work=work))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--keys", default="10000", help="keys in the database; several (10000,1000000) compare"
    )
    parser.add_argument("--pool", type=int, default=2_000, help="of which really confirmed")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=os_workers(), help="keydir processes")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--kinds", default=",".join(KINDS), help="lookups to measure")
    parser.add_argument("--hot", type=int, default=100, help="keys in the hot set (cache)")
    parser.add_argument("--no-variants", action="store_true", help="skip the variant runs")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/bench")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/15", help="'' to skip the Redis variant"
    )
    parser.add_argument(
        "--import-files",
        default="/usr/share/keyrings/debian-keyring.gpg",
        help="real-world keyrings for the import figure (comma-separated; '' to skip)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed (apt-get install {tool})")
    os.environ.pop("RUST_BACKTRACE", None)
    kinds = [k for k in args.kinds.split(",") if k]
    counts = [int(n) for n in str(args.keys).split(",") if n]
    results: list[Result] = []
    imports: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="keydir-bench-"))
    work.chmod(0o755)
    static: Result | None = None
    try:
        print(f"bench: generating {min(args.pool, *counts):,} keys", flush=True)
        pool = seed.generate(min(args.pool, *counts))
        pool_file = work / "pool.gpg"
        pool_file.write_bytes(b"".join(data for data, _ in pool))
        for backend in [b for b in args.backends.split(",") if b]:
            for number, keys in enumerate(counts):
                print(f"bench: {backend}, {keys:,} keys", flush=True)
                url = prepare(backend, args, work)
                seed_database(url, keys, pool)
                engine = make_engine(url)
                targets = seed.targets(engine, 10_000)
                engine.dispose()
                label = backend if len(counts) == 1 else f"{backend}, {keys:,} keys"
                with keydir_server(url, args, work) as base:
                    warm_up(base, targets, work)
                    if static is None:
                        static = nginx_static(base, targets, args, work)
                        results.append(static)
                    results.extend(
                        measure(kind, label, base, paths_for(kind, targets), args=args, work=work)
                        for kind in kinds
                    )
                    if number == 0:
                        results.append(
                            caching_front(backend, label, base, targets, args=args, work=work)
                        )
                if number == 0 and not args.no_variants:
                    results.extend(variants(url, label, targets, args, work))
            files = [f for f in args.import_files.split(",") if f and Path(f).exists()]
            if files:
                fresh = prepare(backend, args, work).replace("bench.sqlite3", "import.sqlite3")
                names = ", ".join(Path(f).name for f in files)
                imports[f"{backend}: real keys ({names})"] = import_rate(fresh, files)
            if args.import_files != "":
                fresh = prepare(backend, args, work).replace("bench.sqlite3", "import2.sqlite3")
                imports[f"{backend}: generated Ed25519 keys"] = import_rate(fresh, [str(pool_file)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if static is None:
        return 1
    for r in results:
        r.ratio = r.requests_per_second / static.requests_per_second
    report(results, imports, args)
    return 0


def report(results: list[Result], imports: dict[str, float], args: argparse.Namespace) -> None:
    print()
    print(
        f"keydir, {args.keys} keys, {args.workers} server processes, wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s on loopback, {os_workers()} cores shared"
    )
    print()
    print("| lookup | database | req/s | p50 ms | p99 ms | errors | of nginx static |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.what} | {r.backend} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.errors} | {100 * (r.ratio or 0):.0f}% |"
        )
    print()
    print("| import | keys/s |")
    print("|---|---:|")
    for what, rate in imports.items():
        print(f"| {what} | {rate:,.0f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "lookups": [r.__dict__ for r in results], "imports": imports},
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(main())
