"""Group: groupcache's named namespace over one source.

``get`` checks this host's cache, then asks the ring who owns the key: the
owner's copy comes over the peer protocol (kept as a bounded "hot" copy
here), a key this host owns is loaded from the source once per host (an
in-process single flight in front of the arena's host-wide one) and cached.
``set``/``delete`` go to the owner, which writes through to the source first:
the source is the truth and the cache may lose anything at any time.
"""

from __future__ import annotations

import asyncio
import re
import time

from .cache import Cache, HostFlight, LocalCache, NoHostFlight
from .compression import get_codec
from .errors import (
    GeeCacheError,
    InvalidKeyError,
    LoadError,
    NotFoundError,
    PeerError,
    ReadOnlySourceError,
)
from .limits import DEFAULT_ITEM_LIMIT, check_key, check_value
from .peers import NoPeers, PeerPicker
from .singleflight import Group as SingleFlight

_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

#: Hot copies (values another host owns) live at most this long, so a lost
#: invalidation is healed by time (groupcache keeps them until evicted).
DEFAULT_HOT_TTL = 60.0
#: The hot region's share of a group's budget (groupcache: 1/8).
HOT_FRACTION = 8
#: How long a miss waits for another process's load before loading itself.
DEFAULT_FLIGHT_WAIT = 10.0
_FLIGHT_POLL_MIN = 0.001
_FLIGHT_POLL_MAX = 0.02


def check_group_name(name: str) -> str:
    """Validate a group name (letters, digits, ``_ . -``; 1-64 chars)."""
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise InvalidKeyError(f"invalid group name {name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return name


def hot_group_name(name: str) -> str:
    """The cache partition holding hot copies of *name*'s remote keys."""
    return "hot:" + name  # ':' is not allowed in group names: no collision


class Group:
    """A cache namespace: name, source, budget, policy, TTL, wire codec, peers."""

    def __init__(
        self,
        name: str,
        source,
        *,
        max_bytes: int = 64 << 20,
        policy: str = "lru",
        ttl: float = 0,
        codec: str = "none",
        cache: Cache | None = None,
        flight: HostFlight | None = None,
        peers: PeerPicker | None = None,
        item_limit: int = DEFAULT_ITEM_LIMIT,
        hot_ttl: float = DEFAULT_HOT_TTL,
        flight_wait: float = DEFAULT_FLIGHT_WAIT,
    ) -> None:
        self.name = check_group_name(name)
        self.source = source
        self.max_bytes = int(max_bytes)
        self.policy = policy
        self.ttl = float(ttl)
        self.codec = get_codec(codec)
        self.item_limit = int(item_limit)
        self.peers: PeerPicker = peers or NoPeers()
        self._cache: Cache = cache if cache is not None else LocalCache()
        self._flight: HostFlight = flight if flight is not None else NoHostFlight()
        self._calls = SingleFlight()
        # Peer-served loads get their own flight: joining a client get that is
        # itself forwarding to a peer would let two hosts wait on each other.
        self._local_calls = SingleFlight()
        self._hot = hot_group_name(name)
        self._hot_ttl = float(min(hot_ttl, ttl) if ttl else hot_ttl)
        self._flight_wait = flight_wait
        self._cache.configure_group(self.name, self.max_bytes, policy)
        self._cache.configure_group(self._hot, max(self.max_bytes // HOT_FRACTION, 1), "lru")
        self.stats = self._cache.stats_sink(self.name)

    @property
    def readonly(self) -> bool:
        """True when the source cannot be written (a loader function)."""
        return bool(getattr(self.source, "readonly", False))

    # -- reads -----------------------------------------------------------------

    def get_cached(self, key: str) -> bytes | None:
        """The value when this host has it cached (owned or hot), else None.

        The synchronous hot path: the HTTP handler tries it before ``get``.
        Counts the get and the hit only on a hit, so a miss followed by
        ``get`` is counted once.
        """
        value = self._cache.get(self.name, key)
        if value is not None:
            self.stats.add("gets")
            self.stats.add("local_hits")
            return value
        value = self._cache.get(self._hot, key)
        if value is not None:
            self.stats.add("gets")
            self.stats.add("hot_hits")
        return value

    async def get(self, key: str) -> bytes:
        """The value of *key*: cache, else owner peer, else source (once per host)."""
        check_key(key)
        cached = self.get_cached(key)
        if cached is not None:
            return cached
        self.stats.add("gets")
        value, shared = await self._calls.do_ex(key, lambda: self._load(key))
        if shared:
            self.stats.add("loads_deduped")
        return value

    async def get_local(self, key: str) -> tuple[bytes, float]:
        """(value, expire_at) for a peer: served from this host, never forwarded.

        A request from a peer must not hop again, so hosts whose rings briefly
        disagree cannot loop (mailgun/groupcache#72).
        """
        check_key(key)
        self.stats.add("peer_requests")
        value = self._cache.get(self.name, key)
        if value is None:
            value = await self._local_calls.do(key, lambda: self._load_local(key))
        return value, (time.time() + self.ttl if self.ttl else 0.0)

    async def _load(self, key: str) -> bytes:
        peer = self.peers.pick(key)
        if peer is not None:
            try:
                value, _expire_at = await peer.fetch(self.name, key)
            except PeerError:
                self.stats.add("peer_errors")  # invariant 4: a peer down is a slow path
            else:
                self.stats.add("peer_hits")
                self._cache.set(self._hot, key, value, self._hot_ttl)
                return value
        return await self._load_local(key)

    async def _load_local(self, key: str) -> bytes:
        """Load through the host-wide flight: one process per host runs the source."""
        deadline = time.monotonic() + self._flight_wait
        while True:
            if self._flight.try_begin(self.name, key):
                try:
                    # Another process may have finished loading between our miss and now.
                    value = self._cache.get(self.name, key)
                    if value is not None:
                        self.stats.add("loads_deduped")
                        return value
                    return await self._load_source(key)
                finally:
                    self._flight.end(self.name, key)
            value = await self._wait_for_other_loader(key, deadline)
            if value is not None:
                self.stats.add("loads_deduped")
                return value
            if time.monotonic() >= deadline:
                # The other loader is stuck: serving beats waiting forever.
                return await self._load_source(key)
            # The loader ended without a value (not found, failed) or died: try to take over.

    async def _wait_for_other_loader(self, key: str, deadline: float) -> bytes | None:
        delay = _FLIGHT_POLL_MIN
        while self._flight.loading(self.name, key) and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _FLIGHT_POLL_MAX)
            value = self._cache.get(self.name, key)
            if value is not None:
                return value
        return self._cache.get(self.name, key)

    async def _load_source(self, key: str) -> bytes:
        self.stats.add("loads")
        try:
            value = await self.source.get(key)
        except GeeCacheError:
            self.stats.add("load_errors")
            raise
        except Exception as exc:
            self.stats.add("load_errors")
            raise LoadError(f"group {self.name!r}: loading {key!r} failed: {exc!r}") from exc
        if value is None:
            raise NotFoundError(f"group {self.name!r} has no key {key!r}")
        value = check_value(value, self.item_limit)
        self._cache.set(self.name, key, value, self.ttl)
        return value

    # -- writes ----------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlySourceError(f"group {self.name!r} has a read-only source")

    async def set(self, key: str, value: bytes) -> None:
        """Write *value* through to the owner's source, then cache it there."""
        check_key(key)
        value = check_value(value, self.item_limit)
        self._check_writable()
        self.stats.add("sets")
        self._cache.delete(self._hot, key)
        peer = self.peers.pick(key)
        if peer is not None:
            try:
                return await peer.set(self.name, key, value)
            except PeerError:
                self.stats.add("peer_errors")
        await self.set_local(key, value)

    async def set_local(self, key: str, value: bytes) -> None:
        """The owner's half of ``set``: source first, then cache, then drop hot copies."""
        value = check_value(value, self.item_limit)
        self._check_writable()
        await self.source.set(key, value)
        self._cache.set(self.name, key, value, self.ttl)
        await self.peers.invalidate(self.name, [key])

    async def delete(self, key: str) -> bool:
        """Delete *key* from the owner's source and cache; True when the source had it."""
        check_key(key)
        self._check_writable()
        self.stats.add("deletes")
        self._cache.delete(self._hot, key)
        peer = self.peers.pick(key)
        if peer is not None:
            try:
                return await peer.delete(self.name, key)
            except PeerError:
                self.stats.add("peer_errors")
        return await self.delete_local(key)

    async def delete_local(self, key: str) -> bool:
        """The owner's half of ``delete``: source, cache, then hot copies elsewhere."""
        self._check_writable()
        existed = await self.source.delete(key)
        self._cache.delete(self.name, key)
        await self.peers.invalidate(self.name, [key])
        return bool(existed)

    def invalidate_hot(self, keys: list[str]) -> None:
        """Drop hot copies of *keys* (the owner changed them)."""
        for key in keys:
            self._cache.delete(self._hot, key)
