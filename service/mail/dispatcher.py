"""The outbox dispatcher: sends queued mails after their transaction committed.

Several dispatchers (threads in server processes, or `keydir worker`) may run at once: each
row is claimed with a lease before it is sent and marked sent right after, one by one, so
a crash in the middle of a batch re-sends nothing that went out. Only a crash in the instant
between the SMTP server's acceptance and our commit can repeat a mail; it then carries the
same Message-ID, so the receiving server can drop it.

No mail can block the others: whatever goes wrong while one row is built or sent releases
that row (tried again later with backoff, or given up when it can never succeed or failed
``max_attempts`` times) and the batch goes on. What is written to the log and to
``last_error`` is the error class and SMTP code, never an address.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from service.db import outbox, tokens
from service.db.models import utcnow
from service.mail.senders import Sender, SendFailed, build_email, describe
from service.metrics import Metrics

log = logging.getLogger(__name__)


# 30 s doubling to one hour between tries: 48 tries span about two days, long enough for a
# mail server to come back, short enough that a mail is not retried for ever.
MAX_ATTEMPTS = 48


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, … at most an hour between tries."""
    return timedelta(seconds=min(30 * 2 ** min(attempts, 12), 3600))


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    attempts: int
    recipient: str
    subject: str
    text: str
    html: str | None
    message_id: str


@dataclass(frozen=True, slots=True)
class Report:
    sent: int
    failed: int


@dataclass(frozen=True, slots=True)
class Purged:
    mails: int
    tokens: int


# How often a running dispatcher purges what the retention period lets go.
PURGE_EVERY = timedelta(hours=1)


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sender: Sender,
        mail_from: str,
        *,
        lease: timedelta = timedelta(minutes=5),
        batch: int = 20,
        metrics: Metrics | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        retention: timedelta | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._sender = sender
        self._mail_from = mail_from
        self._lease = lease
        self._batch = batch
        self._max_attempts = max_attempts
        # Sent mails (with their working links) and spent tokens are deleted this long
        # after; None keeps them.
        self._retention = retention
        self._next_purge: datetime | None = None
        self.owner = secrets.token_hex(8)
        self.wake = threading.Event()

    def run_once(self, now: datetime | None = None) -> Report:
        """Send what is due now; return how many went out and how many failed."""
        now = now or utcnow()
        with self._sessions.begin() as session:
            claimed = []
            for row_id in outbox.due_ids(session, now, self._batch):
                if outbox.claim(session, row_id, self.owner, now, self._lease):
                    row = outbox.get(session, row_id)
                    assert row is not None
                    claimed.append(
                        _Claimed(
                            row.id,
                            row.attempts,
                            row.recipient,
                            row.subject,
                            row.text_body,
                            row.html_body,
                            row.message_id,
                        )
                    )
        sent = failed = 0
        for mail in claimed:
            try:
                message = build_email(
                    sender=self._mail_from,
                    recipient=mail.recipient,
                    subject=mail.subject,
                    text=mail.text,
                    html=mail.html,
                    message_id=mail.message_id,
                )
            except Exception as exc:  # noqa: BLE001  # any row that cannot be built
                # It never will be: given up at once, so it cannot hold up the queue.
                self._failed(mail, describe(exc), permanent=True)
                failed += 1
                continue
            try:
                self._sender.send(message)
            except SendFailed as exc:
                self._failed(mail, str(exc), permanent=exc.permanent)
                failed += 1
                continue
            except Exception as exc:  # noqa: BLE001  # a sender's bug must not stop the rest
                self._failed(mail, describe(exc), permanent=False)
                failed += 1
                continue
            with self._sessions.begin() as session:
                outbox.mark_sent(session, mail.id, self.owner, utcnow())
            sent += 1
            if self._metrics is not None:
                self._metrics.mail("sent")
        if sent or failed:
            log.info("outbox: %s sent, %s failed", sent, failed)
        return Report(sent, failed)

    def _failed(self, mail: _Claimed, error: str, *, permanent: bool) -> None:
        """Release the row: due again after a backoff, or given up. ``error`` names no
        address (the recipient may be unconfirmed): only the row id identifies the mail."""
        if self._metrics is not None:
            self._metrics.mail("failed")
        tries = mail.attempts + 1
        now = utcnow()
        give_up = permanent or tries >= self._max_attempts
        with self._sessions.begin() as session:
            outbox.mark_failed(
                session,
                mail.id,
                self.owner,
                error,
                now + backoff(mail.attempts),
                given_up_at=now if give_up else None,
            )
        if give_up:
            log.warning("mail %s given up after %s tries: %s", mail.id, tries, error)
        else:
            log.warning("mail %s not sent (try %s): %s", mail.id, tries, error)

    def purge(self, now: datetime | None = None) -> Purged:
        """Delete the mails sent or given up, and the tokens used or expired, more than the
        retention period ago (nothing without one)."""
        if self._retention is None:
            return Purged(0, 0)
        before = (now or utcnow()) - self._retention
        with self._sessions.begin() as session:
            purged = Purged(
                outbox.purge_finished(session, before), tokens.purge_spent(session, before)
            )
        if purged.mails or purged.tokens:
            log.info("purged %d sent mails and %d spent tokens", purged.mails, purged.tokens)
        return purged

    def _purge_when_due(self) -> None:
        now = utcnow()
        if self._retention is None or (self._next_purge is not None and now < self._next_purge):
            return
        self._next_purge = now + PURGE_EVERY
        self.purge(now)

    def run_forever(self, stop: threading.Event, poll_seconds: float = 5.0) -> None:
        """Loop until ``stop`` is set; ``wake`` makes it look at the outbox at once. Once an
        hour it also purges what the retention period lets go."""
        while not stop.is_set():
            try:
                self._purge_when_due()
                report = self.run_once()
            except Exception:
                # The database may be away for a while; keep the loop alive and try again.
                log.exception("outbox dispatcher failed; retrying")
                report = Report(0, 0)
            if report.sent + report.failed == self._batch:
                # More may be waiting. Failed rows are backed off or given up, so this
                # never spins on the same rows, and failures cannot slow the queue down.
                continue
            self.wake.wait(poll_seconds)
            self.wake.clear()

    def start_thread(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_forever, args=(stop,), name="keydir-outbox", daemon=True
        )
        thread.start()
        return thread
