"""The owner's side: what a group answers other hosts.

A request from a peer is served from this host (cache, else source) and never
forwarded again (invariant 3); a handoff ask or a warm-up is answered from the
cache only.  ``_local_calls`` is the peer-served loads' own single flight, kept apart
from the client's (joining a client get that forwards to a peer could make two hosts
wait on each other); the event loop's thread guards it.
"""

from __future__ import annotations

import asyncio

from ..errors import GeeCacheError, NotFoundError, public_reason
from ..limits import check_key
from ..singleflight import Group as SingleFlight
from .loads import HostLoads


class PeerServing(HostLoads):
    """Serve other hosts: a peer's get and batch, a handoff ask, a warm-up's scan."""

    #: Loads a peer asked for, one per key (the event loop's thread guards it).
    _local_calls: SingleFlight

    async def get_local(self, key: str) -> tuple[bytes, float]:
        """(value, expire_at or 0) for a peer: served from this host, never forwarded.

        A request from a peer must not hop again, so hosts whose rings briefly
        disagree cannot loop (mailgun/groupcache#72).
        """
        hit = self.get_local_cached(key)
        return hit if hit is not None else await self.load_local(key)


    def get_local_cached(self, key: str) -> tuple[bytes, float] | None:
        """The synchronous half of ``get_local``: (value, expire_at or 0) when cached here, else None.

        Counts the peer request; after a None, ``load_local`` is the rest.  The
        data plane answers a peer's hit from it without starting a task.
        """
        entry = self.get_local_packed(key)
        return None if entry is None else (self.value_of(entry), entry[2])


    def get_local_packed(self, key: str) -> tuple[bytes, int, float] | None:
        """``get_local_cached`` as stored: (bytes, codec id, expire_at), for a peer's GET.

        The owner sends what it keeps, so it never compresses on a peer GET.
        """
        check_key(key)
        self.stats.add("peer_requests")
        return self._cache.get_entry(self._partition(key)[0], key)


    def stored_entry(self, key: str) -> tuple[bytes, int, float] | None:
        """The entry a load just stored for a peer's *key* (uncounted), else None."""
        return self._cache.get_entry(self._partition(key)[0], key)


    async def load_local(self, key: str) -> tuple[bytes, float]:
        """The miss path of ``get_local``, for a caller whose ``get_local_cached`` just missed."""
        partition, ttl = self._partition(key)
        return await self._local_calls.do(key, lambda: self._load_local(key, partition, ttl))


    async def get_local_many(self, keys: list[str]) -> list[tuple[int, bytes, float, str]]:
        """A peer's batch: ``(status, value, expire_at, error)`` per key, in order; never forwarded.

        Counted as one peer request.  Hits come from this host's cache, the
        rest is loaded here (``load_local``: single flight per key, never a
        peer: invariant 3); 404 for a key the source has not, else the
        error's HTTP status and text.
        """
        for key in keys:
            check_key(key)
        self.stats.add("peer_requests")
        out: list = [None] * len(keys)
        misses = []
        for i, key in enumerate(keys):
            entry = self._cache.get_entry(self._partition(key)[0], key)
            if entry is None:
                misses.append(i)
            else:
                out[i] = (200, self.value_of(entry), entry[2], "")
        results = await asyncio.gather(*(self.load_local(keys[i]) for i in misses), return_exceptions=True)
        for i, result in zip(misses, results):
            if isinstance(result, tuple):
                out[i] = (200, result[0], result[1], "")
            elif isinstance(result, NotFoundError):
                out[i] = (404, b"", 0.0, "")
            elif isinstance(result, GeeCacheError):
                out[i] = (result.http_status, b"", 0.0, public_reason(result))
            else:
                raise result
        return out


    def cached_for_peer(self, keys: list[str]) -> list[tuple[bytes, int, float]] | None:
        """The entries (as stored) of a peer's batch of checked *keys* when every one is cached
        here, counted as one peer request (as ``get_local_many``); None, uncounted, when one is not."""
        get_entry = self._cache.get_entry
        name, hot = self.name, self._hot
        out = []
        # Each key's partition as _partition picks it, the member list looked at once per batch.
        for key, mine in zip(keys, self.peers.owns(keys)):
            entry = get_entry(name if mine else hot, key)
            if entry is None:
                return None
            out.append(entry)
        self.stats.add("peer_requests")
        return out


    def get_handoff_cached(self, key: str) -> tuple[bytes, float] | None:
        """(value, expire_at or 0) for a new owner's handoff ask: this host's cached
        copy, owned or hot, whoever owns the key now; None when not cached (never loads).

        Not counted in ``peer_requests``: the asker counts the ask (``handoff_hits``/``_misses``)."""
        check_key(key)
        for partition in (self.name, self._hot):
            entry = self._cache.get_entry(partition, key)
            if entry is not None:
                return self.value_of(entry), entry[2]
        return None


    def holds_nothing(self) -> bool:
        """True when this host caches no entry of the group, owned or hot (it is cold)."""
        usage = self._cache.usage
        return not usage(self.name)[1] and not usage(self._hot)[1]


    def hottest(self, want, max_bytes: int, deadline: float):
        """(entries, truncated) of the owned partition, hottest first (``Arena.hottest``): a warm-up's answer."""
        return self._cache.hottest(self.name, want, max_bytes, deadline)
