"""Per-client rate limits for uploads, mail requests and lookups by address.

Counters live in the database (fixed windows), or in Redis when configured, so several
server processes share them.
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session, sessionmaker

from service.db import ratelimit as counters

UPLOAD = "upload"
MAIL = "mail"
ADDRESS_LOOKUP = "address_lookup"


@dataclass(frozen=True, slots=True)
class Rule:
    limit: int  # requests per window; 0 turns the rule off
    window_seconds: int


class RateLimited(Exception):
    """Too many requests of this kind from this client; retry after ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass
class RateLimiter:
    """Counts in the database, or in Redis when ``redis_url`` is set (the `limits` library)."""

    sessions: sessionmaker[Session]
    rules: dict[str, Rule]
    redis_url: str | None = None

    def __post_init__(self) -> None:
        self._redis: FixedWindowRateLimiter | None = None
        if self.redis_url:
            self._redis = FixedWindowRateLimiter(storage_from_string(self.redis_url))

    def active(self, bucket: str) -> bool:
        rule = self.rules.get(bucket)
        return rule is not None and rule.limit > 0

    def check(self, bucket: str, client: str) -> None:
        """Count a request; raise RateLimited when the client is over the bucket's limit."""
        rule = self.rules.get(bucket)
        if rule is None or rule.limit <= 0:
            return
        if self._redis is not None:
            item = RateLimitItemPerSecond(rule.limit, rule.window_seconds)
            if not self._redis.hit(item, "keydir", bucket, client[:64]):
                reset = self._redis.get_window_stats(item, "keydir", bucket, client[:64])
                raise RateLimited(max(1, int(reset.reset_time - time.time()) + 1))
            return
        now = time.time()
        window = int(now // rule.window_seconds)
        with self.sessions.begin() as session:
            count = counters.hit(session, bucket, client[:64], window)
            if random.random() < 0.01:  # noqa: S311 - housekeeping, not security
                counters.forget_before(session, bucket, window - 1)
        if count > rule.limit:
            raise RateLimited(int((window + 1) * rule.window_seconds - now) + 1)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    untrusted address in X-Forwarded-For (only trusted proxies may speak for others)."""

    address = peer or "unknown"
    if forwarded_for and is_trusted_proxy(address, trusted):
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            address = hop
            if not is_trusted_proxy(hop, trusted):
                break
    return address


def is_trusted_proxy(address: str, trusted: list[str]) -> bool:
    """Is ``address`` one of the proxies (addresses or networks) in ``trusted``?"""
    for entry in trusted:
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if address == entry:
                return True
    return False
