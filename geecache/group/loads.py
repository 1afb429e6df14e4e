"""The host-wide load machinery: one process per host runs the source for a key.

A miss this host must load takes the key's slot in the arena's host-wide flight
(the slot and the pid stamped in it guard it across processes); the other workers
poll the cache until the value appears or the loader dies.  The slot's holder asks
a recent previous owner's cache first (the handoff), then the source, bounded by
``load_timeout``.  The write fence (the event loop's thread guards it) tells a load
whether a write landed meanwhile, and then its value is served but not kept.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from ..backoff import wait_while
from ..compression import unpack
from ..errors import GeeCacheError, LoadError, LoadTimeoutError, NotFoundError, PeerError
from ..limits import check_value
from ..observability.latency import SOURCE_LOADS
from ..storage.base import row_reader
from .core import GroupCore

log = logging.getLogger("geecache.group")


class HostLoads(GroupCore):
    """Load a key once per host: the host-wide flight, the handoff ask, the source."""

    async def _load_local(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        """Load through the host-wide flight: one process per host runs the source.

        (value, expire_at or 0): when the value is gone, the sooner of the
        cache entry's TTL and the source row's own expiry (a per-item TTL).
        """
        deadline = time.monotonic() + self._flight_wait
        while True:
            if self._flight.try_begin(self.name, key):
                try:
                    # Another process may have finished loading between our miss and now.
                    entry = self._cache.get_entry(partition, key)
                    if entry is not None:
                        self.stats.add("loads_deduped")
                        return self.value_of(entry), entry[2]
                    return await self._handoff_or_load(key, partition, ttl)
                finally:
                    self._flight.end(self.name, key)
            log.debug("group %s: %r is being loaded by another process of this host; waiting", self.name, key)
            entry = await self._wait_for_other_loader(key, partition, deadline)
            if entry is not None:
                self.stats.add("loads_deduped")
                return self.value_of(entry), entry[2]
            if time.monotonic() >= deadline:
                # The other loader is stuck: serving beats waiting forever.
                log.debug("group %s: the other load of %r outlasted flight_wait; loading it too", self.name, key)
                return await self._load_source(key, partition, ttl)
            # The loader ended without a value (not found, failed) or died: try to take over.


    async def _handoff_or_load(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        # A key that moved here in a ring change is likely in its previous owner's
        # cache: ask that cache (never its source) before loading, so a host joining
        # is not a load storm.  Any failure or miss falls back to the source.
        peer = self.peers.handoff_peer(key) if partition == self.name else None
        if peer is None:
            return await self._load_source(key, partition, ttl)
        if self.peers.is_cold(peer.address, self.name):
            # It said lately that it holds nothing of this group (a cluster starting cold):
            # asking costs a peer hop per miss for nothing.
            self.stats.add("handoff_cold")
            return await self._load_source(key, partition, ttl)
        writes = self._fence.enter(key)
        try:
            value, expire_at = await peer.fetch(self.name, key, self.item_limit, handoff=True)
        except (PeerError, NotFoundError) as exc:  # NotFoundError: not cached there
            self.stats.add("handoff_misses")
            if not isinstance(exc, NotFoundError):
                self._peer_failed(exc)
            elif exc.cold:
                self.peers.note_cold(peer.address, self.name)
            return await self._load_source(key, partition, ttl)
        finally:
            raced = self._fence.leave(key, writes)
        now = time.time()
        if expire_at and expire_at <= now:  # dead by this host's clock: never served, never kept
            self.stats.add("handoff_misses")
            return await self._load_source(key, partition, ttl)
        self.stats.add("handoff_hits")
        if not expire_at and ttl:
            expire_at = now + ttl
        if not raced and (not expire_at or expire_at > now):  # (a write meanwhile: serve, don't keep)
            self._store(partition, key, value, expire_at - now if expire_at else 0)
        return value, expire_at


    async def _wait_for_other_loader(self, key: str, partition: str, deadline: float):
        def waiting() -> bool:  # the other process still loads and has stored nothing yet
            return self._flight.loading(self.name, key) and self._cache.get(partition, key) is None

        await wait_while(waiting, deadline)
        return self._cache.get_entry(partition, key)


    async def _load_source(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        self.stats.add("loads")
        writes = self._fence.enter(key)
        started = time.perf_counter()
        try:
            # Bounded (invariant 8): on timeout the flights above are released, so a
            # later request loads again; a loader's thread runs on in its own pool.
            # (asyncio.timeout, not wait_for: no Task of its own per load.)
            async with asyncio.timeout(self.load_timeout):
                row = await row_reader(self.source)(key)
        except asyncio.TimeoutError:
            self.stats.add("load_errors")
            raise LoadTimeoutError(f"group {self.name!r}: loading {key!r} took longer than "
                                   f"load_timeout ({self.load_timeout:g}s)") from None
        except GeeCacheError:
            self.stats.add("load_errors")
            raise
        except Exception as exc:
            self.stats.add("load_errors")
            raise LoadError(f"group {self.name!r}: loading {key!r} failed: {exc!r}") from exc
        finally:
            raced = self._fence.leave(key, writes)
            SOURCE_LOADS.observe(self.name, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("group %s: loaded %r from the source in %.1fms: %s", self.name, key,
                      (time.perf_counter() - started) * 1000,
                      "not found" if row is None else f"{len(row.value)} bytes")
        if row is None:
            raise NotFoundError(f"group {self.name!r} has no key {key!r}")
        value = check_value(row.value, sys.maxsize)
        now = time.time()
        expire_at = now + ttl if ttl else 0.0
        if row.expire_at and (not expire_at or row.expire_at < expire_at):
            expire_at = row.expire_at  # a per-item TTL: the copy must not outlive the row
        if not raced and (not expire_at or expire_at > now):
            # (A write during the load made this value stale: serve it, don't keep it.)
            self._store(partition, key, value, expire_at - now if expire_at else 0)
        return value, expire_at


    def claim_flight(self, key: str, partition: str | None = None) -> bool:
        """Become the host-wide loader of *key* (of *partition*'s flight, default the group's):
        True when the caller holds it now and must ``release_flight``.  A write applied here
        meanwhile waits for it and stores its value again (``apply_writes``)."""
        return self._flight.try_begin(partition or self.name, key)


    def release_flight(self, key: str, partition: str | None = None) -> None:
        """Give up what ``claim_flight`` took."""
        self._flight.end(partition or self.name, key)


    def keep_warmed(self, key: str, payload: bytes, codec: int, expire_at: float) -> bool:
        """Store a previous owner's entry of *key* as owned (its bytes as sent, its expiry, by this
        host's clock), unless this host has one already (loaded or written here: as new or newer)
        or it is dead; True when stored.  The caller holds the key's flight (``claim_flight``)."""
        if self._cache.get_entry(self.name, key) is not None:
            return False
        now = time.time()
        if expire_at and expire_at <= now:
            return False
        if not self.packs and codec:  # kept as the value; the codec id goes with packed bytes only
            payload = unpack(codec, payload, self.item_limit)
        self._store(self.name, key, payload, expire_at - now if expire_at else self.ttl,
                    codec if self.packs else None)
        return True
