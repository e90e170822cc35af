"""Per-client rate limits for uploads, mail requests and lookups by address.

Counters live in the database (fixed windows), so several server processes share them.
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass

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
    sessions: sessionmaker[Session]
    rules: dict[str, Rule]

    def check(self, bucket: str, client: str) -> None:
        """Count a request; raise RateLimited when the client is over the bucket's limit."""
        rule = self.rules.get(bucket)
        if rule is None or rule.limit <= 0:
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

    def is_trusted(address: str) -> bool:
        for entry in trusted:
            try:
                if ipaddress.ip_address(address) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                if address == entry:
                    return True
        return False

    address = peer or "unknown"
    if forwarded_for and is_trusted(address):
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            address = hop
            if not is_trusted(hop):
                break
    return address
