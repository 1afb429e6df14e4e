"""The circular log of each (group, shard): where entries' bytes live and how room is made.

Each group's data region is split into one slice per shard; each slice is a
circular log of entries (``layout.ENTRY`` header + key + value, 8-byte
padded).  Allocation is a pointer bump at the head (``fit``); room is made
by the hand at the tail (``reclaim_tail``), which frees dead bytes, drops
expired entries, and asks the group's policy (``policy.py``) whether a live
entry is evicted or copied to the head (a second chance, ``SlotTable.move``).  A deleted
entry is only marked dead (``kill``); its bytes return when the hand passes.

Every method runs under the shard's lock, on the log state ``st`` the
caller read with ``state`` and writes back with ``store``:
``st = [head, tail, used, live bytes, entries, hot bytes]`` (``layout.GSTATE``).

``g`` is a view of one log per shard (``groups.GroupRecord``): a two-log
policy's group has a small and a main view; the hand moves an entry the
policy promotes from the small log to the main log (``_promote``) and
remembers the keys the small log evicts (``ghost.py``).
"""

from __future__ import annotations

from .shadow import ALL
from .layout import (
    ENTRY, ENTRY_FLAGS_AT, ENTRY_SIZE, F_HOT, F_LIVE, F_WRAP, GSTATE, GSTATE_SIZE, MAX_LOAD,
    WRAP_MARK, entry_size,
)

_entry_unpack = ENTRY.unpack_from
_entry_pack = ENTRY.pack
_gstate_unpack = GSTATE.unpack_from
_gstate_pack = GSTATE.pack_into


def _room(L: int, st: list, esize: int) -> bool:
    """Whether *esize* bytes fit at the head of a log of *L* bytes in state *st* without evicting (``fit``'s test)."""
    head, tail, used = st[0], st[1], st[2]
    if not used:
        return esize <= L
    if head > tail:
        return esize <= L - head or esize <= tail
    return head < tail and esize <= tail - head


class Logs:
    """The logs of one arena mapping (*mm*): entries in the data area, their slots in *slots*.

    *stats* counts evictions and expirations; *clock* tells expiry.
    """

    def __init__(self, mm, slots, stats, clock, n_shards: int, sps: int, refs_off: int,
                 ghost, sketch) -> None:
        self._mm = mm
        self._ghost = ghost
        self._sketch = sketch
        self._refs = refs_off
        self._sps = sps
        self._slots = slots
        self._stats = stats
        self._clock = clock
        self._n_shards = n_shards
        #: Slots in use per shard past which a new key first evicts (``make_slot_room``).
        self.slot_limit = int(sps * MAX_LOAD)

    # ---- log state

    def state(self, g, s: int) -> list:
        """A copy of the log state of group *g* in shard *s*, to change and ``store``."""
        return list(_gstate_unpack(self._mm, g.gstate + s * GSTATE_SIZE))

    def store(self, g, s: int, st: list) -> None:
        """Write back the log state *st* of group *g* in shard *s*."""
        _gstate_pack(self._mm, g.gstate + s * GSTATE_SIZE, *st)

    def reset(self, g, s: int) -> None:
        """Empty the log of group *g* in shard *s* (its slots must be gone already)."""
        _gstate_pack(self._mm, g.gstate + s * GSTATE_SIZE, 0, 0, 0, 0, 0, 0)

    def _slice_at(self, g, s: int) -> int:
        return g.data + (s - g.idx) % self._n_shards * g.slice

    # ---- writing entries

    def make_slot_room(self, g, s: int, st: list) -> bool:
        """Keep the shard's slot load under MAX_LOAD by evicting from *g*'s log.

        With two logs, once *g*'s is empty the other's tail is dropped
        ("force": no promotion into the log whose state the caller holds).
        """
        count_add = self._slots.count_add
        while count_add(s, 0) >= self.slot_limit:
            if st[2]:
                self.reclaim_tail(g, s, st, "evict")
                continue
            o = g.other
            if o is None:
                return False
            ost = self.state(o, s)
            if not ost[2]:
                return False
            self.reclaim_tail(o, s, ost, "force")
            self.store(o, s, ost)
        return True

    def view_of(self, g, s: int, i: int):
        """The view of the log slot *i*'s entry is in: *g*'s main one for an ``F_HOT`` entry of a two-log group."""
        if g.main is not None and self._mm[self._slots.entry(s, i) + ENTRY_FLAGS_AT] & F_HOT:
            return g.main
        return g

    def target(self, g, s: int, i: int, h: int, esize: int):
        """The view a write of hash *h* goes to in a two-log group *g* (slot *i*, -1 if new).

        The log its key is in already; else the main log for a key in the
        ghost set (which forgets it), for one larger than a small log, and
        while the small log is full but the main one has free room (as
        libCacheSim's S3FIFO.c: a fixed split would otherwise leave the
        main log empty while it warms up; measured in bench_policy.py);
        else the small log.  ``tinylfu`` counts the miss in the sketch
        and heeds only the ghost's newest ``ghost_share`` of that window.
        """
        main = g.main
        if i >= 0:
            return self.view_of(g, s, i)
        if esize > g.slice:
            return main
        sst = self.state(g, s)
        mst = self.state(main, s)
        # The ghost remembers about as many keys as the main log holds
        # (S3-FIFO's ghost size): its entries now, or what it holds at the
        # small log's entry size while it fills.
        window = max(mst[4], sst[4] * main.slice // g.slice)
        if g.policy.windowed:
            # tinylfu: the sketch counts misses as they are written (W-TinyLFU's
            # sketch sees every request; hits reach it from the reference bytes),
            # and the ghost remembers only the last few evicted keys (a twentieth of
            # S3-FIFO's): a key back that soon skips the admission, while a loop's
            # keys come back too late to (measured in bench_policy.py).
            self._sketch.add(s, h, 1)
            policy = g.policy
            share = (policy.ghost_window_share(self._mm[g.level_at]) if policy.adaptive
                     else policy.ghost_share)
            if self._ghost.take(s, h, int(window * share)):
                return main
        elif self._ghost.take(s, h, window):
            return main
        if not _room(g.slice, sst, esize) and _room(main.slice, mst, esize):
            return main
        return g

    def insert(self, g, s, st, h, home, i, pos, esize, kb, value, codec, exp) -> None:
        """Write the entry at *pos* and point a slot at it: slot *i* if >= 0, else a free one.

        A replaced entry is marked dead after its slot moved to the new one
        (readers never look at the flags; both happen under the shard lock).
        """
        slots = self._slots
        if i < 0:
            i = slots.free(s, home)
        q = g.data + (s - g.idx) % self._n_shards * g.slice + pos
        flags = g.entry_flags  # F_HOT in a main log
        # One copy of header, key and value (measured: cheaper than three).
        self._mm[q:q + ENTRY_SIZE + len(kb) + len(value)] = \
            _entry_pack(len(kb), codec, flags, len(value), i, g.idx, exp) + kb + value
        old = slots.point(s, i, h, q)
        if old:
            self._kill_at(old, st)
        st[3] += esize
        st[4] += 1
        if flags & F_HOT:
            st[5] += esize

    def kill(self, s: int, i: int, st: list) -> None:
        """Mark the entry slot *i* points at dead (its bytes return when the hand passes)."""
        self._kill_at(self._slots.entry(s, i), st)

    def _kill_at(self, q: int, st: list) -> None:
        mm = self._mm
        klen, _c, flags, vlen, _sl, _g, _e = _entry_unpack(mm, q)
        mm[q + ENTRY_FLAGS_AT] = flags & ~(F_LIVE | F_HOT)
        st[3] -= entry_size(klen, vlen)
        st[4] -= 1
        if flags & F_HOT:
            st[5] -= entry_size(klen, vlen)

    def remove(self, g, s: int, i: int, st: list) -> None:
        """Drop the entry in slot *i*: mark its log bytes dead, then delete the slot."""
        self.kill(s, i, st)
        self._slots.delete(s, i)

    # ---- allocation and the hand

    def alloc(self, g, s: int, st: list, esize: int) -> int:
        """Offset in the slice for *esize* bytes, evicting at the tail as needed; -1 if impossible."""
        budget = 3 * st[4] + 8  # a full CLOCK cycle or three, then force
        while True:
            pos = self.fit(g, s, st, esize)
            if pos >= 0:
                return pos
            if not st[2]:
                return -1
            budget -= 1
            self.reclaim_tail(g, s, st, "evict" if budget > 0 else "force")

    def fit(self, g, s: int, st: list, esize: int) -> int:
        """Reserve *esize* bytes at the head without evicting; -1 when they do not fit."""
        head, tail, used = st[0], st[1], st[2]
        L = g.slice
        if not used:
            head = tail = st[0] = st[1] = 0
        if head > tail or not used:
            if esize <= L - head:
                pos = head
            elif esize <= tail:
                # Skip the slice's end: the hand treats the marker as used bytes.
                WRAP_MARK.pack_into(self._mm, self._slice_at(g, s) + head, 0, 0, F_WRAP)  # may be only 8 bytes left
                st[2] += L - head
                pos = 0
            else:
                return -1
        elif head < tail and esize <= tail - head:
            pos = head
        else:
            return -1
        st[0] = (pos + esize) % L
        st[2] += esize
        return pos

    def reclaim_tail(self, g, s: int, st: list, mode: str) -> None:
        """Advance the hand over the record at the tail.

        *mode*: ``evict`` applies the policy (second chances), ``force``
        drops a live entry whatever its bits, ``clear`` drops without
        counting an eviction.
        """
        mm = self._mm
        L = g.slice
        slice_at = g.data + (s - g.idx) % self._n_shards * L  # as _slice_at, inlined
        t = st[1]
        q = slice_at + t
        klen, codec, flags, vlen, i, _g, exp = _entry_unpack(mm, q)
        if flags & F_WRAP:
            st[2] -= L - t
            st[1] = 0
            return
        esize = entry_size(klen, vlen)
        st[1] = (t + esize) % L
        st[2] -= esize
        if not flags & F_LIVE:
            return
        if mode == "evict":
            if exp and exp <= self._clock():
                self._drop(g, s, i, st, esize, flags, "expirations")
                return
            # The slot's reference byte (the refs array parallel to the slot table), read
            # inline: this runs once per hand step.
            ref = mm[self._refs + s * self._sps + i]
            policy = g.policy
            if policy.windowed:
                self._tail_windowed(g, s, st, i, q, slice_at, esize, flags, ref)
                return
            kept = policy.at_tail(flags, ref, st[5], L)
            if policy.counts:
                if flags & F_HOT:
                    if ref:
                        self._sketch.add(s, self._slots.hash(s, i), ref)  # the reads the hand clears
                elif kept is None and self._admit(g, s, i, esize):
                    kept = (flags | F_HOT, 0)
            if kept is not None:
                main = g.main
                if main is not None and kept[0] & F_HOT:
                    self._promote(g, main, s, st, i, q, esize, kept[0], kept[1])
                    return
                pos = self.fit(g, s, st, esize)
                if pos >= 0:
                    new_flags = kept[0]
                    self._slots.move(s, i, q, slice_at + pos, esize, new_flags, kept[1])
                    if (new_flags ^ flags) & F_HOT:
                        st[5] += esize if new_flags & F_HOT else -esize
                    return
            elif g.main is not None:
                self._ghost.add(s, self._slots.hash(s, i))
        self._drop(g, s, i, st, esize, flags, None if mode == "clear" else "evictions")

    def _tail_windowed(self, g, s, st, i, q, slice_at, esize, flags, ref) -> None:
        """``tinylfu``'s step for slot *i*'s live entry at *q*, just passed by *g*'s hand.

        The reads its reference byte holds go into the sketch first.  Main
        log: CLOCK (a read entry is kept, reference cleared; an unread one
        evicted).  Window (the small log): a read entry is promoted; an
        unread one is a candidate for the main log (``_admits``; every
        candidate at ``adaptive``'s level ``ALL``), else evicted and its key
        remembered in the ghost set.
        """
        if ref:
            self._sketch.add(s, self._slots.hash(s, i), ref)
        if flags & F_HOT:
            if ref:
                pos = self.fit(g, s, st, esize)
                if pos >= 0:
                    self._slots.move(s, i, q, slice_at + pos, esize, flags, 0)
                    return
            self._drop(g, s, i, st, esize, flags, "evictions")
            return
        main = g.main
        if (ref or (g.policy.adaptive and self._mm[g.level_at] == ALL)
                or self._admits(g, main, s, i, esize)):
            self._promote(g, main, s, st, i, q, esize, flags | F_HOT, 0)
            return
        self._ghost.add(s, self._slots.hash(s, i))
        self._drop(g, s, i, st, esize, flags, "evictions")

    def _admits(self, g, main, s: int, i: int, esize: int) -> bool:
        """Whether the window's unread candidate in slot *i* takes a place in the main log.

        Always while the main log has room; else TinyLFU's test against the main log's next victim: its hand
        first passes the entries it would keep (dead bytes, expired
        entries, read entries: second chances it gives anyway), so that its
        tail is the entry the candidate would replace; the candidate wins
        when the sketch counts it more often (a tie keeps the victim).
        """
        mst = self.state(main, s)
        if _room(main.slice, mst, esize):
            return True
        mm = self._mm
        refs = self._refs + s * self._sps
        main_at = self._slice_at(main, s)
        budget = 2 * mst[4] + 8  # then compare with whatever is at the tail
        try:
            while mst[2]:
                _k, _c, vflags, _v, vi, _g, vexp = _entry_unpack(mm, main_at + mst[1])
                budget -= 1
                if (not vflags & F_LIVE or (budget > 0 and mm[refs + vi])
                        or (vexp and vexp <= self._clock())):
                    self.reclaim_tail(main, s, mst, "evict")
                    if _room(main.slice, mst, esize):
                        return True
                    continue
                sketch, slots = self._sketch, self._slots
                return sketch.estimate(s, slots.hash(s, i)) > sketch.estimate(s, slots.hash(s, vi))
            return True
        finally:
            self.store(main, s, mst)

    def _admit(self, g, s: int, i: int, esize: int) -> bool:
        """TinyLFU's test for slot *i*'s unread entry at the small log's tail: enter the main log?

        Yes while the main log has room or its tail is no live entry (the
        hand frees those bytes without evicting); else when the policy
        admits the key's count against that of the main log's tail entry
        with the reads its reference byte holds (the hand folds them in as
        it passes).  Reads only: the main log is not touched here.
        """
        main = g.main
        mst = self.state(main, s)
        if _room(main.slice, mst, esize):
            return True
        mm = self._mm
        _k, _c, vflags, _v, vi, _g, _e = _entry_unpack(mm, self._slice_at(main, s) + mst[1])
        if not vflags & F_LIVE:
            return True
        sketch, slots = self._sketch, self._slots
        victim = sketch.estimate(s, slots.hash(s, vi)) + mm[self._refs + s * self._sps + vi]
        return g.policy.admits(sketch.estimate(s, slots.hash(s, i)), victim)

    def _promote(self, g, main, s, st, i, q, esize, flags, ref) -> None:
        """Move slot *i*'s entry (at *q*, just passed by the small log's hand) to the main log's head.

        The main log makes room with its own hand; nothing writes the small
        log meanwhile, so the entry's bytes at *q* stay intact until copied.
        """
        mst = self.state(main, s)
        pos = self.alloc(main, s, mst, esize)
        st[3] -= esize
        st[4] -= 1
        if pos < 0:  # only if the main log cannot hold it at all
            self._slots.delete(s, i)
            self._stats.add(g.idx, "evictions")
        else:
            self._slots.move(s, i, q, self._slice_at(main, s) + pos, esize, flags, ref)
            mst[3] += esize
            mst[4] += 1
            mst[5] += esize
        self.store(main, s, mst)

    def _drop(self, g, s, i, st, esize, flags, counter) -> None:
        st[3] -= esize
        st[4] -= 1
        if flags & F_HOT:
            st[5] -= esize
        self._slots.delete(s, i)
        if counter:
            self._stats.add(g.idx, counter)
