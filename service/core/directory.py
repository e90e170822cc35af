"""The protocol-neutral core: upload, lookup, e-mail verification and management.

Each public method of ``Directory`` is one transaction, committed once at its end. VKS, HKP
and the web pages translate these calls; none of them decides what is published.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import openpgp
from service.core import wkd
from service.core.parsing import BoundedParser, attach_signature, merge_into_stored, run_here
from service.core.queries import Query
from service.core.ratelimit import MailBudget
from service.db import blocklist, outbox
from service.db import certs as cert_repo
from service.db import tokens as token_repo
from service.db.models import AddressRow, AddressState, CertRow, TokenPurpose, utcnow
from service.mail import messages
from service.metrics import Metrics, Stats

__all__ = [
    "AddressState",
    "Directory",
    "ImportOutcome",
    "IndexEntry",
    "KeyBlocked",
    "Limits",
    "ManageView",
    "ManagedKey",
    "PublishedKey",
    "RepairReport",
    "TokenState",
    "UploadRejected",
    "UploadResult",
    "VerifyRejected",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Lone signatures (revocation certificates) taken in one upload: each may make us read a
# stored key, and one upload of a real revocation carries one or two.
MAX_LOOSE_SIGNATURES = 8


@dataclass(frozen=True, slots=True)
class Limits:
    max_keys_per_upload: int = 100
    max_packets_per_key: int = 50_000
    key: openpgp.KeyLimits = field(default_factory=openpgp.KeyLimits)
    upload_token_lifetime: timedelta = timedelta(days=2)
    # Long enough for a person who reads mail tomorrow, or after a weekend.
    verify_token_lifetime: timedelta = timedelta(days=7)
    manage_token_lifetime: timedelta = timedelta(hours=24)
    # At most one verification (or manage) mail per address in this interval.
    mail_interval: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Site:
    """How the service names itself in mails and links."""

    base_url: str = "http://localhost:8080"

    @property
    def name(self) -> str:
        return urlsplit(self.base_url).hostname or self.base_url

    def link(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class UploadedKey:
    fingerprint: str
    # Every address of a valid user ID and its state; shown only to whoever holds the key.
    status: dict[str, AddressState]
    changed: bool
    new: bool


@dataclass(frozen=True, slots=True)
class UploadResult:
    keys: list[UploadedKey]
    token: str | None  # one upload token covering the uploaded keys (None if none stored)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    fingerprint: str
    armor: str
    digest: str  # SHA-256 of ``armor``: a strong ETag
    updated_at: datetime
    version: int = 4


@dataclass(frozen=True, slots=True)
class IndexedUserId:
    text: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What an HKP index shows of a key: never an unconfirmed user ID."""

    fingerprint: str
    version: int
    algorithm: int
    bits: int
    created: datetime
    expires: datetime | None
    revoked: bool
    user_ids: list[IndexedUserId]


class TokenState(StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    REVOKED = "revoked"  # the user ID was revoked after the mail was sent


@dataclass(frozen=True, slots=True)
class Confirmation:
    state: TokenState
    address: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class ManagedKey:
    fingerprint: str
    # Only published and revoked addresses: a manage link proves one address, and the
    # key's unconfirmed addresses are nobody's business, not even this visitor's.
    addresses: dict[str, AddressState]


@dataclass(frozen=True, slots=True)
class ManageView:
    """The keys a manage link may change: every key the link's address is published on."""

    state: TokenState
    address: str | None = None
    keys: list[ManagedKey] = field(default_factory=list)


class ImportOutcome(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


@dataclass(slots=True)
class RepairReport:
    checked: int = 0
    repaired: int = 0  # keys whose stored form changed
    bytes_before: int = 0  # of the repaired keys
    bytes_after: int = 0
    # Keys stored before that today's rules cannot read (key material refused since, such
    # as an RSA exponent over 2^32): left as they are, for the operator to delete.
    unreadable: list[str] = field(default_factory=list)


class UploadRejected(ValueError):
    """An upload we cannot take; ``str(exc)`` is the sentence for people."""


class KeyBlocked(UploadRejected):
    """The upload holds a key (or a subkey) that an operator blocked."""


class VerifyRejected(ValueError):
    """A verification request we cannot take; ``str(exc)`` is the sentence for people."""


class Directory:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        limits: Limits | None = None,
        site: Site | None = None,
        on_mail_queued: Callable[[], None] | None = None,
        parser: Callable[..., openpgp.ParsedUpload] = openpgp.read_upload,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        # openpgp.read_upload in this process, or a BoundedParser (worker processes).
        self._parse = parser
        # Other checks of uploaded material run where parsing does.
        self._run: Callable[..., Any] = (
            parser.run if isinstance(parser, BoundedParser) else run_here
        )
        self.limits = limits or Limits()
        self.site = site or Site()
        self._on_mail_queued = on_mail_queued

    # -- transactions ---------------------------------------------------------------------

    def _transaction(self, work: Callable[[Session], T], *, retries: int = 2) -> T:
        """Run ``work`` in one transaction, committed once at the end.

        Two requests inserting the same new key at once collide on the primary key; the
        loser runs again and then merges into the winner's row.
        """
        for attempt in range(retries + 1):
            try:
                with self._sessions.begin() as session:
                    result = work(session)
                    queued = session.info.pop("mail_queued", False)
                if queued and self._on_mail_queued is not None:
                    self._on_mail_queued()  # after commit: a rolled-back request sends nothing
                return result
            except IntegrityError:
                if attempt == retries:
                    raise
                log.info("concurrent write collided; retrying")
        raise AssertionError("unreachable")

    # -- upload ---------------------------------------------------------------------------

    def upload(
        self, data: bytes, *, single: bool = False, mail_budget: MailBudget | None = None
    ) -> UploadResult:
        """Parse, verify and store one or more keys (or a revocation for a stored key).

        With ``mail_budget``, each brand-new key's addresses are offered a confirmation mail
        as far as the budget allows (HKP uploads: GnuPG users have no other way to ask);
        its ``mailed`` and ``withheld`` then say how it went. Raises
        ``openpgp.KeyRejected`` (bad input) or ``UploadRejected`` with a sentence.
        """
        try:
            parsed = self._read(data, single=single)
            result = self._transaction(lambda session: self._store(session, parsed))
        except (openpgp.KeyRejected, UploadRejected):
            if self._metrics is not None:
                self._metrics.upload("rejected")
            raise
        if mail_budget is not None:
            self._offer_new_keys(parsed.certificates, result, mail_budget)
        if self._metrics is not None:
            for key in result.keys:
                self._metrics.upload(
                    "created" if key.new else "updated" if key.changed else "unchanged"
                )
        return result

    def _read(self, data: bytes, *, single: bool) -> openpgp.ParsedUpload:
        parsed = self._parse(
            data,
            max_keys=self.limits.max_keys_per_upload,
            max_packets=self.limits.max_packets_per_key,
            limits=self.limits.key,
        )
        if single and len(parsed.certificates) > 1:
            raise UploadRejected("The upload holds several keys; upload one key at a time here.")
        return parsed

    def _store(self, session: Session, parsed: openpgp.ParsedUpload) -> UploadResult:
        now = utcnow()
        fingerprints = _fingerprints(parsed.certificates)
        blocklist.lock(session, fingerprints)
        results = [self._store_one(session, cert, now) for cert in parsed.certificates]
        # Checked after the first write: on SQLite the transaction (and with it what this
        # request reads) begins there, so a block committed before it is seen here, and a
        # block committed after it waits for this upload and then deletes what it stored.
        session.flush()
        _refuse_blocked(session, parsed.certificates)
        if parsed.loose_signatures:
            results.extend(self._attach(session, parsed.loose_signatures, now))
        token = None
        if results:
            # The token may ask for mails only to what this upload showed us.
            token = token_repo.issue(
                session,
                TokenPurpose.UPLOAD,
                results[0].fingerprint,
                lifetime=self.limits.upload_token_lifetime,
                now=now,
                scope=list(results[0].status),
            )
        return UploadResult(results, token)

    def _store_one(self, session: Session, cert: openpgp.Certificate, now: datetime) -> UploadedKey:
        row = cert_repo.get(session, cert.fingerprint, for_update=True)
        new = row is None
        if row is None:
            row = CertRow(fingerprint=cert.fingerprint, first_seen=now)
            session.add(row)
            _write(row, cert, now)
            changed = True
        else:
            changed = self._merge_into(row, cert, now)
        shown = _shown(cert)
        return UploadedKey(cert.fingerprint, _status(session, row, now, shown), changed, new)

    def _merge_into(self, row: CertRow, cert: openpgp.Certificate, now: datetime) -> bool:
        """Merge ``cert`` into the stored key of ``row``; whether anything changed.

        Raises KeyTooLarge (nothing written) when the merged key exceeds the limits. The
        merge runs where uploads are parsed (a parse worker): reading the stored key makes
        the OpenPGP engine judge every signature on it again, which an upload of a copy of
        a large key must not make this process do.
        """
        merged: openpgp.Certificate | None = self._run(
            merge_into_stored, row.full_data, cert, self.limits.key
        )
        if merged is None:
            return False
        _write(row, merged, now)
        return True

    def _attach(
        self, session: Session, signatures: Sequence[bytes], now: datetime
    ) -> list[UploadedKey]:
        """Merge loose signatures (revocation certificates) into the keys that made them.

        Each stored key is read once, however many signatures name it; a signature naming
        more than one issuer (a fingerprint and its key id) is no revocation certificate and
        is not tried: otherwise one small signature could make us read many keys. The
        signatures are checked against the stored key where uploads are parsed (a parse
        worker), before the key's row is locked; under the lock the row must still hold the
        bytes checked, or the check runs again on the new bytes. A signature that adds
        nothing locks nothing.
        """
        if len(signatures) > MAX_LOOSE_SIGNATURES:
            raise UploadRejected(
                f"The upload holds {len(signatures)} lone signatures; at most "
                f"{MAX_LOOSE_SIGNATURES} are accepted at once."
            )
        targets: dict[str, list[bytes]] = {}
        for body in signatures:
            fprs, key_ids = openpgp.signature_issuers(body)
            if len(fprs) + len(key_ids) > 2:
                continue
            for fingerprint in cert_repo.primary_fingerprints(session, fprs, key_ids):
                targets.setdefault(fingerprint, []).append(body)
        results: list[UploadedKey] = []
        for fingerprint, bodies in targets.items():
            row = cert_repo.get(session, fingerprint)
            if row is None:
                continue
            checked = row.full_data
            merged: openpgp.Certificate | None = self._run(attach_signature, checked, bodies)
            if merged is None:
                continue  # adds nothing: nothing is locked
            session.flush()
            session.refresh(row, with_for_update=True)
            if row.full_data != checked:
                merged = self._run(attach_signature, row.full_data, bodies)
                if merged is None:
                    continue
            _write(row, merged, now)
            # A lone signature shows no user ID: the answer lists no address.
            results.append(UploadedKey(row.fingerprint, {}, True, False))
        if not results:
            # The same answer whether the key is unknown or the signatures add nothing to
            # it: a signature naming a stored key must not open that key's details.
            raise UploadRejected(
                "This is a lone signature (such as a revocation certificate) that adds "
                "nothing to any key stored here: either its key is not stored here "
                "(upload the key itself first), or the key already has it."
            )
        return results

    # -- bulk import -----------------------------------------------------------------------

    def import_certificates(
        self, certs: Sequence[openpgp.Certificate]
    ) -> list[tuple[ImportOutcome, str | None]]:
        """Store parsed certificates in one transaction, as uploads would, but without
        tokens or mail: their addresses stay unpublished until their owners confirm them.

        Returns what happened to each, with the sentence when one was refused.
        """
        return self._transaction(lambda session: self._import(session, certs))

    def _import(
        self, session: Session, certs: Sequence[openpgp.Certificate]
    ) -> list[tuple[ImportOutcome, str | None]]:
        now = utcnow()
        fingerprints = _fingerprints(certs)
        blocklist.lock(session, fingerprints)
        blocked = blocklist.blocked_among(session, fingerprints)
        rows = cert_repo.get_many(session, [c.fingerprint for c in certs])
        outcomes: list[tuple[ImportOutcome, str | None]] = []
        for cert in certs:
            if blocked.intersection((cert.fingerprint, *(s.fingerprint for s in cert.subkeys))):
                outcomes.append(
                    (ImportOutcome.REJECTED, "This key (or one of its subkeys) is blocked here.")
                )
                continue
            row = rows.get(cert.fingerprint)
            if row is None:
                row = rows[cert.fingerprint] = CertRow(fingerprint=cert.fingerprint, first_seen=now)
                session.add(row)
                _write(row, cert, now)
                outcomes.append((ImportOutcome.NEW, None))
                continue
            try:
                # The same bytes again (a rerun) need no merge at all.
                changed = row.full_data != cert.data and self._merge_into(row, cert, now)
            except openpgp.KeyRejected as exc:
                outcomes.append((ImportOutcome.REJECTED, exc.message))
                continue
            outcomes.append((ImportOutcome.UPDATED if changed else ImportOutcome.UNCHANGED, None))
        return outcomes

    # -- repair ---------------------------------------------------------------------------

    def repair(self, *, batch: int = 200, dry_run: bool = False) -> RepairReport:
        """Bring every stored key to the form an upload stores today.

        Keys stored before signatures were normalised may carry copies of their owner's
        signatures with edited unhashed areas (which hide revocations from GnuPG and grow
        keys without bound), too many superseded self-signatures, or subkeys that lookups
        should not find by their own id. Reading a stored key normalises it; this writes
        the result back, ``batch`` keys per transaction. Running it twice changes nothing.
        """
        report = RepairReport()
        after: str | None = ""
        while after is not None:
            after = self._transaction(
                functools.partial(
                    self._repair_batch, after=after, batch=batch, report=report, dry_run=dry_run
                )
            )
        return report

    def _repair_batch(
        self, session: Session, *, after: str, batch: int, report: RepairReport, dry_run: bool
    ) -> str | None:
        rows = cert_repo.batch_after(session, after, batch)
        if not rows:
            return None
        now = utcnow()
        for row in rows:
            report.checked += 1
            try:
                cert = openpgp.load(row.full_data)
            except openpgp.KeyRejected:
                report.unreadable.append(row.fingerprint)
                continue
            findable = {s.fingerprint: s.findable for s in cert.subkeys}
            keys_stale = any(
                not k.is_primary and k.findable != findable.get(k.fingerprint, k.findable)
                for k in row.keys
            )
            named = _named(cert)
            addresses_stale = any(a.address not in named for a in row.addresses)
            if cert.data == row.full_data and not keys_stale and not addresses_stale:
                continue
            report.repaired += 1
            report.bytes_before += len(row.full_data)
            report.bytes_after += len(cert.data)
            if not dry_run:
                _write(row, cert, now)
        return rows[-1].fingerprint

    # -- lookup ---------------------------------------------------------------------------

    def by_fingerprint(self, fingerprint: str) -> PublishedKey | None:
        with self._sessions() as session:
            return _first(cert_repo.find_by_key(session, fingerprint=fingerprint))

    def by_key_id(self, key_id: str) -> PublishedKey | None:
        with self._sessions() as session:
            return _first(cert_repo.find_by_key(session, key_id=key_id))

    def by_address(self, address: str) -> PublishedKey | None:
        with self._sessions() as session:
            row = cert_repo.find_published_by_address(session, address)
            return None if row is None else _published(row)

    def wkd(self, domain: str, wkd_hash: str) -> bytes | None:
        """The binary key for a WKD request, or None."""
        with self._sessions() as session:
            return cert_repo.find_wkd(session, domain, wkd_hash)

    def wkd_files(self, domains: Sequence[str] | None = None) -> dict[tuple[str, str], bytes]:
        """Every WKD answer, by (domain, hash): what a static export writes."""
        files: dict[tuple[str, str], bytes] = {}
        with self._sessions() as session:
            # Oldest confirmation first, so that the latest one per address wins.
            for row in cert_repo.wkd_rows(session, domains):
                assert row.wkd_data is not None
                for wkd_hash in (row.wkd_hash, row.wkd_hash_alt):
                    if wkd_hash:
                        files[(row.domain, wkd_hash)] = row.wkd_data
        return files

    def wkd_published_count(self, domain: str) -> int:
        with self._sessions() as session:
            return cert_repo.count_published_in_domain(session, domain)

    def find(self, query: Query) -> PublishedKey | None:
        """The key a parsed search names (fingerprint, key id or confirmed address)."""
        if query.kind == "fingerprint":
            return self.by_fingerprint(query.value)
        if query.kind == "key_id":
            return self.by_key_id(query.value)
        return self.by_address(query.value)

    def index(self, fingerprint: str) -> IndexEntry | None:
        """The index entry of a stored key (for HKP `op=index`)."""
        with self._sessions() as session:
            row = cert_repo.get(session, fingerprint)
            if row is None:
                return None
            if row.published_uids is not None:
                return index_entry(row, listed_user_ids(row.published_uids))
            served = set(cert_repo.published_addresses(row))
            user_ids = []
            if served:
                cert = openpgp.load(row.full_data)
                user_ids = [
                    IndexedUserId(uid.text, uid.revoked) for uid in _indexed_user_ids(cert, served)
                ]
            return index_entry(row, user_ids)

    def stats(self) -> Stats:
        """How many keys, published addresses and unsent mails the store holds."""
        with self._sessions() as session:
            return Stats(
                keys=cert_repo.count(session),
                published_addresses=cert_repo.count_published_addresses(session),
                outbox_depth=outbox.count_unsent(session),
            )

    # -- verification -----------------------------------------------------------------------

    def request_verify(
        self,
        token: str,
        addresses: Sequence[str],
        locales: Sequence[str] = (),
        *,
        mail_budget: MailBudget | None = None,
    ) -> UploadedKey:
        """Send one confirmation mail per requested address (rate-limited per address, and
        as far as ``mail_budget`` allows: None is no limit but the per-address one).

        ``token`` is the upload token. Raises VerifyRejected with a sentence.
        """
        return self._transaction(
            lambda session: self._request_verify(
                session, token, addresses, list(locales), mail_budget
            )
        )

    def _request_verify(
        self,
        session: Session,
        token: str,
        addresses: Sequence[str],
        locales: list[str],
        budget: MailBudget | None,
    ) -> UploadedKey:
        now = utcnow()
        upload = token_repo.find(session, token, TokenPurpose.UPLOAD)
        if upload is None or upload.expires_at <= now:
            raise VerifyRejected(
                "This upload token is unknown or has expired. Upload the key again to get a "
                "new one."
            )
        row = cert_repo.get(session, upload.cert_fingerprint)
        if row is None:
            raise VerifyRejected("The key of this upload token is no longer stored.")
        cert = openpgp.load(row.full_data)
        rows = {a.address: a for a in row.addresses}
        # Only what the upload showed may be mailed: a token from an upload of a served copy
        # (or of a lone signature) reaches none of the key's unconfirmed addresses.
        scope = set(json.loads(upload.scope)) if upload.scope is not None else set()
        wanted: list[str] = []
        for text in addresses:
            try:
                address = openpgp.normalize_address(text)
            except openpgp.InvalidAddress as exc:
                raise VerifyRejected(f"{text!r} is not a valid e-mail address.") from exc
            if address not in rows or address not in scope:
                raise VerifyRejected(f"The address {text} is not on the key you uploaded.")
            wanted.append(address)
        self._offer(session, [(row, cert, wanted)], locales=locales, now=now, budget=budget)
        return UploadedKey(row.fingerprint, _status(session, row, now, scope), False, False)

    def _offer_new_keys(
        self,
        certificates: Sequence[openpgp.Certificate],
        result: UploadResult,
        budget: MailBudget,
    ) -> None:
        """Offer confirmation to the addresses of the keys an upload created, once it is
        committed (the budget's counters are written in transactions of their own, which
        on SQLite would wait for the upload's). Only what this upload carried is offered."""
        new = {key.fingerprint for key in result.keys if key.new}
        certs = [cert for cert in certificates if cert.fingerprint in new]
        if not certs:
            return

        def offer(session: Session) -> None:
            rows = cert_repo.get_many(session, [cert.fingerprint for cert in certs])
            offers = [
                (rows[cert.fingerprint], cert, list(cert.addresses))
                for cert in certs
                if cert.fingerprint in rows  # deleted in between: nothing to offer
            ]
            self._offer(session, offers, locales=[], now=utcnow(), budget=budget)

        self._transaction(offer)

    def _offer(
        self,
        session: Session,
        offers: Sequence[tuple[CertRow, openpgp.Certificate, Sequence[str]]],
        *,
        locales: list[str],
        now: datetime,
        budget: MailBudget | None,
    ) -> None:
        """Queue a confirmation mail to each named unpublished address of a valid user ID
        of each (stored key, its certificate), at most one per address, as far as
        ``budget`` allows.

        Every address is chosen and the budget asked before anything is written: the
        budget's counters commit on their own connection, which on SQLite would wait for
        this transaction once it writes.
        """
        chosen: dict[str, tuple[CertRow, AddressRow]] = {}
        for row, cert, addresses in offers:
            rows = {a.address: a for a in row.addresses}
            for address in addresses:
                address_row = rows.get(address)
                uid = cert.addresses.get(address)
                if address in chosen or address_row is None or uid is None or not uid.valid:
                    continue
                if address_row.state != AddressState.UNPUBLISHED.value:
                    continue
                if self._mailed_recently(session, address, "verify", now):
                    continue  # rate limit: the earlier mail is still outstanding
                chosen[address] = (row, address_row)
        granted = [
            offer for address, offer in chosen.items() if budget is None or budget.take(address)
        ]
        for row, address_row in granted:
            self._queue_verification(session, row, address_row, locales, now)

    def _queue_verification(
        self,
        session: Session,
        row: CertRow,
        address: AddressRow,
        locales: list[str],
        now: datetime,
    ) -> None:
        lifetime = self.limits.verify_token_lifetime
        token = token_repo.issue(
            session,
            TokenPurpose.VERIFY,
            row.fingerprint,
            lifetime=lifetime,
            now=now,
            address=address.address,
        )
        message = messages.verification(
            address=address.address,
            # messages puts every value on one line; only the length is bounded here.
            user_id=address.user_id[:300],
            fingerprint=row.fingerprint,
            link=self.site.link(f"/verify/{token}"),
            service=self.site.name,
            valid_days=max(1, lifetime.days),
            locales=locales,
        )
        self._enqueue(session, message, now)

    def _mailed_recently(self, session: Session, address: str, kind: str, now: datetime) -> bool:
        """The per-address mail rate limit, counted from the outbox (shared by all processes)."""
        last = outbox.last_created(session, address, kind)
        return last is not None and now - last < self.limits.mail_interval

    def _enqueue(self, session: Session, message: messages.Message, now: datetime) -> None:
        outbox.enqueue(
            session,
            kind=message.kind,
            recipient=message.recipient,
            subject=message.subject,
            text_body=message.text,
            html_body=message.html,
            message_id=f"<{secrets.token_hex(16)}@{self.site.name}>",
            now=now,
        )
        session.info["mail_queued"] = True

    def confirmation(self, token: str) -> Confirmation:
        """What a verification link would confirm; changes nothing (mail scanners GET)."""
        with self._sessions() as session:
            return self._check_verify_token(session, token, utcnow())

    def _check_verify_token(self, session: Session, token: str, now: datetime) -> Confirmation:
        row = token_repo.find(session, token, TokenPurpose.VERIFY)
        if row is None:
            return Confirmation(TokenState.UNKNOWN)
        if row.used_at is not None:
            return Confirmation(TokenState.USED, row.address, row.cert_fingerprint)
        if row.expires_at <= now:
            return Confirmation(TokenState.EXPIRED, row.address, row.cert_fingerprint)
        return Confirmation(TokenState.VALID, row.address, row.cert_fingerprint)

    def confirm(self, token: str) -> Confirmation:
        """Publish the address the token was sent to. Single use; a second use changes nothing."""
        return self._transaction(lambda session: self._confirm(session, token))

    def _confirm(self, session: Session, token: str) -> Confirmation:
        now = utcnow()
        checked = self._check_verify_token(session, token, now)
        if checked.state != TokenState.VALID:
            return checked
        token_row = token_repo.find(session, token, TokenPurpose.VERIFY)
        assert token_row is not None and token_row.address is not None
        row = cert_repo.get(session, token_row.cert_fingerprint, for_update=True)
        if row is None:
            return Confirmation(TokenState.UNKNOWN)
        cert = openpgp.load(row.full_data)
        uid = cert.addresses.get(token_row.address)
        if uid is None or not uid.valid:
            return Confirmation(TokenState.REVOKED, token_row.address, row.fingerprint)
        # The conditional update makes this the one request that uses the token, however
        # many clicks arrive at once.
        if not token_repo.consume(session, token_row, now):
            return Confirmation(TokenState.USED, token_row.address, row.fingerprint)
        for address in row.addresses:
            if address.address == token_row.address:
                address.state = AddressState.PUBLISHED.value
                address.verified_at = now
                address.user_id = uid.text
        _render(row, cert)
        row.updated_at = now
        return Confirmation(TokenState.VALID, token_row.address, row.fingerprint)

    # -- management -------------------------------------------------------------------------

    def request_manage(self, text: str, locales: Sequence[str] = ()) -> None:
        """Mail a manage link if the address is published. Says nothing either way."""
        try:
            address = openpgp.normalize_address(text)
        except openpgp.InvalidAddress as exc:
            raise VerifyRejected("This is not a valid e-mail address.") from exc
        self._transaction(lambda session: self._request_manage(session, address, list(locales)))

    def _request_manage(self, session: Session, address: str, locales: list[str]) -> None:
        now = utcnow()
        row = cert_repo.find_published_by_address(session, address)
        if row is None:
            return
        if self._mailed_recently(session, address, "manage", now):
            return
        lifetime = self.limits.manage_token_lifetime
        token = token_repo.issue(
            session,
            TokenPurpose.MANAGE,
            row.fingerprint,
            lifetime=lifetime,
            now=now,
            address=address,
        )
        message = messages.manage_link(
            address=address,
            fingerprint=row.fingerprint,
            link=self.site.link(f"/manage/{token}"),
            service=self.site.name,
            valid_hours=max(1, int(lifetime.total_seconds() // 3600)),
            locales=locales,
        )
        self._enqueue(session, message, now)

    def manage_view(self, token: str) -> ManageView:
        with self._sessions() as session:
            return self._manage_view(session, token, utcnow())

    def _manage_view(self, session: Session, token: str, now: datetime) -> ManageView:
        token_row = token_repo.find(session, token, TokenPurpose.MANAGE)
        if token_row is None or token_row.address is None:
            return ManageView(TokenState.UNKNOWN)
        if token_row.expires_at <= now:
            return ManageView(TokenState.EXPIRED)
        keys = [
            ManagedKey(
                row.fingerprint,
                {
                    a.address: AddressState(a.state)
                    for a in row.addresses
                    if a.state in (AddressState.PUBLISHED.value, AddressState.REVOKED.value)
                },
            )
            for row in cert_repo.find_all_published_by_address(session, token_row.address)
        ]
        return ManageView(TokenState.VALID, token_row.address, keys)

    def unpublish(self, token: str, fingerprint: str, address: str) -> ManageView:
        """Withdraw one address of a managed key from every protocol at once."""
        return self._transaction(
            lambda session: self._unpublish(session, token, fingerprint, {address})
        )

    def delete_identity(self, token: str, fingerprint: str) -> ManageView:
        """Withdraw every address and delete every user ID of a managed key."""
        return self._transaction(lambda session: self._unpublish(session, token, fingerprint, None))

    def _unpublish(
        self, session: Session, token: str, fingerprint: str, addresses: set[str] | None
    ) -> ManageView:
        now = utcnow()
        view = self._manage_view(session, token, now)
        if view.state != TokenState.VALID:
            return view
        if fingerprint not in {key.fingerprint for key in view.keys}:
            return view  # not a key this link may change: nothing happens
        row = cert_repo.get(session, fingerprint, for_update=True)
        assert row is not None
        cert = openpgp.load(row.full_data)
        if addresses is None:
            for address_row in list(row.addresses):
                row.addresses.remove(address_row)
            cert = cert.without_user_ids()
            row.full_data = cert.data
        else:
            for address_row in row.addresses:
                if address_row.address in addresses:
                    address_row.state = AddressState.UNPUBLISHED.value
                    address_row.verified_at = None
        _render(row, cert)
        row.updated_at = now
        session.flush()
        return self._manage_view(session, token, now)


def _fingerprints(certificates: Sequence[openpgp.Certificate]) -> list[str]:
    return [
        fpr
        for cert in certificates
        for fpr in (cert.fingerprint, *(subkey.fingerprint for subkey in cert.subkeys))
    ]


def _refuse_blocked(session: Session, certificates: Sequence[openpgp.Certificate]) -> None:
    """Raise KeyBlocked (rolling the whole upload back) if any key or subkey is blocked."""
    blocked = blocklist.blocked_among(session, _fingerprints(certificates))
    for cert in certificates:
        if cert.fingerprint in blocked:
            raise KeyBlocked(
                f"The key {cert.fingerprint} is blocked on this key directory and cannot be "
                "uploaded. Nothing was stored."
            )
        for subkey in cert.subkeys:
            if subkey.fingerprint in blocked:
                raise KeyBlocked(
                    f"The key {cert.fingerprint} carries the subkey {subkey.fingerprint}, "
                    "which is blocked on this key directory, so the key cannot be uploaded. "
                    "Nothing was stored."
                )


def _first(rows: Sequence[CertRow]) -> PublishedKey | None:
    return _published(rows[0]) if rows else None


def _published(row: CertRow) -> PublishedKey:
    return PublishedKey(
        row.fingerprint, row.published_armor, row.published_digest, row.updated_at, row.version
    )


def _shown(cert: openpgp.Certificate) -> set[str]:
    """The addresses an upload showed us: those of its user IDs that verify."""
    return set(cert.addresses)


def _status(
    session: Session, row: CertRow, now: datetime, shown: set[str]
) -> dict[str, AddressState]:
    """The state of each stored address of ``row`` among ``shown``; never any other: an
    upload's answer must not tell its sender about addresses it did not carry."""
    status = {}
    for address in row.addresses:
        if address.address not in shown:
            continue
        state = AddressState(address.state)
        if state == AddressState.UNPUBLISHED and token_repo.outstanding(
            session, TokenPurpose.VERIFY, row.fingerprint, address.address, now
        ):
            state = AddressState.PENDING
        status[address.address] = state
    return status


def _write(row: CertRow, cert: openpgp.Certificate, now: datetime) -> None:
    """Store a certificate and everything derived from it in ``row``."""
    row.key_id = cert.key_id
    row.version = cert.version
    row.algorithm = cert.algorithm
    row.bits = cert.bits
    row.curve = cert.curve
    row.created = cert.created
    row.expires = cert.expires
    row.revoked = cert.revoked
    row.full_data = cert.data
    row.updated_at = now
    cert_repo.set_keys(
        row,
        [(cert.fingerprint, cert.key_id, True, True)]
        + [(s.fingerprint, s.key_id, False, s.findable) for s in cert.subkeys],
    )
    # An address no user ID of the key names any more (read under stricter address rules
    # than when it was stored: a user ID naming two addresses, a domain folded by IDNA
    # 2003) is dropped, so that no lookup of it finds this key.
    named = _named(cert)
    for stale in [a for a in row.addresses if a.address not in named]:
        row.addresses.remove(stale)
    existing = {a.address: a for a in row.addresses}
    for address, uid in cert.addresses.items():
        current = existing.get(address)
        if current is None:
            if uid.valid:
                draft, alt = wkd.hashes_for(uid.text, address)
                row.addresses.append(
                    AddressRow(
                        address=address,
                        user_id=uid.text,
                        state=AddressState.UNPUBLISHED,
                        domain=wkd.domain_of(address),
                        wkd_hash=draft,
                        wkd_hash_alt=alt,
                    )
                )
        elif uid.revoked and current.state == AddressState.PUBLISHED.value:
            # The owner revoked this user ID: keep serving it, with its revocation.
            current.state = AddressState.REVOKED.value
    _render(row, cert)


def _named(cert: openpgp.Certificate) -> set[str]:
    """Every address a user ID of ``cert`` names, valid or not."""
    return {uid.address for uid in cert.user_ids if uid.address}


def _indexed_user_ids(cert: openpgp.Certificate, served: set[str]) -> list[openpgp.UserId]:
    """The user IDs an index lists: those of published (or revoked) addresses."""
    return [uid for uid in cert.user_ids if uid.address in served and (uid.valid or uid.revoked)]


def listed_user_ids(published_uids: str) -> list[IndexedUserId]:
    """The index listing stored with a key (``certs.published_uids``)."""
    return [IndexedUserId(text, revoked) for text, revoked in json.loads(published_uids)]


def index_entry(row: CertRow, user_ids: list[IndexedUserId]) -> IndexEntry:
    return IndexEntry(
        row.fingerprint,
        row.version,
        row.algorithm,
        row.bits,
        row.created,
        row.expires,
        row.revoked,
        user_ids,
    )


def _render(row: CertRow, cert: openpgp.Certificate) -> None:
    """Pre-compute what lookups serve: the key with its published user IDs only."""
    served = cert_repo.published_addresses(row)
    armor = cert.armored(served)
    row.published_armor = armor
    row.published_digest = hashlib.sha256(armor.encode("ascii")).hexdigest()
    row.published_uids = json.dumps(
        [[uid.text, uid.revoked] for uid in _indexed_user_ids(cert, set(served))]
    )
    # WKD answers carry only the user IDs of the requested address (draft section 3.1).
    for address in row.addresses:
        address.wkd_data = cert.published([address.address]) if address.address in served else None
