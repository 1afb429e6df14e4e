"""A group's cached probes: is the value of a key cached on this host, owned or hot?

Synchronous and lock-free (the arena's seqlocks); the data plane's hit path calls
``get_cached``/``get_packed`` before anything else.  A probe only reads the cache
and adds to the group's counters, so it has no state of its own to guard.
"""

from __future__ import annotations

from .core import GroupCore


class CachedProbes(GroupCore):
    """Read this host's copy of a key without loading: the hit path."""

    def get_cached(self, key: str) -> bytes | None:
        """The value when this host has it cached (owned or hot), else None.

        The synchronous hot path: the HTTP handler tries it before ``get``.
        Counts the get and the hit only on a hit, so a miss followed by
        ``get`` is counted once.
        """
        # get_entry, not get: an entry stored under any codec (this group's, or the one it
        # had before a change) is decoded by its own id.  A raw entry costs one test.
        entry = self._cache.get_entry(self.name, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("local_hits")
            return entry[0] if not entry[1] else self.value_of(entry)
        entry = self._cache.get_entry(self._hot, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("hot_hits")
            return entry[0] if not entry[1] else self.value_of(entry)
        return None


    def get_packed(self, key: str) -> tuple[bytes, int, float] | None:
        """(stored bytes, codec id, expire_at) when cached here (owned or hot), else None.

        ``get_cached`` without the decompress: the data plane passes a gzip or
        zstd entry to a client that accepts it.  Counts as ``get_cached`` does.
        """
        entry = self._cache.get_entry(self.name, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("local_hits")
            return entry
        entry = self._cache.get_entry(self._hot, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("hot_hits")
        return entry
