"""SQLAlchemy models. The schema is made only by the Alembic migrations in service/migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AddressState(StrEnum):
    UNPUBLISHED = "unpublished"
    PENDING = "pending"
    PUBLISHED = "published"
    REVOKED = "revoked"


class CertRow(Base):
    """One certificate: the full canonical bytes and the published artefacts made from them."""

    __tablename__ = "certs"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[int] = mapped_column(Integer)
    bits: Mapped[int] = mapped_column(Integer)
    curve: Mapped[str | None] = mapped_column(String(40))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    full_data: Mapped[bytes] = mapped_column(LargeBinary)
    published_armor: Mapped[str] = mapped_column(Text)
    # SHA-256 of published_armor: the strong ETag of every lookup that serves it.
    published_digest: Mapped[str] = mapped_column(String(64))
    # The HKP index of the published view: a JSON list of [user ID, revoked], made with
    # published_armor (NULL on rows stored before it existed: then made on request).
    published_uids: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    keys: Mapped[list[CertKeyRow]] = relationship(
        back_populates="cert", cascade="all, delete-orphan", passive_deletes=True
    )
    addresses: Mapped[list[AddressRow]] = relationship(
        back_populates="cert", cascade="all, delete-orphan", passive_deletes=True
    )


class CertKeyRow(Base):
    """Every (sub)key of a certificate, for lookups by key id or subkey fingerprint.

    Not unique by key: anyone may bind someone else's encryption subkey to their own
    certificate, so one subkey can belong to several certificates.
    """

    __tablename__ = "cert_keys"

    cert_fingerprint: Mapped[str] = mapped_column(
        ForeignKey("certs.fingerprint", ondelete="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    is_primary: Mapped[bool] = mapped_column(Boolean)
    # Whether a lookup by this subkey's own fingerprint may answer with ``cert``:
    # only when the subkey proved it belongs there (a verified back-signature) or its
    # algorithm can only encrypt (so it cannot be someone's primary key bound here to
    # capture lookups of that key).
    findable: Mapped[bool] = mapped_column(Boolean, server_default=true())

    cert: Mapped[CertRow] = relationship(back_populates="keys")


class AddressRow(Base):
    """An address named by a valid user ID of a certificate, and whether it is published."""

    __tablename__ = "addresses"
    __table_args__ = (
        Index("ix_addresses_address_state", "address", "state"),
        Index("uq_addresses_cert_address", "cert_fingerprint", "address", unique=True),
        Index("ix_addresses_wkd", "domain", "wkd_hash"),
        Index("ix_addresses_wkd_alt", "domain", "wkd_hash_alt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cert_fingerprint: Mapped[str] = mapped_column(
        ForeignKey("certs.fingerprint", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(254))
    user_id: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=AddressState.UNPUBLISHED.value)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # WKD: the address's domain, its local-part hash(es), and the binary key served for it
    # (only this address's user IDs), present while the address is published.
    domain: Mapped[str] = mapped_column(String(253), default="", server_default="")
    wkd_hash: Mapped[str] = mapped_column(String(32), default="", server_default="")
    wkd_hash_alt: Mapped[str | None] = mapped_column(String(32))
    wkd_data: Mapped[bytes | None] = mapped_column(LargeBinary)

    cert: Mapped[CertRow] = relationship(back_populates="addresses")


class TokenPurpose(StrEnum):
    UPLOAD = "upload"
    VERIFY = "verify"
    MANAGE = "manage"


class TokenRow(Base):
    """A capability sent to a person. Only its SHA-256 is stored; the token itself never is."""

    __tablename__ = "tokens"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    cert_fingerprint: Mapped[str] = mapped_column(
        ForeignKey("certs.fingerprint", ondelete="CASCADE"), index=True
    )
    address: Mapped[str | None] = mapped_column(String(254))
    # Upload tokens: the JSON list of addresses the upload showed, the only ones it may mail.
    scope: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """A mail waiting to be sent, written in the same transaction as what it announces.

    A dispatcher claims a row by setting ``claimed_until`` (a lease), sends it, and sets
    ``sent_at``. A dispatcher that dies lets its lease run out; another then takes the row.
    A mail that cannot be built, that the server refuses for good, or that failed too many
    times gets ``given_up_at`` and is never tried again.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "sent_at", "next_attempt_at"),
        Index("ix_outbox_recipient_kind", "recipient", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    given_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateCounterRow(Base):
    """Requests of one client in one fixed time window, per kind of request.

    In the database, not in process memory, so that every server process counts together.
    """

    __tablename__ = "rate_counters"

    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class BlockedKeyRow(Base):
    """A fingerprint that no upload may bring (back): an operator removed it for good.

    Matched against the primary key and every subkey of each uploaded certificate.
    """

    __tablename__ = "blocklist"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
