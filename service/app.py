"""The application factory: ``create_app(settings)`` builds everything; nothing at import."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from service import __version__
from service.api import hkp, ops, responses, vks, web, wkd
from service.api.fastpath import LookupFastPath
from service.api.middleware import BodyLimit, HeadAsGet, Observe, ProtocolCORS, RouteProbe
from service.core import ratelimit
from service.core.directory import Directory, Limits, Site
from service.core.health import Readiness
from service.core.lookups import KeyLookups, LookupUnavailable
from service.core.parsing import BoundedParser
from service.core.ratelimit import RateLimited, RateLimiter, Rule
from service.db.migrate import pending_revision, upgrade
from service.db.session import make_engine, make_sessionmaker
from service.mail.dispatcher import Dispatcher
from service.mail.senders import sender_from_settings
from service.metrics import Metrics
from service.openpgp import KeyLimits, KeyRejected, read_upload
from service.settings import Settings

log = logging.getLogger(__name__)


class SchemaOutdated(RuntimeError):
    """The database schema is older than this code."""


def _error(request: Request, status: int, sentence: str) -> Response:
    return responses.error_response(request, status, sentence)


def retention_of(settings: Settings) -> timedelta | None:
    """How long sent mails and spent tokens are kept (None: for good)."""
    return timedelta(days=settings.retention_days) if settings.retention_days else None


def limits_from_settings(settings: Settings) -> Limits:
    return Limits(
        max_keys_per_upload=settings.max_keys_per_upload,
        max_packets_per_key=settings.max_packets_per_key,
        key=KeyLimits(
            max_user_ids=settings.max_user_ids_per_key,
            max_subkeys=settings.max_subkeys_per_key,
            max_user_id_bytes=settings.max_user_id_bytes,
        ),
        upload_token_lifetime=timedelta(hours=settings.upload_token_hours),
        verify_token_lifetime=timedelta(days=settings.verify_token_days),
        manage_token_lifetime=timedelta(hours=settings.manage_token_hours),
        mail_interval=timedelta(seconds=settings.mail_interval_seconds),
    )


def create_app(settings: Settings) -> FastAPI:
    # A set RUST_BACKTRACE makes every pysequoia error capture a backtrace (~12x slower).
    os.environ.pop("RUST_BACKTRACE", None)
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start:
        upgrade(engine)
    elif pending_revision(engine) is not None:
        raise SchemaOutdated(
            "The database schema is out of date for this version of keydir. "
            "Run `keydir migrate` (with the same KEYDIR_DATABASE_URL), then start again."
        )
    sessions = make_sessionmaker(engine)
    metrics = Metrics()
    dispatcher = Dispatcher(
        sessions,
        sender_from_settings(settings),
        settings.mail_from,
        metrics=metrics,
        retention=retention_of(settings),
    )
    parser = (
        BoundedParser(
            settings.parse_workers, settings.parse_timeout_seconds, settings.parse_memory_bytes
        )
        if settings.parse_workers > 0
        else None
    )
    directory = Directory(
        sessions,
        limits_from_settings(settings),
        Site(settings.base_url),
        on_mail_queued=dispatcher.wake.set,
        parser=parser or read_upload,
        metrics=metrics,
    )
    lookups = KeyLookups(
        directory,
        settings.lookup_database_url or settings.database_url,
        cache_seconds=settings.lookup_cache_seconds,
        cache_entries=settings.lookup_cache_entries,
    )
    metrics.read_store_with(directory.stats)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = dispatcher.start_thread(stop) if settings.dispatch_mail else None
        # What start-up made (modules, routes, templates) lives as long as the process:
        # keep the collector from walking it again and again under load.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        stop.set()
        dispatcher.wake.set()
        if thread is not None:
            thread.join(timeout=30)
        if parser is not None:
            parser.close()
        await lookups.close()
        engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="keydir",
        version=__version__,
        summary="A verifying public OpenPGP key directory (VKS, HKP, WKD).",
        # FastAPI's docs pages load their scripts from a CDN, which our privacy page rules
        # out: the API is described by /api/openapi.json (and openapi/openapi.json).
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.directory = directory
    app.state.lookups = lookups
    app.state.limiter = RateLimiter(
        sessions,
        {
            ratelimit.UPLOAD: Rule(settings.rate_uploads_per_hour, 3600),
            ratelimit.MAIL: Rule(settings.rate_mail_requests_per_hour, 3600),
            ratelimit.ADDRESS_LOOKUP: Rule(settings.rate_address_lookups_per_minute, 60),
            ratelimit.WKD_CHECK: Rule(settings.rate_wkd_checks_per_hour, 3600),
            ratelimit.OFFER_DOMAIN: Rule(settings.rate_hkp_offers_per_domain_per_hour, 3600),
        },
        redis_url=settings.redis_url,
    )
    app.state.dispatcher = dispatcher
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.readiness = Readiness(engine)
    routers = (vks.router, hkp.router, wkd.router, wkd.check_router, web.router, ops.router)
    for router in routers:
        app.include_router(router)
    # Our routes with their full templates, for naming requests that never reach the router.
    app.state.route_table = [route for router in routers for route in router.routes]

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'body'}: "
            f"{err.get('msg', 'invalid')}"
            for err in exc.errors()[:3]
        )
        return _error(request, 422, f"The request is not what this endpoint expects ({details}).")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        sentence = {
            404: "There is nothing at this address.",
            405: "This endpoint does not accept that HTTP method.",
        }.get(exc.status_code, str(exc.detail))
        response = _error(request, exc.status_code, sentence)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(KeyRejected)
    async def _stored_key_unreadable(request: Request, exc: KeyRejected) -> Response:
        # Routes answer a refused upload themselves; what reaches here is a key stored
        # under older rules that today's cannot read (`keydir repair` lists them).
        log.warning("a stored key cannot be read: %s", type(exc).__name__)
        return _error(
            request,
            409,
            "This key was stored under older rules and cannot be changed now; the operator "
            "of this key directory can repair or remove it.",
        )

    @app.exception_handler(LookupUnavailable)
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_away(request: Request, exc: Exception) -> Response:
        # The database is down or unreachable: say so at once (never a 5xx that clients
        # read as "this server is broken" for good, never a hang); the pool reconnects by
        # itself when the database is back.
        log.warning("database unavailable: %s", type(exc).__name__)
        return responses.database_unavailable(request)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Response:
        path = request.url.path
        if path.startswith(("/vks/", "/pks/", "/.well-known/")):
            return responses.too_many_requests(request, exc.retry_after)
        sentence = (
            "Too many requests of this kind from your address. "
            f"Try again in {exc.retry_after} seconds."
        )
        response = web.error_page(request, 429, "Too many requests", sentence)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(web.CsrfFailed)
    async def _csrf_failed(request: Request, exc: web.CsrfFailed) -> Response:
        return web.error_page(
            request,
            403,
            "Form expired",
            "This form expired or was sent from another site. Go back, reload the page and "
            "try again.",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # The route template, never the path: paths carry tokens and addresses.
        route = getattr(request.scope.get("route"), "path", "an unmatched path")
        log.exception("unexpected error on %s %s", request.method, route)
        return responses.unexpected_error(request)

    return app


def wrap(app: FastAPI, settings: Settings) -> ASGIApp:
    """The ASGI stack around the application: the request log and metrics outermost, so
    they see every answer; then CORS, so refusals carry it too; the lookup fast path
    innermost, so that its answers are observed like every other."""
    inner: ASGIApp = LookupFastPath(app) if settings.lookup_fast_path else app
    stack = ProtocolCORS(HeadAsGet(BodyLimit(RouteProbe(inner), settings.max_upload_bytes)))
    return Observe(stack, app.state.metrics, app.state.route_table, hsts=settings.tls_proxy)


def build(settings: Settings) -> ASGIApp:
    return wrap(create_app(settings), settings)


def app_from_env() -> ASGIApp:
    """Factory for uvicorn (`--factory`): each worker process builds its own from the env."""
    return build(Settings())
