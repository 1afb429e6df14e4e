"""The hottest entries of a group, as its eviction policy sees them: what a warm-up sends.

A joining host asks each previous owner for its hottest entries among the
keys that now move to it (``geecache.cluster.warmup``).  The arena keeps no list of
entries by heat, but the policy's own state ranks them:

- the slot's **reference byte**, which lock-free reads raise (a bit for
  ``lru``/``lru2``, a 2-bit count for ``s3fifo``): read since the hand last
  passed, and how often;
- the entry's ``F_HOT`` flag: ``lru2``'s second list, ``s3fifo``'s main queue;
- its **place in the log**: the head is the newest (written or given a
  second chance most recently), the tail the next the hand looks at.

So the scan walks each (group, shard) log from tail to head reading entry
headers only, and ranks the live entries by (reference byte, ``F_HOT``,
place from the tail as a share of the log).  It takes no lock: a log being
written meanwhile may show it a torn header, which ends that log's walk
(bounds checked), and every entry it sends is read again by its slot as
``Arena.get_entry`` reads, a seqlock: the slot must still point at it with an
even version unchanged across the copy, else the entry is skipped.  The walk
never raises a reference byte, so sending an entry does not keep it longer.
"""

from __future__ import annotations

import time
from typing import Callable

from .layout import (
    ENTRY, ENTRY_SIZE, F_HOT, F_LIVE, F_WRAP, GSTATE, GSTATE_SIZE, SLOT, SLOT_SIZE,
    entry_size,
)

_entry_unpack = ENTRY.unpack_from
_slot_unpack = SLOT.unpack_from

#: How many entries are ranked or read between two looks at the deadline.
_CHECK_EVERY = 256


class HotScan:
    """Reads one arena mapping's logs for ``Arena.hottest`` (the offsets are the arena's)."""

    def __init__(self, mm, slots_off: int, refs_off: int, data_off: int, sps: int, n_shards: int,
                 clock: Callable[[], float]) -> None:
        self._mm = mm
        self._slots_off = slots_off
        self._refs_off = refs_off
        self._data_off = data_off
        self._sps = sps
        self._n_shards = n_shards
        self._clock = clock

    def candidates(self, g) -> list[tuple[int, int, float, int, int, int, int, int]]:
        """``(ref, hot, place, shard, slot, offset, klen, vlen)`` of every live entry of group *g*."""
        out: list[tuple[int, int, float, int, int, int, int, int]] = []
        for s in g.shards:
            for view in g.logs:
                self._walk(view, s, out)
        return out

    def _walk(self, view, s: int, out: list) -> None:
        mm = self._mm
        L = view.slice
        slice_at = view.data + (s - view.idx) % self._n_shards * L
        _head, tail, used, _live, _entries, _hot = GSTATE.unpack_from(mm, view.gstate + s * GSTATE_SIZE)
        if not 0 < used <= L or not 0 <= tail < L:
            return
        refs = self._refs_off + s * self._sps
        t, walked = tail, 0
        try:
            while walked < used:
                q = slice_at + t
                klen, _codec, flags, vlen, i, gidx, _exp = _entry_unpack(mm, q)
                if flags & F_WRAP:
                    walked += L - t
                    t = 0
                    continue
                esize = entry_size(klen, vlen)
                if not klen or esize > L - t or i >= self._sps:
                    return  # a torn header: the log is being rewritten here
                if flags & F_LIVE and gidx == view.idx:
                    out.append((mm[refs + i], flags & F_HOT, walked / used, s, i, q, klen, vlen))
                walked += esize
                t += esize
                if t == L:
                    t = 0
        except (ValueError, IndexError, OverflowError):  # a torn offset outside the segment
            return

    def read(self, s: int, i: int, q: int, klen: int, vlen: int) -> tuple[bytes, bytes, int, float] | None:
        """(key bytes, value, codec id, expire_at) of the entry at *q*, when slot *i* still points
        at it and did not change across the copy; else None."""
        mm = self._mm
        p = self._slots_off + (s * self._sps + i) * SLOT_SIZE
        try:
            h, ver, off = _slot_unpack(mm, p)
            if not h or ver & 1 or self._data_off + off * 8 != q:
                return None
            klen2, codec, flags, vlen2, _i, _g, exp = _entry_unpack(mm, q)
            if klen2 != klen or vlen2 != vlen or not flags & F_LIVE:
                return None
            kv = mm[q + ENTRY_SIZE:q + ENTRY_SIZE + klen + vlen]
            # The hash again with the version (as Arena.get_entry): the first read took the
            # hash before the version, so it may predate a delete that emptied the slot.
            h2, ver2, _off = _slot_unpack(mm, p)
            if ver2 != ver or h2 != h:
                return None
        except (ValueError, IndexError, OverflowError):
            return None
        return kv[:klen], kv[klen:], codec, exp

    def hottest(self, g, want: Callable[[str], bool], max_bytes: int, deadline: float,
                monotonic: Callable[[], float] = time.monotonic
                ) -> tuple[list[tuple[str, bytes, int, float]], bool]:
        """(entries, truncated): ``(key, value, codec id, expire_at)`` of group *g*'s live entries
        whose key *want* accepts, hottest first, their values at most *max_bytes* in all.

        *truncated* when the budget or *deadline* (by *monotonic*) ended the
        scan with entries left unlooked at.
        """
        ranked = self.candidates(g)
        ranked.sort(reverse=True)
        out: list[tuple[str, bytes, int, float]] = []
        budget = max_bytes
        now = self._clock()
        for n, (_ref, _hot, _place, s, i, q, klen, vlen) in enumerate(ranked):
            if n % _CHECK_EVERY == 0 and monotonic() >= deadline:
                return out, True
            if vlen > budget:
                if budget < max_bytes // 64 + 1:  # nearly full: the rest will not fit either
                    return out, True
                continue
            entry = self.read(s, i, q, klen, vlen)
            if entry is None:
                continue
            kb, value, codec, exp = entry
            if exp and exp <= now:
                continue
            try:
                key = kb.decode()
            except UnicodeDecodeError:
                continue
            if not want(key):
                continue
            out.append((key, value, codec, exp))
            budget -= vlen
        return out, False
