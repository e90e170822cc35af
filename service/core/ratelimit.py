"""Per-client rate limits for uploads, mails and lookups by address, and the mail budget
of one request.

Counters live in the database (fixed windows), or in Redis when configured, so several
server processes share them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session, sessionmaker

from service.db import ratelimit as counters

UPLOAD = "upload"
MAIL = "mail"  # per client: every mail a client's requests cause
ADDRESS_LOOKUP = "address_lookup"
WKD_CHECK = "wkd_check"
OFFER_DOMAIN = "offer_domain"  # per recipient domain: HKP confirmation offers, all clients


@dataclass(frozen=True, slots=True)
class Rule:
    limit: int  # requests per window; 0 turns the rule off
    window_seconds: int


class RateLimited(Exception):
    """Too many requests of this kind from this client; retry after ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Pending:
    bucket: str
    client: str
    window: int
    amount: int
    limit: int
    retry_after: int


@dataclass
class RateLimiter:
    """Counts in the database, or in Redis when ``redis_url`` is set (the `limits` library)."""

    sessions: sessionmaker[Session]
    rules: dict[str, Rule]
    redis_url: str | None = None
    # Seconds since the epoch; the windows are counted on it (tests fix it).
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        # Large limits (lookups by address: hundreds a minute) are counted in the database
        # in batches: this process keeps up to _batch_size(limit) hits of a client before it
        # writes them in one statement, and refuses on its own count plus the shared count it
        # read last. A client may get past the limit by at most a batch per server process
        # (under 2% of it); small limits (uploads, mails) are written at every request.
        self._local: dict[tuple[str, str, int], list[int]] = {}
        self._windows: dict[str, int] = {}
        self._lock = threading.Lock()
        self._redis: FixedWindowRateLimiter | None = None
        if self.redis_url:
            self._redis = FixedWindowRateLimiter(storage_from_string(self.redis_url))

    def active(self, bucket: str) -> bool:
        rule = self.rules.get(bucket)
        return rule is not None and rule.limit > 0

    @property
    def shared_store(self) -> bool:
        """Counters in Redis: every hit goes there (no batches)."""
        return self._redis is not None

    def check(self, bucket: str, client: str) -> None:
        """Count a request; raise RateLimited when the client is over the bucket's limit."""
        rule = self.rules.get(bucket)
        if rule is None or rule.limit <= 0:
            return
        if self._redis is not None:
            client = rate_limit_key(client)
            item = RateLimitItemPerSecond(rule.limit, rule.window_seconds)
            if not self._redis.hit(item, "keydir", bucket, client[:64]):
                reset = self._redis.get_window_stats(item, "keydir", bucket, client[:64])
                raise RateLimited(max(1, int(reset.reset_time - self.clock()) + 1))
            return
        pending = self.count_here(bucket, client)
        if pending is not None:
            self.write(pending)

    def take(self, bucket: str, key: str) -> bool:
        """Count one unit against ``key`` (a client, a domain) in ``bucket``; whether it was
        still within the limit. Never batched: each unit is written at once, in its own
        transaction (so call it before the caller's transaction writes: on SQLite it would
        wait for that transaction)."""
        rule = self.rules.get(bucket)
        if rule is None or rule.limit <= 0:
            return True
        key = _counter_key(rate_limit_key(key))
        if self._redis is not None:
            item = RateLimitItemPerSecond(rule.limit, rule.window_seconds)
            return self._redis.hit(item, "keydir", bucket, key)
        window = int(self.clock() // rule.window_seconds)
        with self.sessions.begin() as session:
            count = counters.hit(session, bucket, key, window)
        return count <= rule.limit

    def count_here(self, bucket: str, client: str) -> _Pending | None:
        """The part of ``check`` that needs no database: count a batched hit in this process.

        Returns None when the hit is counted and under the limit, raises RateLimited when
        this process already knows the client is over it, and otherwise returns what
        ``write`` must add to the shared count (it may wait on the database: call it from
        a worker thread in async code).
        """
        rule = self.rules[bucket]
        now = self.clock()
        window = int(now // rule.window_seconds)
        retry_after = int((window + 1) * rule.window_seconds - now) + 1
        client = rate_limit_key(client)[:64]
        batch = _batch_size(rule.limit)
        if batch == 1:
            return _Pending(bucket, client, window, 1, rule.limit, retry_after)
        key = (bucket, client, window)
        with self._lock:
            entry = self._local.get(key)
            if entry is None:
                self._forget_windows_before(bucket, window)
                entry = self._local[key] = [0, 0]
            entry[0] += 1
            if entry[0] + entry[1] > rule.limit:
                raise RateLimited(retry_after)
            if entry[0] < batch:
                return None  # counted here; written with the next ones
            amount, entry[0] = entry[0], 0
        return _Pending(bucket, client, window, amount, rule.limit, retry_after)

    def write(self, pending: _Pending) -> None:
        """Add counted hits to the shared count; raise RateLimited when it is over."""
        with self.sessions.begin() as session:
            count = counters.hit(
                session, pending.bucket, pending.client, pending.window, pending.amount
            )
            if random.random() < 0.01:  # noqa: S311 - housekeeping, not security
                counters.forget_before(session, pending.bucket, pending.window - 1)
        with self._lock:
            entry = self._local.get((pending.bucket, pending.client, pending.window))
            if entry is not None:
                entry[1] = max(entry[1], count)
        if count > pending.limit:
            raise RateLimited(pending.retry_after)

    def _forget_windows_before(self, bucket: str, window: int) -> None:
        """Drop this process's counts of a bucket's past windows, once per new window
        (called under the lock)."""
        if self._windows.get(bucket) != window:
            self._windows[bucket] = window
            for key in [k for k in self._local if k[0] == bucket and k[2] < window]:
                del self._local[key]


def _counter_key(key: str) -> str:
    """A counter's key fits its column (64 characters): a longer one (a long domain name)
    is replaced by its digest, so that two long names never share a count."""
    if len(key) <= 64:
        return key
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class MailBudget:
    """The mails one request may cause, asked for one recipient at a time.

    Each mail counts against the client's hourly mail limit (``MAIL``), however many
    addresses one request names; ``prepaid`` mails were already counted by the caller (the
    request itself, counted up front so that a client over its limit gets a 429). HKP
    confirmation offers are also capped per request (``per_request``) and counted against
    their recipient domain's hourly limit across all clients (``per_domain``), so that no
    upload, and no crowd of clients, mails a whole company. After a use, ``mailed`` and
    ``withheld`` say what happened.
    """

    limiter: RateLimiter
    client: str
    prepaid: int = 0
    per_request: int = 0  # most mails this request may cause; 0: no cap
    per_domain: bool = False
    mailed: int = field(default=0, init=False)
    # Addresses that got no mail because a limit was reached.
    withheld: int = field(default=0, init=False)
    _granted: set[str] = field(default_factory=set, init=False, repr=False)
    _spent: bool = field(default=False, init=False, repr=False)  # the client's limit is reached

    def take(self, address: str) -> bool:
        """May one mail go to ``address``? Counts it when it may (asking again for an
        address already granted, as a retried transaction does, counts nothing)."""
        if address in self._granted:
            return True
        if self._spent or (self.per_request and self.mailed >= self.per_request):
            self.withheld += 1
            return False
        if self.prepaid > 0:
            self.prepaid -= 1
        elif not self.limiter.take(MAIL, self.client):
            self._spent = True
            self.withheld += 1
            return False
        # The client's own limit first: a client over it cannot use up a domain's offers.
        domain = address.rpartition("@")[2]
        if self.per_domain and not self.limiter.take(OFFER_DOMAIN, domain):
            self.withheld += 1
            return False
        self._granted.add(address)
        self.mailed += 1
        return True


def _batch_size(limit: int) -> int:
    """Hits written to the database at once for a limit: 1 (every hit) below 120, at
    most 10."""
    return max(1, min(10, limit // 60))


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


def rate_limit_key(client: str) -> str:
    """The budget a client address counts against: an IPv4 address alone, an IPv6
    address's /64 (the smallest network one customer line gets, so one line cannot spread
    its requests over 2^64 budgets), an IPv4-mapped IPv6 address as its IPv4 address.
    Anything that is not an address (a test client's name) counts as itself."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
