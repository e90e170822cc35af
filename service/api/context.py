"""What every HTTP adapter reads from the application: the core directory."""

from __future__ import annotations

from fastapi import Request

from service.core.directory import Directory
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
