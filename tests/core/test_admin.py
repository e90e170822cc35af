"""Operator actions in the core (delete, block, unblock, stats), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from service import openpgp
from service.core.admin import Admin, NoSuchKey, NotBlocked
from service.core.directory import Directory, KeyBlocked
from service.core.queries import BadQuery
from service.db.models import (
    AddressRow,
    BlockedKeyRow,
    CertKeyRow,
    CertRow,
    OutboxRow,
    TokenRow,
    utcnow,
)
from service.db.session import make_sessionmaker
from tests.conftest import read_data
from tests.mailutil import LINK

EDDIE = "D1AB9AE4D50B3DAFF6F3670231EC1ACBA0ECCEB1"
RITA = "CD63BCDF6D92644A6856D92ED0B1DE8F99F115F2"
RITA_ADDRESSES = ("rita@example.org", "rita.work@example.com", "rita@example.net")


@pytest.fixture
def admin(database: tuple[str, Engine]) -> Admin:
    return Admin(make_sessionmaker(database[1]))


def subkey_of(name: str) -> str:
    cert = openpgp.read_upload(read_data(name)).certificates[0]
    assert cert.subkeys
    return cert.subkeys[0].fingerprint


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            model.__tablename__: conn.scalar(select(func.count()).select_from(model)) or 0
            for model in (CertRow, CertKeyRow, AddressRow, TokenRow, OutboxRow, BlockedKeyRow)
        }


def publish(directory: Directory, engine: Engine, name: str, address: str) -> str:
    """Upload ``name``, ask for a confirmation of ``address``, follow the queued link."""
    result = directory.upload(read_data(name))
    assert result.token is not None
    directory.request_verify(result.token, [address])
    with engine.connect() as conn:
        text = conn.scalar(
            select(OutboxRow.text_body)
            .where(OutboxRow.recipient == address)
            .order_by(OutboxRow.id.desc())
        )
    assert text is not None
    _, token = LINK.findall(text)[0]
    assert directory.confirm(token).address == address
    return result.keys[0].fingerprint


def test_delete_removes_the_key_and_everything_about_it(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    engine = database[1]
    publish(directory, engine, "rsa_multi_uid.asc", RITA_ADDRESSES[0])
    upload = directory.upload(read_data("rsa_multi_uid.asc"))
    assert upload.token is not None
    directory.request_verify(upload.token, [RITA_ADDRESSES[1]])  # a mail not sent yet
    publish(directory, engine, "ed25519.asc", "eddie@example.org")  # another key stays
    with engine.begin() as conn:  # the first mail went out already
        conn.execute(
            update(OutboxRow)
            .where(OutboxRow.recipient == RITA_ADDRESSES[0])
            .values(sent_at=utcnow())
        )
    before = counts(engine)
    with engine.connect() as conn:
        rita_keys = conn.scalar(
            select(func.count()).select_from(CertKeyRow).where(CertKeyRow.cert_fingerprint == RITA)
        )
        rita_tokens = conn.scalar(
            select(func.count()).select_from(TokenRow).where(TokenRow.cert_fingerprint == RITA)
        )
    assert rita_keys and rita_tokens

    removed = admin.delete(" 0x" + " ".join(RITA[i : i + 4] for i in range(0, 40, 4)).lower())

    assert removed.fingerprint == RITA
    assert removed.subkeys == rita_keys - 1
    assert removed.addresses == 3
    assert removed.published == 1
    assert removed.tokens == rita_tokens
    assert removed.mails == 1  # the unsent one; the sent one stays as a record
    after = counts(engine)
    assert after["certs"] == before["certs"] - 1
    assert after["cert_keys"] == before["cert_keys"] - rita_keys
    assert after["addresses"] == before["addresses"] - 3
    assert after["tokens"] == before["tokens"] - rita_tokens
    assert after["outbox"] == before["outbox"] - 1
    with engine.connect() as conn:
        assert not conn.scalar(select(func.count()).where(CertKeyRow.cert_fingerprint == RITA))
        unsent = conn.scalars(select(OutboxRow.recipient).where(OutboxRow.sent_at.is_(None)))
        assert RITA_ADDRESSES[1] not in set(unsent)
    assert directory.by_fingerprint(RITA) is None
    assert directory.by_address(RITA_ADDRESSES[0]) is None
    # The other key is untouched.
    assert directory.by_address("eddie@example.org") is not None
    # A deleted key may simply be uploaded again (only a block prevents that).
    assert directory.upload(read_data("rsa_multi_uid.asc")).keys[0].new


def test_delete_of_an_unknown_key_or_a_subkey_says_so(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    with pytest.raises(NoSuchKey, match=f"No key with the fingerprint {EDDIE} is stored"):
        admin.delete(EDDIE)
    directory.upload(read_data("ed25519.asc"))
    subkey = subkey_of("ed25519.asc")
    with pytest.raises(NoSuchKey, match=f"it is a subkey of {EDDIE}"):
        admin.delete(subkey)
    assert counts(database[1])["certs"] == 1
    with pytest.raises(BadQuery, match=r"40 .* or 64"):
        admin.delete("D1AB9AE4")


def test_delete_a_v6_key(directory: Directory, admin: Admin) -> None:
    fpr = directory.upload(read_data("v6_ed25519.asc")).keys[0].fingerprint
    assert len(fpr) == 64
    assert admin.delete(fpr.lower()).fingerprint == fpr
    assert directory.by_fingerprint(fpr) is None


def test_block_deletes_the_key_and_refuses_it_until_unblocked(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    publish(directory, database[1], "ed25519.asc", "eddie@example.org")
    result = admin.block(EDDIE, reason="court order 12/2026")
    assert result.new
    assert [r.fingerprint for r in result.removed] == [EDDIE]
    assert result.removed[0].published == 1
    assert directory.by_fingerprint(EDDIE) is None
    assert directory.by_address("eddie@example.org") is None

    for name in ("ed25519.asc", "ed25519_newer.asc", "ed25519_revoked.asc"):
        with pytest.raises(KeyBlocked, match=f"The key {EDDIE} is blocked"):
            directory.upload(read_data(name))
    assert counts(database[1])["certs"] == 0

    again = admin.block(EDDIE)
    assert not again.new
    assert again.removed == []
    assert again.blocked.reason == "court order 12/2026"  # kept when no new reason is given
    assert [b.fingerprint for b in admin.blocklist()] == [EDDIE]

    assert admin.unblock(EDDIE).fingerprint == EDDIE
    assert admin.blocklist() == []
    assert directory.upload(read_data("ed25519.asc")).keys[0].new
    with pytest.raises(NotBlocked, match="is not blocked"):
        admin.unblock(EDDIE)


def test_a_blocked_subkey_blocks_every_key_that_carries_it(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    subkey = subkey_of("ed25519.asc")
    directory.upload(read_data("ed25519.asc"))
    directory.upload(read_data("rsa_multi_uid.asc"))
    result = admin.block(subkey)
    assert [r.fingerprint for r in result.removed] == [EDDIE]
    assert directory.by_fingerprint(RITA) is not None  # does not carry it
    with pytest.raises(KeyBlocked, match=f"carries the subkey {subkey}"):
        directory.upload(read_data("ed25519.asc"))
    assert counts(database[1])["certs"] == 1


def test_one_blocked_key_refuses_the_whole_upload(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    fingerprints = [
        c.fingerprint for c in openpgp.read_upload(read_data("two_keys.asc")).certificates
    ]
    admin.block(fingerprints[1])
    before = counts(database[1])
    with pytest.raises(KeyBlocked, match=fingerprints[1]):
        directory.upload(read_data("two_keys.asc"))
    assert counts(database[1]) == before  # the other key was not stored either


def test_stats_count_what_is_stored(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    empty = admin.stats()
    assert empty.as_dict() == {
        "keys": 0,
        "keys_revoked": 0,
        "addresses": {"unpublished": 0, "pending": 0, "published": 0, "revoked": 0},
        "published_by_domain": [],
        "outbox": {"pending": 0, "failed": 0},
        "blocked": 0,
    }
    engine = database[1]
    publish(directory, engine, "rsa_multi_uid.asc", RITA_ADDRESSES[0])
    publish(directory, engine, "rsa_multi_uid.asc", RITA_ADDRESSES[2])
    token = directory.upload(read_data("rsa_multi_uid.asc")).token
    assert token is not None
    directory.request_verify(token, [RITA_ADDRESSES[1]])
    publish(directory, engine, "ed25519.asc", "eddie@example.org")
    directory.upload(read_data("ed25519_revoked.asc"))  # revokes the key
    directory.upload(read_data("nistp256.asc"))
    admin.block("AB" * 20)
    with engine.begin() as conn:
        ids = conn.scalars(select(OutboxRow.id).order_by(OutboxRow.id)).all()
        assert len(ids) == 4
        conn.execute(update(OutboxRow).where(OutboxRow.id == ids[0]).values(sent_at=utcnow()))
        conn.execute(
            update(OutboxRow)
            .where(OutboxRow.id == ids[1])
            .values(attempts=2, last_error="refused", next_attempt_at=utcnow())
        )

    stats = admin.stats(top=1)
    assert stats.keys == 3
    assert stats.keys_revoked == 1
    assert stats.addresses == {
        "unpublished": 2,  # nistp256@ and eddie2@ (on eddie's key, never asked for)
        "pending": 1,
        # eddie's address is still published on the revoked key (revoked user IDs count
        # as "revoked"; a revoked key keeps its confirmed ones).
        "published": 3,
        "revoked": 0,
    }
    assert stats.published_by_domain == [("example.org", 2)]
    assert admin.stats().published_by_domain == [
        ("example.org", 2),
        ("example.net", 1),
    ]
    assert (stats.outbox_pending, stats.outbox_failed) == (2, 1)
    assert stats.blocked == 1


def test_an_expired_link_is_not_pending(
    directory: Directory, admin: Admin, database: tuple[str, Engine]
) -> None:
    token = directory.upload(read_data("ed25519.asc")).token
    assert token is not None
    directory.request_verify(token, ["eddie@example.org"])
    asked = {"unpublished": 1, "pending": 1, "published": 0, "revoked": 0}  # eddie2@, eddie@
    assert admin.stats().addresses == asked
    with database[1].begin() as conn:
        conn.execute(update(TokenRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert admin.stats().addresses == {
        "unpublished": 2,
        "pending": 0,
        "published": 0,
        "revoked": 0,
    }


def test_a_block_during_an_upload_waits_and_then_deletes_it(
    database: tuple[str, Engine],
) -> None:
    """On PostgreSQL, a block that starts while an upload of the key is in flight waits for
    it and deletes what it stored; the upload cannot slip past the block."""
    url, engine = database
    if not url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time; the race needs PostgreSQL")
    sessions = make_sessionmaker(engine)
    admin = Admin(sessions)
    parsed = openpgp.read_upload(read_data("ed25519.asc"))
    entered = threading.Event()
    release = threading.Event()

    def slow_parser(data: bytes, **_limits: object) -> openpgp.ParsedUpload:
        return parsed

    class Slow(Directory):
        def _store_one(self, session, cert, now):  # type: ignore[no-untyped-def]
            stored = super()._store_one(session, cert, now)
            entered.set()
            assert release.wait(timeout=30)
            return stored

    slow = Slow(sessions, parser=slow_parser)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            slow.upload(b"ignored")
        except BaseException as exc:
            errors.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert entered.wait(timeout=30)
    blocked: list[object] = []
    blocker = threading.Thread(target=lambda: blocked.append(admin.block(EDDIE)))
    blocker.start()
    time.sleep(0.5)
    assert not blocked, "the block must wait for the upload in flight"
    release.set()
    uploader.join(timeout=30)
    blocker.join(timeout=30)
    assert errors == []
    assert len(blocked) == 1
    assert counts(engine)["certs"] == 0
    with pytest.raises(KeyBlocked):
        Directory(sessions).upload(read_data("ed25519.asc"))
