"""The read path of key lookups: one indexed query of pre-computed bytes, on the event loop.

A lookup through the ORM costs a session, a pooled connection with its liveness check and
a transaction around one SELECT: four round trips to PostgreSQL and most of a millisecond
of Python. Here a lookup is one statement on a connection kept open for it: psycopg's
asyncio connections in autocommit mode for PostgreSQL (the event loop never waits on the
network), and for SQLite one read-only connection per process, whose indexed reads take
microseconds. The queries are those of ``service.db.certs``, written out in SQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import make_url

from service.db.models import AddressState

# The states are written out in the SQL below; they must be these.
assert AddressState.PUBLISHED.value == "published"
assert AddressState.REVOKED.value == "revoked"

# Primary keys first, then the oldest certificate: as certs.find_by_key. Most lookups name
# a primary key, which one probe of the certs table answers; subkeys need the join.
_PRIMARY = (
    "SELECT fingerprint, published_armor, published_digest, version FROM certs "
    "WHERE {column} = {p} ORDER BY first_seen, fingerprint LIMIT 1"
)
_BY_KEY = (
    "SELECT c.fingerprint, c.published_armor, c.published_digest, c.version FROM cert_keys k "
    "JOIN certs c ON c.fingerprint = k.cert_fingerprint WHERE k.{column} = {p} {only} "
    "ORDER BY k.is_primary DESC, k.findable DESC, c.first_seen, c.fingerprint LIMIT 1"
)
# The latest confirmation wins: as certs.find_published_by_address.
_BY_ADDRESS = (
    "SELECT c.fingerprint, c.published_armor, c.published_digest, c.version FROM addresses a "
    "JOIN certs c ON c.fingerprint = a.cert_fingerprint "
    "WHERE a.address = {p} AND a.state = 'published' "
    "ORDER BY a.verified_at DESC, a.id DESC LIMIT 1"
)
# As certs.find_wkd: one indexed probe per hash column (an OR of the two made SQLite walk
# every address of the domain).
_WKD = (
    "SELECT wkd_data, verified_at, id FROM addresses WHERE domain = {p} AND wkd_hash = {p} "
    "AND state IN ('published', 'revoked') AND wkd_data IS NOT NULL "
    "UNION ALL SELECT wkd_data, verified_at, id FROM addresses "
    "WHERE domain = {p} AND wkd_hash_alt = {p} "
    "AND state IN ('published', 'revoked') AND wkd_data IS NOT NULL "
    "ORDER BY 2 DESC, 3 DESC LIMIT 1"
)


# The HKP index of a key, made when the key was stored.
_INDEX = (
    "SELECT fingerprint, version, algorithm, bits, created, expires, revoked, published_uids "
    "FROM certs WHERE fingerprint = {p}"
)


class LookupUnavailable(Exception):
    """The database did not answer."""


@dataclass(frozen=True, slots=True)
class StoredIndex:
    fingerprint: str
    version: int
    algorithm: int
    bits: int
    created: datetime
    expires: datetime | None
    revoked: bool
    published_uids: str | None  # JSON [[user ID, revoked], …]; None: not made yet


def _utc(value: datetime | str | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ISO text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _index(row: Any) -> StoredIndex | None:
    if row is None:
        return None
    fingerprint, version, algorithm, bits, created, expires, revoked, uids = row
    made = _utc(created)
    assert made is not None
    return StoredIndex(
        fingerprint, version, algorithm, bits, made, _utc(expires), bool(revoked), uids
    )


@dataclass(frozen=True, slots=True)
class StoredKey:
    fingerprint: str
    armor: str
    digest: str  # SHA-256 of ``armor``: a strong ETag
    version: int


class LookupReader(Protocol):
    async def by_fingerprint(self, fingerprint: str) -> StoredKey | None: ...
    async def by_key_id(self, key_id: str) -> StoredKey | None: ...
    async def by_address(self, address: str) -> StoredKey | None: ...
    async def wkd(self, domain: str, wkd_hash: str) -> bytes | None: ...
    async def index(self, fingerprint: str) -> StoredIndex | None: ...
    async def close(self) -> None: ...


class _Statements:
    def __init__(self, placeholder: str) -> None:
        p = placeholder
        self.primary_fingerprint = _PRIMARY.format(column="fingerprint", p=p)
        self.primary_key_id = _PRIMARY.format(column="key_id", p=p)
        self.by_fingerprint = _BY_KEY.format(
            column="fingerprint", p=p, only="AND (k.is_primary OR k.findable)"
        )
        self.by_key_id = _BY_KEY.format(column="key_id", p=p, only="")
        self.by_address = _BY_ADDRESS.format(p=p)
        self.wkd = _WKD.format(p=p)
        self.index = _INDEX.format(p=p)


class _Reader:
    """The lookups, written once over ``_one``: one statement, its first row or None."""

    _sql: _Statements

    async def _one(self, sql: str, params: tuple[str, ...]) -> Any:
        raise NotImplementedError

    async def by_fingerprint(self, fingerprint: str) -> StoredKey | None:
        row = await self._one(self._sql.primary_fingerprint, (fingerprint,))
        if row is None:
            row = await self._one(self._sql.by_fingerprint, (fingerprint,))
        return None if row is None else StoredKey(*row)

    async def by_key_id(self, key_id: str) -> StoredKey | None:
        row = await self._one(self._sql.primary_key_id, (key_id,))
        if row is None:
            row = await self._one(self._sql.by_key_id, (key_id,))
        return None if row is None else StoredKey(*row)

    async def by_address(self, address: str) -> StoredKey | None:
        row = await self._one(self._sql.by_address, (address,))
        return None if row is None else StoredKey(*row)

    async def wkd(self, domain: str, wkd_hash: str) -> bytes | None:
        row = await self._one(self._sql.wkd, (domain, wkd_hash, domain, wkd_hash))
        return None if row is None else bytes(row[0])

    async def index(self, fingerprint: str) -> StoredIndex | None:
        return _index(await self._one(self._sql.index, (fingerprint,)))


class SqliteLookups(_Reader):
    """One read-only connection per process, used from the event loop's thread only."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._sql = _Statements("?")
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Read-only, and never creating a database file where there is none.
            connection = sqlite3.connect(
                f"file:{urllib.parse.quote(self._path)}?mode=ro",
                uri=True,
                timeout=5,
                check_same_thread=False,
            )
            connection.execute("PRAGMA query_only = ON")
            self._connection = connection
        return self._connection

    async def _one(self, sql: str, params: tuple[str, ...]) -> Any:
        # An indexed read of a local file: done inline, the event loop barely notices.
        try:
            return self._connect().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            raise LookupUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PostgresLookups(_Reader):
    """A small pool of asyncio connections in autocommit mode (one statement per lookup).

    A connection that fails is dropped, and the lookup is tried once more on a new one (it
    only reads), so that lookups work again as soon as the database is back.
    """

    def __init__(self, conninfo: str, *, size: int = 8, connect_timeout: int = 5) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._idle: deque[psycopg.AsyncConnection[Any]] = deque()
        self._slots = asyncio.Semaphore(size)
        self._sql = _Statements("%s")

    async def _one(self, sql: str, params: tuple[str, ...]) -> Any:
        async with self._slots:
            for attempt in (1, 2):
                reused = bool(self._idle)
                try:
                    connection = (
                        self._idle.pop()
                        if reused
                        else await psycopg.AsyncConnection.connect(
                            self._conninfo,
                            autocommit=True,
                            connect_timeout=self._connect_timeout,
                        )
                    )
                except psycopg.Error as exc:
                    raise LookupUnavailable(str(exc)) from exc
                try:
                    cursor = await connection.execute(sql, params)
                    row = await cursor.fetchone()
                except psycopg.Error as exc:
                    await connection.close()
                    if attempt == 1 and reused:
                        continue  # it may have died while idle; a new one may work
                    raise LookupUnavailable(str(exc)) from exc
                self._idle.append(connection)
                return row
        raise AssertionError("unreachable")

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def make_reader(database_url: str) -> LookupReader | None:
    """The fast reader for this database, or None where there is none (in-memory SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return None
        return SqliteLookups(url.database)
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresLookups(conninfo)
    return None
