"""No mail blocks the outbox: a row that cannot be built, a recipient the server refuses or a
sender that fails is released (retried with backoff, or given up) and the rest goes out.
Nothing written about a failure names an address. A real SMTP server (aiosmtpd) throughout."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select

from service.db import outbox
from service.db.models import OutboxRow, utcnow
from service.db.session import make_sessionmaker
from service.mail.dispatcher import MAX_ATTEMPTS, Dispatcher, Report
from service.mail.senders import SmtpSender
from tests.mailutil import Inbox, SmtpServer, free_port

# Rows built before addresses were checked strictly: the header parser decodes the encoded
# word into a line break, and building the mail raises.
UNBUILDABLE = "=?utf-8?q?a=0ab?=@example.org"


class Picky(Inbox):
    """Refuses `gone@…` for good (550) and `busy@…` for now (450), quoting the address
    in the reply as real servers do."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("gone@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return f"451 4.3.0 <{address}>: Temporary lookup failure"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def picky() -> Iterator[tuple[Picky, int]]:
    inbox, port = Picky(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def queue(engine: Engine, *recipients: str, at: datetime | None = None) -> list[int]:
    """Rows as the core writes them (the unbuildable ones cannot be made any other way now)."""
    now = at or utcnow()
    rows = [
        OutboxRow(
            kind="verify",
            recipient=recipient,
            subject="Confirm your address",
            text_body="Open the link.\n",
            html_body="<p>Open the link.</p>",
            message_id=f"<{secrets.token_hex(8)}@keys.example.org>",
            created_at=now,
            next_attempt_at=now - timedelta(seconds=len(recipients) - i),  # in this order
            attempts=0,
        )
        for i, recipient in enumerate(recipients)
    ]
    with make_sessionmaker(engine).begin() as session:
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def rows(engine: Engine) -> dict[str, OutboxRow]:
    with make_sessionmaker(engine)() as session:
        found = session.scalars(select(OutboxRow)).all()
        session.expunge_all()
        return {row.recipient: row for row in found}


def dispatcher(engine: Engine, port: int, **options: Any) -> Dispatcher:
    return Dispatcher(
        make_sessionmaker(engine),
        SmtpSender("127.0.0.1", port),
        "keydir <keydir@keys.example.org>",
        **options,
    )


def counts(report: Report) -> tuple[int, int]:
    return report.sent, report.failed


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """What keydir logged (the test SMTP server logs addresses of its own)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("service"))


def delivered(inbox: Inbox) -> list[str]:
    return sorted(str(message["To"]) for message in inbox.messages)


def test_a_row_that_cannot_be_built_is_given_up_and_the_queue_goes_on(
    database: tuple[str, Engine], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = database[1]
    queue(engine, UNBUILDABLE, "alice@example.org", "bob@example.org")
    worker = dispatcher(engine, smtp.port)
    with caplog.at_level(logging.INFO):
        report = worker.run_once()
    assert (report.sent, report.failed) == (2, 1)
    assert delivered(smtp.inbox) == ["alice@example.org", "bob@example.org"]
    bad = rows(engine)[UNBUILDABLE]
    assert bad.given_up_at is not None
    assert bad.sent_at is None
    assert bad.claimed_until is None  # its lease is released
    assert bad.attempts == 1
    assert bad.last_error == "ValueError"
    # Never claimed again, however late.
    assert counts(worker.run_once(now=utcnow() + timedelta(days=30))) == (0, 0)
    assert rows(engine)[UNBUILDABLE].attempts == 1
    assert "a=0ab" not in logged(caplog)
    assert "given up" in logged(caplog)


def test_many_unbuildable_rows_first_in_the_queue_do_not_stop_a_good_one(
    database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    engine = database[1]
    bad = [f"=?utf-8?q?x{i}=0a?=@example.org" for i in range(45)]
    queue(engine, *bad, "eddie@example.org")
    worker = dispatcher(engine, smtp.port)
    for _ in range(3):  # batches of 20: the good mail is in the third
        worker.run_once()
    assert delivered(smtp.inbox) == ["eddie@example.org"]
    assert all(rows(engine)[address].given_up_at is not None for address in bad)


def test_a_permanent_refusal_is_given_up_without_naming_the_address(
    database: tuple[str, Engine], picky: tuple[Picky, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, port = picky
    engine = database[1]
    queue(engine, "gone@example.org", "alice@example.org")
    with caplog.at_level(logging.INFO):
        report = dispatcher(engine, port).run_once()
    assert (report.sent, report.failed) == (1, 1)
    assert delivered(inbox) == ["alice@example.org"]
    gone = rows(engine)["gone@example.org"]
    assert gone.given_up_at is not None
    assert gone.last_error == "SMTPRecipientsRefused 550"
    assert "gone@" not in logged(caplog)
    assert "SMTPRecipientsRefused 550" in logged(caplog)


def test_a_temporary_refusal_is_retried_with_backoff_then_given_up(
    database: tuple[str, Engine], picky: tuple[Picky, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, port = picky
    engine = database[1]
    queue(engine, "busy@example.org")
    worker = dispatcher(engine, port, max_attempts=3)
    now = utcnow()
    with caplog.at_level(logging.INFO):
        for tries in (1, 2):
            assert counts(worker.run_once(now=now)) == (0, 1)
            busy = rows(engine)["busy@example.org"]
            assert busy.attempts == tries
            assert busy.given_up_at is None
            assert busy.last_error == "SMTPRecipientsRefused 451"
            assert busy.next_attempt_at > utcnow()  # backing off, not first in the queue
            assert counts(worker.run_once(now=now)) == (0, 0)  # not due yet
            now = busy.next_attempt_at + timedelta(seconds=1)
        assert counts(worker.run_once(now=now)) == (0, 1)
    busy = rows(engine)["busy@example.org"]
    assert busy.attempts == 3
    assert busy.given_up_at is not None
    assert counts(worker.run_once(now=now + timedelta(days=3))) == (0, 0)
    assert inbox.messages == []
    assert "busy@" not in logged(caplog)


def test_rows_are_given_up_after_max_attempts_by_default(
    database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    engine = database[1]
    queue(engine, "eddie@example.org")
    with make_sessionmaker(engine).begin() as session:
        row = session.scalars(select(OutboxRow)).one()
        row.attempts = MAX_ATTEMPTS - 1
    port = smtp.port
    smtp.stop()  # the server is away: a temporary failure
    assert counts(dispatcher(engine, port).run_once()) == (0, 1)
    assert rows(engine)["eddie@example.org"].given_up_at is not None
    assert rows(engine)["eddie@example.org"].last_error == "ConnectionRefusedError"


class Flaky:
    """A sender with a bug for one recipient (its error names the address); real SMTP for
    every other."""

    def __init__(self, port: int) -> None:
        self.real = SmtpSender("127.0.0.1", port)

    def send(self, message: EmailMessage) -> None:
        if str(message["To"]).startswith("bug@"):
            raise RuntimeError(f"cannot handle {message['To']}")
        self.real.send(message)


def test_an_unexpected_error_while_sending_releases_the_row_and_the_batch_goes_on(
    database: tuple[str, Engine], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = database[1]
    queue(engine, "bug@example.org", "alice@example.org")
    worker = Dispatcher(make_sessionmaker(engine), Flaky(smtp.port), "k@keys.example.org")
    with caplog.at_level(logging.INFO):
        assert counts(worker.run_once()) == (1, 1)
    bug = rows(engine)["bug@example.org"]
    assert (bug.attempts, bug.given_up_at, bug.claimed_until) == (1, None, None)
    assert bug.last_error == "RuntimeError"
    assert "bug@" not in logged(caplog)
    assert delivered(smtp.inbox) == ["alice@example.org"]


def test_given_up_mails_are_not_counted_as_waiting(
    database: tuple[str, Engine], smtp: SmtpServer
) -> None:
    engine = database[1]
    queue(engine, UNBUILDABLE, "alice@example.org")
    with make_sessionmaker(engine)() as session:
        assert outbox.count_unsent(session) == 2
    dispatcher(engine, smtp.port).run_once()
    with make_sessionmaker(engine)() as session:
        assert outbox.count_unsent(session) == 0
        assert outbox.unsent_counts(session) == (0, 0)
