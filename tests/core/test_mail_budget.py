"""The mail budget of one request: each mail counts against its client's hourly limit, HKP
offers also against a cap per request and their recipient domain's hourly limit.

The end-to-end attacks (one HKP upload mailing hundreds, cross-site posts, many clients
mailing one company) are in tests/robustness/test_mail_limits.py; these pin the rules.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from service.core.ratelimit import MAIL, OFFER_DOMAIN, MailBudget, RateLimiter, Rule
from service.db.models import RateCounterRow
from service.db.session import make_sessionmaker

# A fixed moment early in a window: the counts never straddle two windows.
NOW = 1_800_000_000.0


def limiter(engine: Engine, mails: int, per_domain: int = 0) -> RateLimiter:
    rules = {MAIL: Rule(mails, 3600), OFFER_DOMAIN: Rule(per_domain, 3600)}
    return RateLimiter(make_sessionmaker(engine), rules, clock=lambda: NOW)


def counts(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(RateCounterRow.bucket, RateCounterRow.client, RateCounterRow.count)
        )
        return {(bucket, client): count for bucket, client, count in rows}


def test_each_mail_counts_and_a_spent_budget_asks_no_more(database: tuple[str, Engine]) -> None:
    engine = database[1]
    rules = limiter(engine, mails=3)
    rules.check(MAIL, "192.0.2.1")  # the API counts the request up front: its first mail
    budget = MailBudget(rules, "192.0.2.1", prepaid=1)
    granted = [budget.take(f"a{i}@example.org") for i in range(6)]
    assert granted == [True, True, True, False, False, False]
    assert (budget.mailed, budget.withheld) == (3, 3)
    # The refusal that found the limit is counted; nothing is asked after it.
    assert counts(engine) == {(MAIL, "192.0.2.1"): 4}
    again = MailBudget(limiter(engine, mails=3), "192.0.2.1")
    assert not again.take("b@example.org")
    assert MailBudget(limiter(engine, mails=3), "192.0.2.2").take("b@example.org")


def test_asking_again_for_a_granted_address_counts_nothing(database: tuple[str, Engine]) -> None:
    # A transaction that collides and runs again asks for the same addresses again.
    engine = database[1]
    budget = MailBudget(limiter(engine, mails=2), "192.0.2.1")
    assert budget.take("a@example.org")
    assert budget.take("a@example.org")
    assert budget.take("b@example.org")
    assert (budget.mailed, budget.withheld) == (2, 0)
    assert counts(engine) == {(MAIL, "192.0.2.1"): 2}


def test_offers_are_capped_per_request(database: tuple[str, Engine]) -> None:
    budget = MailBudget(limiter(database[1], mails=100), "192.0.2.1", per_request=2)
    assert [budget.take(f"a{i}@example.org") for i in range(4)] == [True, True, False, False]
    assert (budget.mailed, budget.withheld) == (2, 2)


def test_a_full_domain_holds_back_only_its_own_addresses(database: tuple[str, Engine]) -> None:
    engine = database[1]
    rules = limiter(engine, mails=100, per_domain=2)
    first = MailBudget(rules, "192.0.2.1", per_domain=True)
    second = MailBudget(rules, "192.0.2.2", per_domain=True)
    assert first.take("a@big.example")
    assert second.take("b@big.example")
    assert not second.take("c@big.example")  # two per hour, whoever asks
    assert second.take("c@small.example")
    assert (second.mailed, second.withheld) == (2, 1)
    # Only HKP offers count per domain: request-verify budgets do not touch its counter.
    assert MailBudget(rules, "192.0.2.3").take("d@big.example")


def test_a_client_over_its_limit_cannot_use_up_a_domains_offers(
    database: tuple[str, Engine],
) -> None:
    engine = database[1]
    rules = limiter(engine, mails=1, per_domain=5)
    budget = MailBudget(rules, "192.0.2.1", per_domain=True)
    assert [budget.take(f"a{i}@big.example") for i in range(4)] == [True, False, False, False]
    assert counts(engine)[(OFFER_DOMAIN, "big.example")] == 1


def test_long_domains_are_counted_apart(database: tuple[str, Engine]) -> None:
    # The counter's key column holds 64 characters: two long names sharing their first 64
    # must not share a count, or one could be used to exhaust the other.
    engine = database[1]
    stem = "a" * 60 + "." + "b" * 20
    rules = limiter(engine, mails=100, per_domain=1)
    for domain in (f"{stem}.one.example", f"{stem}.two.example"):
        assert MailBudget(rules, "192.0.2.1", per_domain=True).take(f"x@{domain}")
    assert len([key for key in counts(engine) if key[0] == OFFER_DOMAIN]) == 2


def test_no_rule_means_no_limit(database: tuple[str, Engine]) -> None:
    budget = MailBudget(limiter(database[1], mails=0), "192.0.2.1", per_domain=True)
    assert all(budget.take(f"a{i}@example.org") for i in range(50))
    assert counts(database[1]) == {}


def test_budgets_in_redis_are_shared(database: tuple[str, Engine], redis_url: str) -> None:
    rules = {MAIL: Rule(2, 3600), OFFER_DOMAIN: Rule(1, 3600)}
    sessions = make_sessionmaker(database[1])
    one = RateLimiter(sessions, rules, redis_url=redis_url)
    two = RateLimiter(sessions, rules, redis_url=redis_url)
    assert MailBudget(one, "192.0.2.1", per_domain=True).take("a@big.example")
    other = MailBudget(two, "192.0.2.1", per_domain=True)
    assert not other.take("b@big.example")  # the domain's one offer is used
    assert not other.take("c@small.example")  # and the client's two mails now too
    assert counts(database[1]) == {}  # nothing in the database
