"""The `keydir` command."""

from __future__ import annotations

import argparse
import json
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

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document")
    openapi.add_argument("--output", "-o", default="-", help="file to write, - for stdout")
    openapi.set_defaults(run=_openapi)

    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
