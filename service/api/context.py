"""What every HTTP adapter reads from the application: the core directory."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.core.directory import Directory
from service.core.lookups import KeyLookups
from service.core.ratelimit import MailBudget, RateLimiter, client_address


def directory_of(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


def _client(request: Request) -> str:
    trusted: list[str] = request.app.state.settings.trusted_proxies
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


def enforce(request: Request, bucket: str) -> None:
    """Count this request against the client's limit for ``bucket`` (raises RateLimited)."""
    limiter: RateLimiter = request.app.state.limiter
    limiter.check(bucket, _client(request))


def mail_budget(request: Request, *, prepaid: int = 0, hkp_offers: bool = False) -> MailBudget:
    """What the mails this request causes may use of its client's hourly mail limit
    (``prepaid``: mails already counted by ``enforce``); HKP offers are also capped per
    request and per recipient domain."""
    settings = request.app.state.settings
    return MailBudget(
        request.app.state.limiter,
        _client(request),
        prepaid=prepaid,
        per_request=settings.hkp_offers_per_request if hkp_offers else 0,
        per_domain=hkp_offers,
    )


def lookups_of(request: Request) -> KeyLookups:
    lookups: KeyLookups = request.app.state.lookups
    return lookups


async def enforce_async(request: Request, bucket: str) -> None:
    """``enforce`` from async code: free when the rule is off; a hit counted in this
    process (a batch not yet full) costs no thread; writes to the database or Redis run in
    a worker thread."""
    limiter: RateLimiter = request.app.state.limiter
    if not limiter.active(bucket):
        return
    if limiter.shared_store:
        await run_in_threadpool(enforce, request, bucket)
        return
    pending = limiter.count_here(bucket, _client(request))
    if pending is not None:
        await run_in_threadpool(limiter.write, pending)
