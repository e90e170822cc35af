"""What every HTTP adapter reads from the application: the core directory."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.core.directory import Directory
from service.core.lookups import KeyLookups
from service.core.ratelimit import RateLimiter, client_address


def directory_of(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


def enforce(request: Request, bucket: str) -> None:
    """Count this request against the client's limit for ``bucket`` (raises RateLimited)."""
    limiter: RateLimiter = request.app.state.limiter
    trusted: list[str] = request.app.state.settings.trusted_proxies
    peer = request.client.host if request.client else None
    limiter.check(bucket, client_address(peer, request.headers.get("x-forwarded-for"), trusted))


def lookups_of(request: Request) -> KeyLookups:
    lookups: KeyLookups = request.app.state.lookups
    return lookups


async def enforce_async(request: Request, bucket: str) -> None:
    """``enforce`` from async code: free when the rule is off, else in a worker thread
    (the counters are in the database or in Redis)."""
    limiter: RateLimiter = request.app.state.limiter
    if limiter.active(bucket):
        await run_in_threadpool(enforce, request, bucket)
