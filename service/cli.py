"""The `keydir` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from service.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs it

    from service.app import SchemaOutdated, build  # noqa: PLC0415

    settings = Settings()
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
        # (/vks/v1/by-email/…) at info level; neither may appear in logs.
        access_log=False,
        log_level=args.log_level,
    )
    return 0


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

    from service.db.migrate import pending_revision  # noqa: PLC0415
    from service.db.session import make_engine, make_sessionmaker  # noqa: PLC0415
    from service.mail.dispatcher import Dispatcher  # noqa: PLC0415
    from service.mail.senders import sender_from_settings  # noqa: PLC0415

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    engine = make_engine(settings.database_url)
    if pending_revision(engine) is not None:
        print("keydir: the database schema is out of date; run `keydir migrate`.", file=sys.stderr)
        return 2
    dispatcher = Dispatcher(
        make_sessionmaker(engine), sender_from_settings(settings), settings.mail_from
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
    from pathlib import Path  # noqa: PLC0415

    from service.api.wkd import POLICY  # noqa: PLC0415
    from service.core.directory import Directory  # noqa: PLC0415
    from service.db.session import make_engine, make_sessionmaker  # noqa: PLC0415

    settings = Settings()
    engine = make_engine(settings.database_url)
    domains = [d.lower() for d in args.domain] or settings.wkd_domains or None
    files = Directory(make_sessionmaker(engine)).wkd_files(domains)
    engine.dispose()
    root = Path(args.directory) / ".well-known" / "openpgpkey"
    written = {d for d, _ in files} | set(domains or ())
    for domain in sorted(written):
        (root / domain / "hu").mkdir(parents=True, exist_ok=True)
        (root / domain / "policy").write_bytes(POLICY)
    for (domain, wkd_hash), body in sorted(files.items()):
        (root / domain / "hu" / wkd_hash).write_bytes(body)
    print(f"keydir: wrote {len(files)} keys for {len(written)} domains under {root}")
    return 0


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
    return 0


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
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument("--log-level", default="info", help="debug, info, warning, error")
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

    openapi = commands.add_parser("openapi", help="print the OpenAPI document")
    openapi.add_argument("--output", "-o", default="-", help="file to write, - for stdout")
    openapi.set_defaults(run=_openapi)

    args = parser.parse_args(argv)
    # A set RUST_BACKTRACE makes every pysequoia error capture a backtrace (~12x slower).
    os.environ.pop("RUST_BACKTRACE", None)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
