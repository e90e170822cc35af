"""The `keydir` command."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
import tempfile
from typing import Any

from pydantic import ValidationError

from service import logs
from service.settings import Settings

# prometheus_client's name for it; service.metrics is not imported here (see _serve).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs it

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

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)

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
