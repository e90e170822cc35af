"""WKD, the Web Key Directory (draft-koch-openpgp-webkey-service-22), for many domains.

A domain owner points `openpgpkey.<domain>` at this server (advanced method) or lets
`<domain>` itself reach it (direct method). Answers are the binary key carrying only the
requested address's user IDs; failures are plain-text 404s (Thunderbird rejects HTML, and
GnuPG caches a domain as "no WKD" when the policy file is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.api import responses
from service.api.context import directory_of, enforce_async, lookups_of
from service.api.responses import CACHE_CONTROL
from service.core import ratelimit
from service.core.wkd import HASH_PATTERN
from service.core.wkd_check import SITE_HEADER, check_domain
from service.openpgp import InvalidAddress, normalize_address

router = APIRouter(prefix="/.well-known/openpgpkey", tags=["WKD"])

# An empty policy is valid (draft section 4.5); its existence is what clients check.
POLICY = b""
_NOT_FOUND = "No key is published here for this address.\n"
_POLICY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "The (empty) policy file."},
    404: {"content": {"text/plain": {}}, "description": "WKD is not served for the domain."},
}


def _host(request: Request) -> str:
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _served_domain(request: Request, domain: str) -> bool:
    allowed: list[str] = request.app.state.settings.wkd_domains
    return not allowed or domain in allowed


async def _key(request: Request, domain: str, wkd_hash: str) -> Response:
    await enforce_async(request, ratelimit.ADDRESS_LOOKUP)
    domain = domain.lower().rstrip(".")
    if not HASH_PATTERN.match(wkd_hash) or not _served_domain(request, domain):
        return PlainTextResponse(_NOT_FOUND, status_code=404)
    body = await lookups_of(request).wkd(domain, wkd_hash)
    if body is None:
        return PlainTextResponse(_NOT_FOUND, status_code=404)
    return Response(
        body, media_type="application/octet-stream", headers={"Cache-Control": CACHE_CONTROL}
    )


def _advanced_host_ok(request: Request, domain: str) -> bool:
    """The advanced method is answered on `openpgpkey.<domain>` (or our own name)."""
    host = _host(request)
    return host in (f"openpgpkey.{domain.lower()}", directory_of(request).site.name)


@router.get(
    "/{domain}/hu/{wkd_hash}",
    operation_id="wkd_advanced",
    response_class=Response,
    summary="WKD advanced method: the key for a local-part hash in a domain",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "Binary key."},
        404: {"content": {"text/plain": {}}, "description": "Not found."},
    },
)
async def advanced(request: Request, domain: str, wkd_hash: str) -> Response:
    if not _advanced_host_ok(request, domain):
        return PlainTextResponse(
            f"This host name does not serve WKD for {domain}.\n", status_code=404
        )
    return await _key(request, domain, wkd_hash)


@router.get(
    "/{domain}/policy",
    operation_id="wkd_advanced_policy",
    response_class=Response,
    responses=_POLICY_RESPONSES,
    summary="WKD advanced method: the policy file of a domain",
)
def advanced_policy(request: Request, domain: str) -> Response:
    if not _advanced_host_ok(request, domain) or not _served_domain(request, domain.lower()):
        return PlainTextResponse(f"WKD is not served for {domain} here.\n", status_code=404)
    return _policy(request)


@router.get(
    "/hu/{wkd_hash}",
    operation_id="wkd_direct",
    response_class=Response,
    summary="WKD direct method: the key for a local-part hash (domain from the Host header)",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "Binary key."},
        404: {"content": {"text/plain": {}}, "description": "Not found."},
    },
)
async def direct(request: Request, wkd_hash: str) -> Response:
    return await _key(request, _host(request), wkd_hash)


@router.get(
    "/policy",
    operation_id="wkd_direct_policy",
    response_class=Response,
    responses=_POLICY_RESPONSES,
    summary="WKD direct method: the policy file",
)
def direct_policy(request: Request) -> Response:
    if not _served_domain(request, _host(request)):
        return PlainTextResponse("WKD is not served for this domain here.\n", status_code=404)
    return _policy(request)


def _policy(request: Request) -> Response:
    # The header lets the domain check below see that a policy came from this service.
    return Response(
        POLICY, media_type="text/plain", headers={SITE_HEADER: directory_of(request).site.name}
    )


class CheckResult(BaseModel):
    domain: str
    host: str = Field(description="The name WKD clients ask: openpgpkey.<domain>.")
    resolved: list[str] = Field(description="Addresses the name resolves to.")
    dns_ok: bool
    policy_ok: bool = Field(description="The policy file was fetched over HTTPS.")
    served_here: bool = Field(description="…and it came from this service.")
    published_addresses: int = Field(description="Confirmed addresses in the domain.")
    problem: str | None = Field(description="What to fix, if anything.")


check_router = APIRouter(tags=["WKD"])

# A check may hold a thread until its deadline, and anyone can ask for one that does (a
# domain whose server answers a byte at a time). Checks run on their own few threads, so the
# routes that share the application's thread pool (pages, uploads) never wait behind them;
# a check that finds them all taken waits (without a thread) at most its own time limit.
CHECKS_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class _CheckSlots:
    admission: anyio.Semaphore  # waited on without a thread
    threads: anyio.CapacityLimiter  # never contended: only admitted checks get here


def _check_slots(request: Request) -> _CheckSlots:
    state = request.app.state
    if getattr(state, "wkd_check_slots", None) is None:
        state.wkd_check_slots = _CheckSlots(
            anyio.Semaphore(CHECKS_AT_ONCE), anyio.CapacityLimiter(CHECKS_AT_ONCE)
        )
    slots: _CheckSlots = state.wkd_check_slots
    return slots


@check_router.get(
    "/wkd/check/{domain}",
    operation_id="wkd_check",
    response_model=CheckResult,
    summary="Is WKD for a domain set up to reach this server?",
    responses={
        400: {"content": {"text/plain": {}}, "description": "Not a domain name."},
        429: {
            "content": {"text/plain": {}},
            "description": "Too many checks from you, or too many running at once.",
        },
    },
)
async def check(request: Request, domain: str) -> CheckResult | Response:
    try:
        domain = normalize_address(f"x@{domain}").split("@", 1)[1]
    except InvalidAddress:
        return PlainTextResponse("This is not a valid domain name.\n", status_code=400)
    try:
        await enforce_async(request, ratelimit.WKD_CHECK)
    except ratelimit.RateLimited as exc:
        return responses.too_many_requests(request, exc.retry_after)
    directory = directory_of(request)
    settings = request.app.state.settings
    timeout: float = settings.wkd_check_timeout_seconds
    run = partial(
        check_domain,
        domain,
        directory.site.name,
        allow_private=settings.wkd_check_allow_private,
        timeout=timeout,
    )
    slots = _check_slots(request)
    with anyio.move_on_after(timeout) as waiting:
        await slots.admission.acquire()
    if waiting.cancelled_caught:
        response = responses.text(
            "Too many domain checks are running on this server; try again in a minute.", 429
        )
        response.headers["Retry-After"] = "60"
        return response
    try:
        result = await anyio.to_thread.run_sync(run, limiter=slots.threads)
    finally:
        slots.admission.release()
    return CheckResult(
        domain=result.domain,
        host=result.host,
        resolved=result.resolved,
        dns_ok=result.dns_ok,
        policy_ok=result.policy_ok,
        served_here=result.served_here,
        published_addresses=await run_in_threadpool(directory.wkd_published_count, domain),
        problem=result.problem,
    )
