"""Key lookups on the event loop: the hot path of every protocol.

``KeyLookups`` answers by fingerprint, key ID, address and WKD hash with the pre-computed
bytes, through the database's fast reader (``service.db.lookups``) where there is one, else
through the Directory in a worker thread. An optional in-process cache keeps answers for a
few seconds (bounded in entries), for deployments with hot keys and no caching proxy.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio.to_thread

from service.core.directory import Directory, IndexEntry, PublishedKey, listed_user_ids
from service.db.lookups import (
    LookupReader,
    LookupUnavailable,
    StoredIndex,
    StoredKey,
    make_reader,
)

__all__ = ["KeyLookups", "LookupUnavailable", "StoredKey"]

T = TypeVar("T")


class _DirectoryReader:
    """The ORM path in a worker thread, for databases without a fast reader."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    @staticmethod
    def _stored(key: PublishedKey | None) -> StoredKey | None:
        if key is None:
            return None
        return StoredKey(key.fingerprint, key.armor, key.digest, key.version)

    async def by_fingerprint(self, fingerprint: str) -> StoredKey | None:
        return self._stored(
            await anyio.to_thread.run_sync(self._directory.by_fingerprint, fingerprint)
        )

    async def by_key_id(self, key_id: str) -> StoredKey | None:
        return self._stored(await anyio.to_thread.run_sync(self._directory.by_key_id, key_id))

    async def by_address(self, address: str) -> StoredKey | None:
        return self._stored(await anyio.to_thread.run_sync(self._directory.by_address, address))

    async def wkd(self, domain: str, wkd_hash: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._directory.wkd, domain, wkd_hash)

    async def index(self, fingerprint: str) -> StoredIndex | None:
        return None  # KeyLookups.index asks the Directory itself

    async def close(self) -> None:
        return None


class KeyLookups:
    def __init__(
        self,
        directory: Directory,
        database_url: str,
        *,
        cache_seconds: float = 0.0,
        cache_entries: int = 0,
    ) -> None:
        self._directory = directory
        self._reader: LookupReader = make_reader(database_url) or _DirectoryReader(directory)
        self._ttl = cache_seconds
        self._capacity = cache_entries if cache_seconds > 0 else 0
        self._cache: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()

    async def _cached(self, kind: str, value: str, fetch: Callable[[], Awaitable[T]]) -> T:
        if not self._capacity:
            return await fetch()
        now = time.monotonic()
        hit = self._cache.get((kind, value))
        if hit is not None and hit[0] > now:
            self._cache.move_to_end((kind, value))
            return hit[1]  # type: ignore[return-value]
        result = await fetch()
        self._cache[(kind, value)] = (now + self._ttl, result)
        self._cache.move_to_end((kind, value))
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return result

    async def by_fingerprint(self, fingerprint: str) -> StoredKey | None:
        return await self._cached(
            "fpr", fingerprint, lambda: self._reader.by_fingerprint(fingerprint)
        )

    async def by_key_id(self, key_id: str) -> StoredKey | None:
        return await self._cached("kid", key_id, lambda: self._reader.by_key_id(key_id))

    async def by_address(self, address: str) -> StoredKey | None:
        return await self._cached("addr", address, lambda: self._reader.by_address(address))

    async def wkd(self, domain: str, wkd_hash: str) -> bytes | None:
        return await self._cached(
            "wkd", f"{domain}/{wkd_hash}", lambda: self._reader.wkd(domain, wkd_hash)
        )

    async def index(self, fingerprint: str) -> IndexEntry | None:
        """The HKP index entry of a stored key: one read of what was made when it was stored
        (the Directory makes it from the key for rows stored before that existed)."""
        stored = await self._reader.index(fingerprint)
        if stored is None or stored.published_uids is None:
            return await anyio.to_thread.run_sync(self._directory.index, fingerprint)
        return IndexEntry(
            stored.fingerprint,
            stored.version,
            stored.algorithm,
            stored.bits,
            stored.created,
            stored.expires,
            stored.revoked,
            listed_user_ids(stored.published_uids),
        )

    async def close(self) -> None:
        await self._reader.close()
