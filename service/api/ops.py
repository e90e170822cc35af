"""For operators: liveness, readiness and Prometheus metrics. Not part of the public API
(left out of the OpenAPI document); docs/deploy.md describes them."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from service.core.health import Readiness
from service.core.ratelimit import client_address, is_trusted_proxy
from service.metrics import CONTENT_TYPE, Metrics

router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive and its event loop answers; the database is not touched."""
    return PlainTextResponse("ok\n", headers=_NO_STORE)


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is current."""
    readiness: Readiness = request.app.state.readiness
    problem = readiness.problem()
    if problem is not None:
        return PlainTextResponse(
            f"Not ready: {problem}\n",
            status_code=503,
            headers={**_NO_STORE, "Retry-After": "10"},
        )
    return PlainTextResponse("ok\n", headers=_NO_STORE)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format, for the networks in KEYDIR_METRICS_ALLOW only."""
    if not _metrics_allowed(request):
        return PlainTextResponse(
            "The metrics are not public; they are served only to the networks in "
            "KEYDIR_METRICS_ALLOW.\n",
            status_code=403,
            headers=_NO_STORE,
        )
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE, headers=_NO_STORE)


def _metrics_allowed(request: Request) -> bool:
    settings = request.app.state.settings
    trusted: list[str] = settings.trusted_proxies
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if (forwarded is not None or "forwarded" in request.headers) and (
        forwarded is None or not is_trusted_proxy(peer, trusted)
    ):
        # A proxy we do not trust (or cannot read) forwarded this: the peer, often that
        # proxy on loopback, says nothing about who asks, and the world must not get in.
        return False
    try:
        client = ipaddress.ip_address(client_address(peer, forwarded, trusted))
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped  # a dual-stack socket names IPv4 peers this way
    allowed: list[str] = settings.metrics_allow
    return any(client in ipaddress.ip_network(network, strict=False) for network in allowed)
