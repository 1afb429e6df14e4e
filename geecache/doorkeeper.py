"""Doorkeeper: which keys this worker fetched from their owners lately, to keep hot copies of
only those fetched again.

groupcache keeps a hot copy of a peer's value one time in ten, at random ("use res.MinuteQps
or something smart", its TODO says).  A copy kept at every fetch costs an arena write per
remote hit (the largest single step of a remote hit on the asking host, 5-8 µs in Python with
eviction), and a burst of keys read once, a scan, flushes the hot partition (1/8 of the
group's budget) of the copies that were earning hits.  So, as TinyLFU's doorkeeper admits
only what it has seen before, a key's value is kept as a hot copy from its *n*-th fetch
within the window (``Group(hot_after=)``, the ``hot_after`` setting; 1: at every fetch).

The window is two generations of at most ``size`` key hashes each: when the current one is
full it becomes the previous one and a fresh one starts, so a key counts as seen for between
``size`` and ``2 * size`` distinct fetched keys after its fetch, and memory is bounded.
Guarded by the event loop's single thread (one Doorkeeper per Group, per process): each
worker counts its own fetches, so with W workers a key's copy is kept by its (W+1)-th fetch
at the latest, and then serves every worker (it is in the arena).
"""

from __future__ import annotations

#: Key hashes per generation: about 1 MiB of Python sets per generation when full.
DEFAULT_SIZE = 16384


class Doorkeeper:
    """Counts the fetches of keys in a bounded window; ``admits(key)`` says when to keep a copy.

    *after*: the fetch, counted in the window, from which a key's copy is kept (1: every one).
    If blank, *size* defaults to ``DEFAULT_SIZE``.
    """

    __slots__ = ("after", "_size", "_now", "_before")

    def __init__(self, after: int = 2, size: int = DEFAULT_SIZE) -> None:
        if after < 1 or size < 1:
            raise ValueError("a doorkeeper needs after >= 1 and size >= 1")
        self.after = after
        self._size = size
        # key hash -> fetches counted in this generation (and in the one before it).
        self._now: dict[int, int] = {}
        self._before: dict[int, int] = {}

    def admits(self, key: str) -> bool:
        """Count a fetch of *key*; True when a hot copy of it is to be kept now."""
        after = self.after
        if after == 1:
            return True
        h = hash(key)  # (a str caches its hash; a collision only keeps a copy early)
        now = self._now
        seen = now.get(h, 0) + self._before.get(h, 0) + 1
        if seen >= after:
            return True
        if h not in now and len(now) >= self._size:
            self._before = now
            now = self._now = {}
        now[h] = now.get(h, 0) + 1
        return False

    def __len__(self) -> int:
        """Key hashes remembered (both generations; a key in both counts twice)."""
        return len(self._now) + len(self._before)
