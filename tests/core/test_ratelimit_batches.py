"""Large limits are counted in the database in batches, and still hold across processes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.app import create_app, wrap
from service.core.ratelimit import RateLimited, RateLimiter, Rule
from service.db.models import RateCounterRow
from service.db.session import make_sessionmaker
from service.settings import Settings

BUCKET = "address_lookup"


# A fixed moment early in a window: the counts never straddle two windows.
NOW = 1_800_000_000.0


def limiter(engine: Engine, limit: int) -> RateLimiter:
    return RateLimiter(make_sessionmaker(engine), {BUCKET: Rule(limit, 3600)}, clock=lambda: NOW)


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.sum(RateCounterRow.count), 0))))


def allowed(limiter: RateLimiter, client: str, tries: int) -> int:
    passed = 0
    for _ in range(tries):
        try:
            limiter.check(BUCKET, client)
        except RateLimited:
            continue
        passed += 1
    return passed


def test_hits_are_written_ten_at_a_time_and_the_limit_holds(
    database: tuple[str, Engine],
) -> None:
    engine = database[1]
    one = limiter(engine, 600)
    assert allowed(one, "192.0.2.1", 9) == 9
    assert stored(engine) == 0  # counted in the process, not written yet
    assert allowed(one, "192.0.2.1", 1) == 1
    assert stored(engine) == 10
    assert allowed(one, "192.0.2.1", 700) == 590
    with pytest.raises(RateLimited):
        one.check(BUCKET, "192.0.2.1")
    assert allowed(one, "198.51.100.7", 5) == 5  # another client has its own count


def test_two_processes_share_the_count_within_a_batch_each(database: tuple[str, Engine]) -> None:
    engine = database[1]
    first, second = limiter(engine, 600), limiter(engine, 600)
    assert allowed(first, "192.0.2.1", 300) == 300
    passed_second = allowed(second, "192.0.2.1", 700)
    # The second saw the first's 300 (to within one batch) the first time it wrote.
    assert 300 - 10 <= passed_second <= 300 + 10
    assert allowed(first, "192.0.2.1", 50) <= 10


def test_small_limits_are_written_at_every_request(database: tuple[str, Engine]) -> None:
    engine = database[1]
    uploads = limiter(engine, 60)
    assert allowed(uploads, "192.0.2.1", 3) == 3
    assert stored(engine) == 3
    other = limiter(engine, 60)
    assert allowed(other, "192.0.2.1", 100) == 57


def test_lookups_by_address_are_limited_through_the_batches(
    settings: Settings, database: tuple[str, Engine]
) -> None:
    limited = settings.model_copy(update={"rate_address_lookups_per_minute": 120})  # batch 2
    app = create_app(limited)
    app.state.limiter.clock = lambda: NOW
    with TestClient(wrap(app, limited)) as client:
        codes = [client.get("/vks/v1/by-email/nobody@example.org").status_code for _ in range(121)]
    assert codes[:120] == [404] * 120
    assert codes[120] == 429
    assert stored(database[1]) == 120  # every hit reached the database, two at a time
