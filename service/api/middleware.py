"""Pure ASGI middleware: CORS for the key protocols, the request body size limit, and the
request log, request id, metrics and HSTS of every request.

Pure ASGI (not BaseHTTPMiddleware) so that lookups pay almost nothing for it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import REQUEST_ID
from service.metrics import UNMATCHED, Metrics

# Every response of these paths is readable by any web origin: keys are public, and browser
# extensions and web mail call VKS, HKP and WKD directly (PROTOCOLS.md).
PROTOCOL_PREFIXES = ("/vks/", "/pks/", "/.well-known/openpgpkey/")


def _is_protocol(path: str) -> bool:
    return path.startswith(PROTOCOL_PREFIXES)


def _wants_json_errors(scope: Scope) -> bool:
    return bool(scope["path"].startswith("/vks/") and scope["method"] == "POST")


class ProtocolCORS:
    """Add ``Access-Control-Allow-Origin: *`` and answer preflights on protocol paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_protocol(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            requested = b"*"
            for name, value in scope["headers"]:
                if name == b"access-control-request-headers":
                    requested = value
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        (b"access-control-allow-origin", b"*"),
                        (b"access-control-allow-methods", b"GET, HEAD, POST, OPTIONS"),
                        (b"access-control-allow-headers", requested),
                        (b"access-control-max-age", b"86400"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0] != b"access-control-allow-origin"
                ]
                headers.append((b"access-control-allow-origin", b"*"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


class HeadAsGet:
    """Answer HEAD on every GET route: run it as GET and send only the headers.

    WKD and HKP clients and caches send HEAD; FastAPI routes declare GET only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before the application reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await self._refuse(scope, send, 400, "The Content-Length header is invalid.")
                    return
                if declared > self.max_bytes:
                    await self._too_large(scope, send)
                    return
        # Read the whole body first (it is small by definition) so that an oversized one is
        # refused before any application code runs, whatever the client declared.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope,
            send,
            413,
            f"The request is too large: at most {self.max_bytes} bytes are accepted.",
        )

    async def _refuse(self, scope: Scope, send: Send, status: int, sentence: str) -> None:
        if _wants_json_errors(scope):
            body = json.dumps({"error": sentence}).encode()
            content_type = b"application/json"
        else:
            body = sentence.encode() + b"\n"
            content_type = b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# Lookups by protocol, by route template: the routes that look a key up.
LOOKUP_ROUTES = {
    "/vks/v1/by-fingerprint/{fingerprint}": "vks",
    "/vks/v1/by-keyid/{key_id}": "vks",
    "/vks/v1/by-email/{address}": "vks",
    "/pks/lookup": "hkp",
    "/.well-known/openpgpkey/{domain}/hu/{wkd_hash}": "wkd",
    "/.well-known/openpgpkey/hu/{wkd_hash}": "wkd",
    "/search": "web",
}
_LOOKUP_RESULTS = {200: "found", 304: "not_modified", 404: "not_found", 429: "rate_limited"}
# Health checks and scrapes arrive every few seconds: their request lines are debug-level
# unless something is wrong.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_SCOPE_KEY = "keydir.observed"
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HSTS = (b"strict-transport-security", b"max-age=31536000")

request_log = logging.getLogger("keydir.request")


def lookup_result(status: int) -> str:
    if status in _LOOKUP_RESULTS:
        return _LOOKUP_RESULTS[status]
    return "error" if status >= 500 and status != 501 else "invalid"


@dataclass(slots=True)
class _Observed:
    route: str | None = None


class Observe:
    """The outermost layer: request id, HSTS, one log line and the metrics of each request.

    Only the route template is logged and counted, never the raw path (it carries addresses
    and tokens) nor the query.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute], *, hsts: bool
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _incoming_request_id(scope) or _new_request_id()
        observed = _Observed()
        scope = {**scope, _SCOPE_KEY: observed}
        hsts = self.hsts or scope.get("scheme") == "https"
        status = 500  # what the server answers if the application fails before it does

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                if hsts:
                    headers.append(_HSTS)
                message = {**message, "headers": headers}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            route = observed.route or self._resolve(scope, status)
            method = scope["method"]
            self.metrics.request(method, route, status, seconds)
            protocol = LOOKUP_ROUTES.get(route)
            if protocol is not None and method in ("GET", "HEAD"):
                self.metrics.lookup(protocol, lookup_result(status))
            level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
            if request_log.isEnabledFor(level):
                duration_ms = round(seconds * 1000, 1)
                request_log.log(
                    level,
                    "%s %s %s %.1fms",
                    method,
                    route,
                    status,
                    duration_ms,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": duration_ms,
                    },
                )
            REQUEST_ID.reset(token)

    def _resolve(self, scope: Scope, status: int) -> str:
        """The template of a request the router never saw (a CORS preflight, a refused
        body); a 404 there means no route matched."""
        if status == 404:
            return UNMATCHED
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", UNMATCHED))
            if match == Match.PARTIAL and partial is None:
                partial = str(getattr(route, "path", UNMATCHED))
        return partial or UNMATCHED


class RouteProbe:
    """Innermost layer: hands the route the router matched to ``Observe`` (whose scope is
    a copy, so it never sees the router's writes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            observed = scope.get(_SCOPE_KEY)
            route = scope.get("route")
            if observed is not None and route is not None:
                observed.route = getattr(route, "path", None)
            elif observed is not None and "keydir.route" in scope:
                observed.route = scope["keydir.route"]  # answered by the lookup fast path


class _RequestIds:
    """Request ids need to be unique, not secret: a random prefix per process (made anew
    in a forked child) and a counter; os.urandom for each request cost more than the rest
    of the request line."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._prefix = secrets.token_hex(6)
        return f"{self._prefix}{next(self._counter):012x}"


_new_request_id = _RequestIds()


def _incoming_request_id(scope: Scope) -> str | None:
    """A proxy's X-Request-ID, when it is a plain token (it is echoed and logged)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None
