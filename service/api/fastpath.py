"""Key lookups answered before the framework's routing: the hot path, in pure ASGI.

GET requests for VKS by-fingerprint/by-keyid/by-email, HKP `op=get` and WKD keys go straight
to the very endpoint functions the routes call, skipping route matching and parameter
validation, which cost more than the lookup itself. Anything else, or anything these paths
do not recognise exactly, goes on to the application unchanged, so every answer is the one
the routes give (tests/api/test_fastpath.py compares them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import Receive, Scope, Send

from service.api import hkp, responses, vks, wkd
from service.core.lookups import LookupUnavailable
from service.core.ratelimit import RateLimited

log = logging.getLogger(__name__)

_VKS = "/vks/v1/by-"
_WKD = "/.well-known/openpgpkey/"
Handler = Callable[[Request], Awaitable[Response]]

# The route templates, for whoever labels requests by route (metrics, logs).
ROUTES = {
    "fingerprint": "/vks/v1/by-fingerprint/{fingerprint}",
    "keyid": "/vks/v1/by-keyid/{key_id}",
    "email": "/vks/v1/by-email/{address}",
    "hkp": "/pks/lookup",
    "wkd-advanced": "/.well-known/openpgpkey/{domain}/hu/{wkd_hash}",
    "wkd-direct": "/.well-known/openpgpkey/hu/{wkd_hash}",
}


def _route(path: str) -> tuple[str, Handler] | None:
    """The endpoint for a lookup path, or None to leave the request to the application."""
    if path.startswith(_VKS):
        kind, _, value = path[len(_VKS) :].partition("/")
        if not value or "/" in value:
            return None
        if kind == "fingerprint":
            return ROUTES[kind], lambda r: vks.by_fingerprint(r, value)
        if kind == "keyid":
            return ROUTES[kind], lambda r: vks.by_keyid(r, value)
        if kind == "email":
            return ROUTES[kind], lambda r: vks.by_email(r, value)
        return None
    if path == "/pks/lookup":
        return ROUTES["hkp"], _hkp
    if path.startswith(_WKD):
        parts = path[len(_WKD) :].split("/")
        if len(parts) == 3 and parts[1] == "hu" and parts[0] and parts[2]:
            domain, _, wkd_hash = parts
            return ROUTES["wkd-advanced"], lambda r: wkd.advanced(r, domain, wkd_hash)
        if len(parts) == 2 and parts[0] == "hu" and parts[1]:
            wkd_hash = parts[1]
            return ROUTES["wkd-direct"], lambda r: wkd.direct(r, wkd_hash)
    return None


async def _hkp(request: Request) -> Response:
    params = request.query_params
    return await hkp.lookup(
        request,
        op=params.get("op"),
        search=params.get("search"),
        options=params.get("options"),
        exact=params.get("exact"),
        fingerprint=params.get("fingerprint"),
    )


class LookupFastPath:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        found = _route(scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        template, handler = found
        scope["app"] = self.app
        scope["keydir.route"] = template
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except RateLimited as exc:
            response = responses.too_many_requests(request, exc.retry_after)
        except (LookupUnavailable, OperationalError, InterfaceError) as exc:
            log.warning("database unavailable: %s", type(exc).__name__)
            response = responses.database_unavailable(request)
        except Exception:
            log.exception("unexpected error on a lookup (%s)", template)
            response = responses.unexpected_error(request)
        await response(scope, receive, send)
