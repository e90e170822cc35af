"""The `keydir` command."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service import __version__, logs
from service.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from service.core.admin import Admin, Removed

# prometheus_client's name for it; service.metrics is not imported here (see _serve).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs it

    # uvicorn takes any number: --port 99999 would listen on 34463 (99999 mod 65536).
    if not 1 <= args.port <= 65535:
        print(f"keydir: --port {args.port} is not a TCP port (1 to 65535).", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("keydir: --workers must be at least 1.", file=sys.stderr)
        return 2
    settings = Settings()
    logs.configure(args.log_level, settings.log_format)
    problem = _tls_problem(args.tls_cert, args.tls_key)
    if problem is not None:
        print(f"keydir: {problem}", file=sys.stderr)
        return 2
    made_dir = None
    if args.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Each worker process counts on its own; in files in one directory, /metrics adds
        # them up. Set before the application (and prometheus_client) is imported.
        made_dir = tempfile.mkdtemp(prefix="keydir-metrics-")
        os.environ[MULTIPROCESS_ENV] = made_dir
    try:
        from service.app import SchemaOutdated, build  # noqa: PLC0415

        # Check (or, on SQLite, apply) the schema once here, so that a refusal is one clear
        # sentence rather than a traceback from every worker.
        try:
            build(settings)
        except SchemaOutdated as exc:
            print(f"keydir: {exc}", file=sys.stderr)
            return 2
        uvicorn.run(
            "service.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            proxy_headers=False,
            server_header=False,
            # uvicorn's access log would write tokens (/verify/…) and looked-up addresses
            # (/vks/v1/by-email/…) at info level; our own request log names route templates.
            access_log=False,
            log_config=logs.config(args.log_level, settings.log_format),
            log_level=args.log_level,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
        )
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    return 0


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _Encrypted


def _tls_problem(cert: str | None, key: str | None) -> str | None:
    """None when the certificate and key can serve TLS, else a sentence saying why not."""
    if (cert is None) != (key is None):
        return "--tls-cert and --tls-key go together: give both, or neither for plain HTTP."
    if cert is None or key is None:
        return None
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):  # noqa: PTH113 - a str path, as uvicorn takes it
            return f"the {flag} file {path} does not exist."
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        return f"the TLS key in {key} is encrypted; keydir needs it without a passphrase."
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return f"the TLS key in {key} does not belong to the certificate in {cert}."
        return (
            f"{cert} and {key} are not a PEM certificate and its private key ({exc.reason or exc})."
        )
    except OSError as exc:
        return f"cannot read {cert} or {key}: {exc.strerror or exc}."
    return None


def _migrate(_args: argparse.Namespace) -> int:
    from service.db.migrate import pending_revision, upgrade  # noqa: PLC0415
    from service.db.session import make_engine  # noqa: PLC0415

    engine = make_engine(Settings().database_url)
    if pending_revision(engine) is None:
        print("keydir: the database schema is already current.")
        return 0
    upgrade(engine)
    print("keydir: the database schema is now current.")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from service.app import retention_of  # noqa: PLC0415
    from service.db.migrate import pending_revision  # noqa: PLC0415
    from service.db.session import make_engine, make_sessionmaker  # noqa: PLC0415
    from service.mail.dispatcher import Dispatcher  # noqa: PLC0415
    from service.mail.senders import sender_from_settings  # noqa: PLC0415
    from service.metrics import Metrics  # noqa: PLC0415

    settings = Settings()
    logs.configure(args.log_level, settings.log_format)
    engine = make_engine(settings.database_url)
    if pending_revision(engine) is not None:
        print("keydir: the database schema is out of date; run `keydir migrate`.", file=sys.stderr)
        return 2
    # With PROMETHEUS_MULTIPROC_DIR shared with `keydir serve` on the same host, the
    # server's /metrics includes what this worker sent.
    dispatcher = Dispatcher(
        make_sessionmaker(engine),
        sender_from_settings(settings),
        settings.mail_from,
        metrics=Metrics(),
        retention=retention_of(settings),
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()
        dispatcher.wake.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("keydir: mail worker running; stop with Ctrl-C.", file=sys.stderr)
    dispatcher.run_forever(stop, poll_seconds=args.poll)
    engine.dispose()
    return 0


def _export_wkd(args: argparse.Namespace) -> int:
    from service.api.wkd import POLICY  # noqa: PLC0415
    from service.core.directory import Directory  # noqa: PLC0415

    settings = Settings()
    # Each domain names a directory under DIR: anything but a domain name (`../x`, `/etc`)
    # would write elsewhere.
    domains: list[str] = []
    origin = "--domain {!r} is" if args.domain else "KEYDIR_WKD_DOMAINS holds {!r},"
    for given in args.domain or settings.wkd_domains:
        name = _domain_name(given)
        if name is None:
            print(f"keydir: {origin.format(given)} not a domain name.", file=sys.stderr)
            return 2
        domains.append(name)
    target = Path(args.directory)
    problem = _export_target_problem(target)
    if problem is not None:
        print(f"keydir: {problem}", file=sys.stderr)
        return 2

    def work(sessions: sessionmaker[Session]) -> int:
        # Read everything before writing anything: a database that fails leaves the old tree.
        files = Directory(sessions).wkd_files(domains or None)
        written = {d for d, _ in files} | set(domains)
        try:
            _replace_tree(target, POLICY, written, files)
        except OSError as exc:
            print(
                f"keydir: cannot write the WKD tree beside {target} "
                f"({exc.strerror or exc}); the previous export is unchanged.",
                file=sys.stderr,
            )
            return 2
        root = target / WKD_ROOT
        print(f"keydir: wrote {len(files)} keys for {len(written)} domains under {root}")
        return 0

    return _database_command(work)


# Where the advanced WKD method finds a domain's files, under the exported directory.
WKD_ROOT = Path(".well-known", "openpgpkey")
# The new tree is built beside DIR under this name plus a random suffix, then swapped in.
EXPORT_SUFFIX = ".export-"


def _export_target_problem(target: Path) -> str | None:
    """None when ``target`` may be replaced by a fresh export, else why not.

    Each export replaces the whole directory, so it must hold nothing but an earlier export:
    pointed at a web root by mistake, it would otherwise delete the site."""
    if not target.exists():
        return None  # made by this export (a dangling link is pointed at it)
    if not target.is_dir():
        return f"{target} is not a directory."
    for path in target.iterdir():
        if path.name != WKD_ROOT.parts[0] or not path.is_dir() or path.is_symlink():
            return _foreign(target, path)
        for inner in path.iterdir():
            if inner.name != WKD_ROOT.parts[1] or not inner.is_dir() or inner.is_symlink():
                return _foreign(target, inner)
    return None


def _foreign(target: Path, path: Path) -> str:
    return (
        f"{target} holds {path.relative_to(target)}, which keydir export-wkd did not write; "
        "each export replaces the whole directory, so give it a directory of its own."
    )


def _replace_tree(
    target: Path, policy: bytes, domains: set[str], files: dict[tuple[str, str], bytes]
) -> None:
    """Make ``target`` hold exactly ``files`` (and a policy per domain), never half-written.

    The tree is built beside ``target`` (same filesystem) and swapped in by renames, so a web
    server reading ``target`` sees the old tree or the new one. A symbolic link is pointed at
    the new tree; a real directory is exchanged with it in one step (Linux renameat2), or by
    two renames where the filesystem cannot."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    fresh = _new_directory(parent, target.name)
    try:
        if target.is_dir() and not target.is_symlink():
            shutil.copymode(target, fresh)
        for domain in sorted(domains):
            (fresh / WKD_ROOT / domain / "hu").mkdir(parents=True)
            (fresh / WKD_ROOT / domain / "policy").write_bytes(policy)
        for (domain, wkd_hash), body in sorted(files.items()):
            (fresh / WKD_ROOT / domain / "hu" / wkd_hash).write_bytes(body)
        # On disk before it is swapped in: a crash right after the swap must not leave
        # empty files where keys were.
        os.sync()
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if target.is_symlink():
        old = target.resolve()
        link = parent / f".{target.name}{EXPORT_SUFFIX}link-{os.urandom(4).hex()}"
        link.symlink_to(fresh.name)
        try:
            link.replace(target)
        except BaseException:
            link.unlink()
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        # Remove the previous tree only when an earlier export made it; one the operator
        # made stays where it is, no longer linked.
        if old.parent == parent.resolve() and old.name.startswith(target.name + EXPORT_SUFFIX):
            shutil.rmtree(old, ignore_errors=True)
    elif target.exists():
        try:
            _exchange(fresh, target)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        shutil.rmtree(fresh, ignore_errors=True)  # now the old tree
    else:
        fresh.rename(target)


def _new_directory(parent: Path, name: str) -> Path:
    while True:
        candidate = parent / f"{name}{EXPORT_SUFFIX}{os.urandom(4).hex()}"
        try:
            candidate.mkdir()  # with the umask, as the web server must read it
        except FileExistsError:
            continue
        return candidate


def _exchange(fresh: Path, target: Path) -> None:
    """Swap two directories: at once with renameat2(RENAME_EXCHANGE), else by two renames
    (for a moment ``target`` is then missing)."""
    import ctypes  # noqa: PLC0415
    import errno  # noqa: PLC0415

    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        done = renameat2(
            at_fdcwd, os.fsencode(fresh), at_fdcwd, os.fsencode(target), rename_exchange
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        # Not on this kernel or filesystem: fall back. Anything else is a real failure.
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    aside = target.parent / f"{target.name}{EXPORT_SUFFIX}old-{os.urandom(4).hex()}"
    target.rename(aside)
    try:
        fresh.rename(target)
    except BaseException:
        aside.rename(target)
        raise
    aside.rename(fresh)


def _import(args: argparse.Namespace) -> int:
    import contextlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from service.app import limits_from_settings  # noqa: PLC0415
    from service.core.directory import Directory  # noqa: PLC0415
    from service.core.importer import Importer, ImportReport, Rejection  # noqa: PLC0415
    from service.db.migrate import pending_revision  # noqa: PLC0415
    from service.db.session import make_engine, make_sessionmaker  # noqa: PLC0415

    settings = Settings()
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start:
        from service.db.migrate import upgrade  # noqa: PLC0415

        upgrade(engine)
    elif pending_revision(engine) is not None:
        print("keydir: the database schema is out of date; run `keydir migrate`.", file=sys.stderr)
        return 2
    for name in args.files:
        if name != "-" and not os.path.isfile(name):  # noqa: PTH113
            print(f"keydir: {name}: no such file.", file=sys.stderr)
            return 2
    total = sum(os.path.getsize(n) for n in args.files if n != "-")  # noqa: PTH202
    interactive = sys.stderr.isatty() and not args.quiet
    bar = tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        desc="importing",
        disable=not interactive,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    last_line = [time.monotonic()]

    def progress(report: ImportReport) -> None:
        rate = f"{report.keys_per_second:,.0f} keys/s"
        if interactive:
            bar.update(report.bytes_read - bar.n)
            bar.set_postfix_str(f"{report.read:,} keys, {rate}", refresh=False)
        elif not args.quiet and time.monotonic() - last_line[0] >= args.progress_every:
            last_line[0] = time.monotonic()
            done = f" ({100 * report.bytes_read / total:.0f}%)" if total else ""
            print(f"keydir import: {report.read:,} keys read{done}, {rate}", file=sys.stderr)

    def rejected(item: Rejection) -> None:
        if args.quiet:
            return
        label = f"key {item.fingerprint}" if item.fingerprint else f"key #{item.number}"
        (bar.write if interactive else print)(
            f"{item.source}: {label} (at byte {item.offset}): {item.reason}", file=sys.stderr
        )

    importer = Importer(
        Directory(make_sessionmaker(engine), limits_from_settings(settings)),
        workers=args.workers,
        batch_size=args.batch,
        max_key_bytes=args.max_key_bytes,
    )
    with contextlib.ExitStack() as files:
        sources = (
            (name, sys.stdin.buffer if name == "-" else files.enter_context(open(name, "rb")))  # noqa: PTH123
            for name in args.files
        )
        try:
            report = importer.run(sources, on_reject=rejected, on_progress=progress)
        except KeyboardInterrupt:
            bar.close()
            print("keydir: import interrupted; what was committed stays.", file=sys.stderr)
            return 130
    bar.close()
    engine.dispose()
    print(
        f"keydir: read {report.read:,} keys in {report.seconds:.1f} s "
        f"({report.keys_per_second:,.0f} keys/s): {report.new:,} imported, "
        f"{report.updated:,} updated, {report.unchanged:,} unchanged, "
        f"{report.rejected:,} rejected."
    )
    for reason, count in report.reasons.most_common():
        print(f"  {count:>7,} rejected: {reason}")
    if report.new or report.updated:
        print("keydir: imported addresses stay unpublished until their owners confirm them.")
    else:
        print("keydir: nothing in the database changed.")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from service.core.directory import Directory  # noqa: PLC0415

    def work(sessions: sessionmaker[Session]) -> int:
        report = Directory(sessions).repair(dry_run=args.dry_run)
        verb = "would repair" if args.dry_run else "repaired"
        print(
            f"keydir: {report.checked} keys checked, {verb} {report.repaired} "
            f"({report.bytes_before} bytes before, {report.bytes_after} after)."
        )
        if report.unreadable:
            print(
                f"keydir: {len(report.unreadable)} keys cannot be read under today's rules "
                "(key material refused since they were stored) and were left as they are; "
                "remove them with `keydir delete`:"
            )
            for fingerprint in report.unreadable:
                print(f"  {fingerprint}")
        return 0

    return _database_command(work)


def _admin_command(work: Callable[[Admin], int]) -> int:
    """Run an operator command on the configured database, refusing an outdated schema."""
    from service.core.admin import Admin  # noqa: PLC0415

    return _database_command(lambda sessions: work(Admin(sessions)))


def _database_command(work: Callable[[sessionmaker[Session]], int]) -> int:
    """Run a command on the configured database, refusing an outdated schema, a missing
    SQLite file and an unreachable database with a sentence (exit 2)."""
    from sqlalchemy.exc import InterfaceError, OperationalError  # noqa: PLC0415

    from service.core.queries import BadQuery  # noqa: PLC0415
    from service.db.migrate import pending_revision  # noqa: PLC0415
    from service.db.session import make_engine, make_sessionmaker  # noqa: PLC0415

    url = Settings().database_url
    if _missing_sqlite_file(url):
        # Opening it would create an empty file here and report on nothing.
        print(
            f"keydir: there is no database file at {url}; check KEYDIR_DATABASE_URL.",
            file=sys.stderr,
        )
        return 2
    engine = make_engine(url)
    try:
        if pending_revision(engine) is not None:
            print(
                "keydir: the database schema is out of date (or this is not a keydir "
                "database); check KEYDIR_DATABASE_URL and run `keydir migrate`.",
                file=sys.stderr,
            )
            return 2
        return work(make_sessionmaker(engine))
    except BadQuery as exc:
        print(f"keydir: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"keydir: the database cannot be reached ({reason}).", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


def _domain_name(text: str) -> str | None:
    """``text`` as the domain name addresses are stored with, or None when it is none."""
    from service.openpgp import InvalidAddress, normalize_address  # noqa: PLC0415

    try:
        return normalize_address(f"x@{text}").split("@", 1)[1]
    except InvalidAddress:
        return None


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    parsed = make_url(url)
    name = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(name)
        and name != ":memory:"
        and not Path(name or "").exists()
    )


def _fingerprint_text(parts: list[str]) -> str:
    # Accept a fingerprint pasted as gpg prints it, in groups, quoted or not.
    return "".join(parts)


def _describe(removed: Removed) -> str:
    return (
        f"keydir: deleted key {removed.fingerprint}: {removed.subkeys} subkeys, "
        f"{removed.addresses} addresses ({removed.published} of them published), "
        f"{removed.tokens} tokens, {removed.mails} unsent mails."
    )


def _delete(args: argparse.Namespace) -> int:
    from service.core.admin import NoSuchKey  # noqa: PLC0415

    def work(admin: Admin) -> int:
        try:
            removed = admin.delete(_fingerprint_text(args.fingerprint))
        except NoSuchKey as exc:
            print(f"keydir: {exc}", file=sys.stderr)
            return 1
        print(_describe(removed))
        return 0

    return _admin_command(work)


def _block(args: argparse.Namespace) -> int:
    def work(admin: Admin) -> int:
        if args.list:
            if args.fingerprint or args.reason is not None:
                print("keydir: --list takes no fingerprint and no reason.", file=sys.stderr)
                return 2
            entries = admin.blocklist()
            for entry in entries:
                when = entry.created_at.strftime("%Y-%m-%d %H:%M")
                print(f"{entry.fingerprint}  {when} UTC  {entry.reason or ''}".rstrip())
            print(f"keydir: {len(entries)} blocked.", file=sys.stderr)
            return 0
        if not args.fingerprint:
            print("keydir: name the fingerprint to block (or use --list).", file=sys.stderr)
            return 2
        result = admin.block(_fingerprint_text(args.fingerprint), args.reason)
        fpr = result.blocked.fingerprint
        print(
            f"keydir: blocked {fpr}; uploads of it are refused."
            if result.new
            else f"keydir: {fpr} was already blocked."
        )
        for removed in result.removed:
            print(_describe(removed))
        if not result.removed:
            print("keydir: no stored key held it.")
        return 0

    return _admin_command(work)


def _unblock(args: argparse.Namespace) -> int:
    from service.core.admin import NotBlocked  # noqa: PLC0415

    def work(admin: Admin) -> int:
        try:
            entry = admin.unblock(_fingerprint_text(args.fingerprint))
        except NotBlocked as exc:
            print(f"keydir: {exc}", file=sys.stderr)
            return 1
        print(f"keydir: unblocked {entry.fingerprint}; uploads of it are taken again.")
        return 0

    return _admin_command(work)


def _stats(args: argparse.Namespace) -> int:
    if args.top < 1:
        print("keydir: --top must be at least 1.", file=sys.stderr)
        return 2

    def work(admin: Admin) -> int:
        stats = admin.stats(top=args.top)
        if args.json:
            print(json.dumps(stats.as_dict(), indent=2))
            return 0
        states = ", ".join(f"{count} {state}" for state, count in stats.addresses.items())
        lines = [
            f"keys: {stats.keys} ({stats.keys_revoked} revoked)",
            f"addresses: {states}",
            f"published addresses by domain (top {args.top}):",
            *(f"  {domain or '(none)'}: {count}" for domain, count in stats.published_by_domain),
            f"outbox: {stats.outbox_pending} pending, {stats.outbox_failed} failed (retrying)",
            f"blocked: {stats.blocked}",
        ]
        if not stats.published_by_domain:
            lines.insert(3, "  (none)")
        print("\n".join(lines))
        return 0

    return _admin_command(work)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app, built without touching any real database."""
    from service.app import create_app  # noqa: PLC0415

    app = create_app(Settings(database_url="sqlite://", auto_migrate=True))
    try:
        return app.openapi()
    finally:
        app.state.engine.dispose()


def _openapi(args: argparse.Namespace) -> int:
    text = json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:  # noqa: PTH123
            handle.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keydir", description="A verifying OpenPGP key directory."
    )
    parser.add_argument("--version", action="version", version=f"keydir {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument("--log-level", default="info", help="debug, info, warning, error")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS: certificate chain (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="serve HTTPS: its private key (PEM)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="send queued mails (outbox dispatcher)")
    worker.add_argument("--poll", type=float, default=5.0, help="seconds between looks")
    worker.add_argument("--log-level", default="info", help="debug, info, warning, error")
    worker.set_defaults(run=_worker)

    export = commands.add_parser(
        "export-wkd", help="write the WKD tree (advanced layout) as static files"
    )
    export.add_argument("directory", help="where .well-known/openpgpkey/… is written")
    export.add_argument("--domain", action="append", default=[], help="only this domain")
    export.set_defaults(run=_export_wkd)

    imp = commands.add_parser(
        "import",
        help="import keyrings or SKS/Hockeypuck keydumps (addresses stay unpublished)",
        description=(
            "Import public keys from armored or binary keyrings and SKS/Hockeypuck keydump "
            "files, with the same verification as uploads. Imported addresses stay "
            "unpublished until their owners confirm them. Running it again is harmless."
        ),
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="keyring or keydump; - for stdin")
    imp.add_argument(
        "--workers", type=int, default=None, help="parsing processes (default: one per core)"
    )
    imp.add_argument("--batch", type=int, default=500, help="keys stored per transaction")
    imp.add_argument(
        "--max-key-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="skip (and report) keys larger than this",
    )
    imp.add_argument("--quiet", action="store_true", help="only the summary")
    imp.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        help="seconds between progress lines when not on a terminal",
    )
    imp.set_defaults(run=_import)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)

    delete = commands.add_parser(
        "delete", help="remove a key and everything about it (addresses, tokens, mails)"
    )
    delete.add_argument(
        "fingerprint", nargs="+", help="primary key fingerprint (40 or 64 hex, spaces allowed)"
    )
    delete.set_defaults(run=_delete)

    block = commands.add_parser(
        "block", help="refuse every upload of a key from now on (and delete it if stored)"
    )
    block.add_argument(
        "fingerprint", nargs="*", help="fingerprint of a primary key or a subkey to block"
    )
    block.add_argument("--reason", default=None, help="why (kept for operators, never shown)")
    block.add_argument("--list", action="store_true", help="list the blocked fingerprints")
    block.set_defaults(run=_block)

    unblock = commands.add_parser("unblock", help="take uploads of a blocked key again")
    unblock.add_argument("fingerprint", nargs="+", help="the blocked fingerprint")
    unblock.set_defaults(run=_unblock)

    stats = commands.add_parser("stats", help="count keys, addresses, queued mails, blocks")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.add_argument("--top", type=int, default=10, help="domains to list (default 10)")
    stats.set_defaults(run=_stats)

    repair = commands.add_parser(
        "repair",
        help="normalise every stored key's signatures (after an upgrade that asks for it)",
    )
    repair.add_argument("--dry-run", action="store_true", help="count, change nothing")
    repair.set_defaults(run=_repair)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document")
    openapi.add_argument("--output", "-o", default="-", help="file to write, - for stdout")
    openapi.set_defaults(run=_openapi)

    args = parser.parse_args(argv)
    # A set RUST_BACKTRACE makes every pysequoia error capture a backtrace (~12x slower).
    os.environ.pop("RUST_BACKTRACE", None)
    try:
        result: int = args.run(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"KEYDIR_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"keydir: a setting is invalid: {problems}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
