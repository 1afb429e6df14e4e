"""The cache interface a Group stores into, and an in-process implementation.

The shared-memory arena (``geecache.shm.Arena``) is the production cache; it
implements the same methods.  ``LocalCache`` is the plain single-process one:
for the library on its own and for tests of Group that need no arena.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Protocol

from .errors import UnknownGroupError
from .limits import POLICIES, check_policy  # noqa: F401  (POLICIES: re-exported)
from .stats import StatsSink, LocalStats


class Cache(Protocol):
    """A byte cache partitioned by group; every method is synchronous and fast."""

    #: True when a Group over this cache keeps its values compressed (``Group.packs``): the
    #: arena, whose memory every process shares.  Entries carry their codec id either way.
    keeps_codec: bool

    def configure_group(self, group: str, max_bytes: int, policy: str = "lru") -> None:
        """Declare *group* with its byte budget and eviction policy (``limits.POLICIES``)."""

    def get(self, group: str, key: str) -> bytes | None:
        """The cached value, or None on a miss or an expired entry."""

    def get_entry(self, group: str, key: str) -> tuple[bytes, int, float] | None:
        """(value, codec id, expire_at or 0), or None: ``get`` with the entry's metadata."""

    def set(self, group: str, key: str, value: bytes, ttl: float = 0, codec: int = 0) -> None:
        """Store *value*; *ttl* seconds (0 = no expiry). Evicts to stay in budget.

        *codec* is the id of the codec *value* is packed with (``geecache.compression``;
        0 = raw); ``get_entry`` hands it back, and nothing here decodes it.
        """

    def delete(self, group: str, key: str) -> bool:
        """Drop *key*; True when it was present."""

    def clear(self, group: str) -> None:
        """Drop every entry of *group*."""

    def usage(self, group: str) -> tuple[int, int]:
        """(bytes, entries) held for *group*."""

    def stats_sink(self, group: str) -> StatsSink:
        """Where this process's counters for *group* are kept."""

    def stats(self, group: str) -> dict[str, int]:
        """*group*'s counters summed over every process that shares this cache."""

    def hottest(self, group: str, want: Callable[[str], bool], max_bytes: int, deadline: float
                ) -> tuple[list[tuple[str, bytes, int, float]], bool]:
        """(entries, truncated): ``(key, value, codec id, expire_at)`` of *group*'s live entries
        *want* accepts, hottest first, at most *max_bytes* of values; *truncated* when the budget
        or *deadline* (``time.monotonic``) cut it short (a warm-up's answer)."""

    def contention(self) -> list[dict[str, int]]:
        """Per process sharing this cache: its pid and lock-contention counters (none for a
        cache of one process)."""


class HostFlight(Protocol):
    """Single flight across the processes of one host (lives in the arena)."""

    def try_begin(self, group: str, key: str) -> bool:
        """True when the caller became the loader and must call ``end``."""

    def end(self, group: str, key: str) -> None:
        """The loader is done (value stored, or failed)."""

    def loading(self, group: str, key: str) -> bool:
        """True while a live process is loading *key*."""


class NoHostFlight:
    """A HostFlight for one process: every caller is the loader."""

    def try_begin(self, group: str, key: str) -> bool:
        return True

    def end(self, group: str, key: str) -> None:
        pass

    def loading(self, group: str, key: str) -> bool:
        return False


class LocalCache:
    """An in-process LRU cache per group; not shared, not thread-safe (one event loop).

    ``lru2``, ``s3fifo``, ``s3lfu``, ``tinylfu`` and ``adaptive`` are
    accepted and behave as ``lru``: LCache's two lists, S3-FIFO's queues,
    W-TinyLFU's window, the frequency sketch and the miniature simulations
    live in the arena, the production cache; this one serves the library
    and tests.
    """

    #: A Group over it keeps values as they are: one process's cache, nobody's memory to share.
    keeps_codec = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # group -> [OrderedDict key -> (value, expires_at, codec id), max_bytes, used_bytes]
        self._groups: dict[str, list] = {}
        self._stats: dict[str, LocalStats] = {}
        self._clock = clock

    def configure_group(self, group: str, max_bytes: int, policy: str = "lru") -> None:
        check_policy(policy)
        self._groups.setdefault(group, [OrderedDict(), max_bytes, 0])[1] = max_bytes

    def _group(self, group: str) -> list:
        try:
            return self._groups[group]
        except KeyError:
            raise UnknownGroupError(f"group {group!r} is not configured") from None

    def get(self, group: str, key: str) -> bytes | None:
        entry = self.get_entry(group, key)
        return None if entry is None else entry[0]

    def get_entry(self, group: str, key: str) -> tuple[bytes, int, float] | None:
        entries = self._group(group)[0]
        item = entries.get(key)
        if item is None:
            return None
        value, expires_at, codec = item
        if expires_at and expires_at <= self._clock():
            self.delete(group, key)
            self.stats_sink(group).add("expirations")
            return None
        entries.move_to_end(key)
        return value, codec, expires_at

    def set(self, group: str, key: str, value: bytes, ttl: float = 0, codec: int = 0) -> None:
        g = self._group(group)
        self.delete(group, key)
        size = _size(key, value)
        if size > g[1]:
            return
        entries = g[0]
        while g[2] + size > g[1] and entries:
            old_key, (old_value, _, _) = entries.popitem(last=False)
            g[2] -= _size(old_key, old_value)
            self.stats_sink(group).add("evictions")
        entries[key] = (value, self._clock() + ttl if ttl else 0, codec)
        g[2] += size

    def delete(self, group: str, key: str) -> bool:
        g = self._group(group)
        item = g[0].pop(key, None)
        if item is None:
            return False
        g[2] -= _size(key, item[0])
        return True

    def clear(self, group: str) -> None:
        g = self._group(group)
        g[0].clear()
        g[2] = 0

    def hottest(self, group: str, want: Callable[[str], bool], max_bytes: int, deadline: float
                ) -> tuple[list[tuple[str, bytes, int, float]], bool]:
        """``Arena.hottest`` over the LRU order: the most recently used first."""
        out: list[tuple[str, bytes, int, float]] = []
        budget, now = max_bytes, self._clock()
        for key, (value, expires_at, codec) in reversed(self._group(group)[0].items()):
            if time.monotonic() >= deadline:
                return out, True
            if (expires_at and expires_at <= now) or len(value) > budget or not want(key):
                continue
            out.append((key, value, codec, expires_at))
            budget -= len(value)
        return out, False

    def usage(self, group: str) -> tuple[int, int]:
        """(bytes, entries) held for *group*."""
        g = self._group(group)
        return g[2], len(g[0])

    def stats_sink(self, group: str) -> LocalStats:
        return self._stats.setdefault(group, LocalStats())

    def stats(self, group: str) -> dict[str, int]:
        """*group*'s counters: this process's, the only one that uses this cache."""
        return self.stats_sink(group).snapshot()

    def contention(self) -> list[dict[str, int]]:
        """None: one process, no lock shared with another."""
        return []


def _size(key: str, value: bytes) -> int:
    """What an entry costs against the budget: the key's UTF-8 bytes and the value's."""
    return len(key.encode("utf-8", "surrogatepass")) + len(value)
