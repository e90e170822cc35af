"""Retention: mails sent or given up, and links used or expired, are deleted once the
retention period has passed; what is waiting or still valid stays. On both databases."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from service.db.models import OutboxRow, TokenPurpose, TokenRow, utcnow
from service.db.session import make_sessionmaker
from service.db.tokens import issue, token_hash
from service.mail.dispatcher import Dispatcher
from service.mail.senders import ConsoleSender
from tests.conftest import read_data

DAY = timedelta(days=1)


def test_what_the_retention_period_lets_go_is_deleted(
    client: TestClient, database: tuple[str, Engine]
) -> None:
    engine = database[1]
    fpr = client.post("/vks/v1/upload", json={"keytext": read_data("ed25519.asc").decode()}).json()[
        "key_fpr"
    ]
    now = utcnow()
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        kept_tokens = {issue(session, TokenPurpose.VERIFY, fpr, lifetime=DAY, now=now)}
        old = issue(session, TokenPurpose.VERIFY, fpr, lifetime=DAY, now=now - 30 * DAY)
        used = issue(session, TokenPurpose.VERIFY, fpr, lifetime=10 * DAY, now=now - 20 * DAY)
        kept_tokens.add(
            issue(session, TokenPurpose.VERIFY, fpr, lifetime=10 * DAY, now=now - 5 * DAY)
        )
        session.flush()
        row = session.get(TokenRow, token_hash(used))
        assert row is not None
        row.used_at = now - 19 * DAY
        for number, (sent, given_up) in enumerate(
            [
                (now - 20 * DAY, None),  # sent long ago: goes
                (None, now - 20 * DAY),  # given up long ago: goes
                (now - DAY, None),  # sent yesterday: stays
                (None, None),  # not sent yet, however old: stays
            ]
        ):
            session.add(
                OutboxRow(
                    kind="verify",
                    recipient=f"r{number}@example.org",
                    subject="s",
                    text_body="t",
                    message_id=f"<{number}@test>",
                    created_at=now - 30 * DAY,
                    next_attempt_at=now - 30 * DAY,
                    sent_at=sent,
                    given_up_at=given_up,
                )
            )
    dispatcher = Dispatcher(sessions, ConsoleSender(), "k@example.org", retention=14 * DAY)
    purged = dispatcher.purge(now)
    assert (purged.mails, purged.tokens) == (2, 2)
    with engine.connect() as conn:
        recipients = set(conn.scalars(select(OutboxRow.recipient)))
        hashes = set(conn.scalars(select(TokenRow.hash)))
    assert recipients == {"r2@example.org", "r3@example.org"}
    assert {token_hash(t) for t in kept_tokens} <= hashes
    assert not {token_hash(old), token_hash(used)} & hashes
    # Without a retention period nothing goes.
    forever = Dispatcher(sessions, ConsoleSender(), "k@example.org")
    assert forever.purge(now + 1000 * DAY) == purged.__class__(0, 0)


def test_the_privacy_page_says_how_long(client: TestClient) -> None:
    page = client.get("/privacy").text
    assert "are deleted 14 days later" in page
