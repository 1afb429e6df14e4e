"""Miniature simulations: small shadow caches that choose ``adaptive``'s admission level.

Waldspurger et al., "Cache Modeling and Optimization using Miniature
Simulations" (USENIX ATC 2017): a cache fed a hash-sampled subset of the
keys (rate R) with R times the budget behaves, in hit ratio, like the whole
cache fed every key.  ``Shadows`` runs one such miniature per admission
level of ``policy.Adaptive`` on the same sampled requests and names the
level whose miniature hit most lately; the real cache then admits at that
level.  Unlike a hill climber on the real cache's hit rate, the choice
never depends on how the real cache responded, so the real cache's memory
(content a level built up stays for many periods) cannot mislead it.

The levels (``policy.LEVELS``):

- ``FREQ``: W-TinyLFU as ``tinylfu`` (a window candidate enters the main
  log only if counted more often than the main log's next victim; the
  ghost heeds only the last ``ghost_share`` of its window);
- ``GHOST``: the same with S3-FIFO's full ghost window;
- ``ALL``: every candidate enters the main log (the slice one CLOCK).

A miniature is the same structure in miniature, counted in bytes: a window
FIFO of ``small_share`` of the budget whose read entries move on, a main
CLOCK, a ghost of refused candidates, and one frequency count per sampled
key shared by the three (exact, capped at 15, halved every ``AGE_PER_SLOT``
sampled requests per miniature entry, as the sketch is).  They only have
to rank the levels as the real cache would, not reproduce its hit ratio.

What feeds them: a sampled key is one whose hash has the top
``sample_shift`` bits clear (``GroupRecord.sample_mask``, a power-of-two
rate chosen so that a miniature holds about ``TARGET_ENTRIES`` entries at
the arena's usual entry size, and every key when the budget is smaller).
A sampled hit (``Arena.get_entry``, and the compiled hit path's
``hit_sample``) and a sampled write (``Arena.set``, the fill after a
miss) are each one request, recorded as ``(hash, entry bytes)`` in this
process's *sample ring*: one per stat row, in the group's data region
after its slices (``rings_at``), one writer each, the record stored
before the count, so no lock.  For a miniature a request is a hit if the
key is in it, else a miss that inserts it.

Every process's miniatures read every ring (``collect``: each ring's new
records, merged by position), so each sees the host's whole sampled
stream, not its own share: per-process miniatures fed only their own
requests chose wrongly at four workers (a random quarter of a loop looks
like a workload LRU serves well).  ``Arena.set`` runs them after
``BATCH`` sampled writes of its own, after it released the shard lock,
and stores the chosen level in the group record (``Arena._adapt``): the
level only matters to a write's admission, so writes are where it is
decided.  A reader more than ``SAMPLE_RING`` records behind a ring skips
the oldest; a record overwritten while it is copied is dropped.

Crash safety: the miniatures are per-process Python objects; a process
killed at any instruction loses them, leaves at most one uncounted
record in its ring and the level byte at one of the levels (a single
byte store, last writer wins).  Every piece is a hint: none can make a
value wrong, only an admission different.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

#: The admission levels, as ``policy.Adaptive`` and the group record's level byte name them.
FREQ, GHOST, ALL = 0, 1, 2
LEVELS = (FREQ, GHOST, ALL)

#: A miniature's size in entries at the arena's usual entry size (``Arena.create``'s
#: avg_entry_bytes); the sampling rate is the power of two that gets closest from above.
TARGET_ENTRIES = 256
#: The entry size the sampling rate assumes (the arena's default ``avg_entry_bytes``).
ASSUMED_ENTRY = 144
#: This process's sampled writes that make ``Arena.set`` run the miniatures.
BATCH = 64
#: Requests a process's sample ring holds (a reader further behind skips the oldest).
SAMPLE_RING = 1024
#: A ring: the count of requests ever recorded (u64, alone in its cache line), then
#: SAMPLE_RING records of (hash, entry bytes), u64 each.  Mirrored in ``hitpath.c``.
RING_HEAD = 64
RING_RECORD = 16
RING_BLOCK = RING_HEAD + SAMPLE_RING * RING_RECORD
_u64 = struct.Struct("Q")
_record = struct.Struct("QQ")
#: Sampled requests per miniature entry between halvings of the hit scores.
DECAY_PER_ENTRY = 4
#: A level replaces the current one when its decayed hits are this share higher.
MARGIN = 0.02
#: Per level, a share its decayed hits are raised by before they are compared: on a near tie
#: the more lenient level wins.
BIAS = (0.0, 0.03, 0.06)
#: Decay periods the miniatures run before their choice is taken.
WARM_PERIODS = 2
#: Counts per miniature entry between halvings of the frequency counts (the sketch's).
AGE_PER_SLOT = 10
_COUNT_MAX = 15


def sample_shift(max_bytes: int) -> int:
    """log2 of 1/R for a group of *max_bytes*: miniatures of about TARGET_ENTRIES entries."""
    entries = max_bytes // ASSUMED_ENTRY
    k = 0
    while entries >> (k + 1) >= TARGET_ENTRIES:
        k += 1
    return k


def rings_at(after_slices: int) -> int:
    """Absolute offset of an adaptive group's rings, its slices ending at *after_slices*."""
    return (after_slices + 63) & ~63


def rings_bytes(max_procs: int) -> int:
    """Data bytes an adaptive group's rings take after its slices (alignment included)."""
    return 64 + max_procs * RING_BLOCK


def record(mm, ring: int, h: int, esize: int) -> None:
    """Append one sampled request to the ring at *ring* (this process's: one writer).

    The record first, the count after it: a reader never counts a record not yet written, and
    a process killed between the two leaves it uncounted.
    """
    n = _u64.unpack_from(mm, ring)[0]
    _record.pack_into(mm, ring + RING_HEAD + n % SAMPLE_RING * RING_RECORD, h, esize)
    _u64.pack_into(mm, ring, n + 1)


def sample_mask(max_bytes: int) -> int:
    """The mask whose bits a sampled key's hash has clear (its top ``sample_shift`` bits)."""
    k = sample_shift(max_bytes)
    return ((1 << k) - 1) << (64 - k) if k else 0


class _Mini:
    """One miniature: window FIFO, main CLOCK, ghost, at one admission *level*."""

    __slots__ = ("level", "wcap", "mcap", "win", "main", "wbytes", "mbytes", "ghost", "gseq",
                 "gshare", "hits")

    def __init__(self, level: int, budget: int, small_share: float, ghost_share: float) -> None:
        self.level = level
        self.wcap = max(8, int(budget * small_share))
        self.mcap = budget - self.wcap
        self.win: OrderedDict = OrderedDict()   # hash -> [bytes, read]
        self.main: OrderedDict = OrderedDict()  # hash -> [bytes, read]
        self.wbytes = self.mbytes = 0
        self.ghost: OrderedDict = OrderedDict()  # hash -> sequence number when refused
        self.gseq = 0
        self.gshare = 1.0 if level == GHOST else ghost_share
        self.hits = 0.0

    def access(self, h: int, size: int, counts: dict) -> bool:
        """One sampled request: True on a hit; a miss inserts the key."""
        e = self.win.get(h)
        if e is None:
            e = self.main.get(h)
        if e is not None:
            e[1] = 1
            if e[0] != size:  # the key was written again with another size
                if h in self.win:
                    self.wbytes += size - e[0]
                else:
                    self.mbytes += size - e[0]
                e[0] = size
            self.hits += 1
            return True
        ghost = self.ghost
        at = ghost.pop(h, None)
        if at is not None and self.gseq - at < len(self.main) * self.gshare:
            self._to_main(h, [size, 0])
            return False
        if self.wbytes + size > self.wcap and self.mbytes + size <= self.mcap:
            self._to_main(h, [size, 0])  # as Logs.target: a full window, a main log with room
            return False
        self.win[h] = [size, 0]
        self.wbytes += size
        while self.wbytes > self.wcap and len(self.win) > 1:
            ch, ce = self.win.popitem(last=False)
            self.wbytes -= ce[0]
            if ce[1] or self.level == ALL or self._admits(ch, ce[0], counts):
                ce[1] = 0
                self._to_main(ch, ce)
            else:
                self.gseq += 1
                ghost[ch] = self.gseq
                while len(ghost) > max(16, len(self.main)):
                    ghost.popitem(last=False)
        return False

    def _admits(self, h: int, size: int, counts: dict) -> bool:
        """TinyLFU's test against the main CLOCK's next victim (read entries passed first)."""
        if self.mbytes + size <= self.mcap:
            return True
        main = self.main
        for _ in range(len(main)):
            vh, ve = next(iter(main.items()))
            if not ve[1]:
                break
            ve[1] = 0
            main.move_to_end(vh)
        else:
            return True
        return counts.get(h, 0) > counts.get(vh, 0)

    def _to_main(self, h: int, e: list) -> None:
        main = self.main
        main[h] = e
        self.mbytes += e[0]
        while self.mbytes > self.mcap and len(main) > 1:
            vh, ve = main.popitem(last=False)
            if ve[1]:
                ve[1] = 0
                main[vh] = ve
            else:
                self.mbytes -= ve[0]


class Shadows:
    """The miniatures of one group in this process, and the level they choose.

    *max_bytes* is the group's budget; *small_share* and *ghost_share* the
    policy's window and short-ghost shares.
    """

    def __init__(self, max_bytes: int, small_share: float, ghost_share: float, mm, rings: int,
                 max_procs: int) -> None:
        k = sample_shift(max_bytes)
        budget = max(64 * ASSUMED_ENTRY // 8, max_bytes >> k)
        self._mm = mm
        self._rings = rings
        self._max_procs = max_procs
        #: Per ring, how many of its records this process has read (None: not looked at yet).
        self._read: list = [None] * max_procs
        #: This process's sampled writes since the last ``drain`` (``Arena.set`` counts them).
        self.writes = 0
        self.minis = [_Mini(level, budget, small_share, ghost_share) for level in LEVELS]
        entries = max(64, budget // ASSUMED_ENTRY)
        self.decay_every = DECAY_PER_ENTRY * entries
        self.age_every = AGE_PER_SLOT * entries
        self.counts: dict = {}
        self._seen = 0
        self._aged = 0
        self._warm = 0
        self.level = FREQ

    def collect(self) -> list:
        """The requests every process recorded since this process last looked, interleaved.

        Each ring's new records in order, the rings merged by position (requests reach the
        processes at random, so a proportional interleave is the likely order).  Read without
        a lock: a record overwritten while it was copied (its ring lapped the reader) is
        dropped, and a ring whose count went back (a new arena's zeroes) starts over.
        """
        mm, u64 = self._mm, _u64.unpack_from
        merged: list = []
        for p in range(self._max_procs):
            at = self._rings + p * RING_BLOCK
            n = u64(mm, at)[0]
            seen = self._read[p]
            if seen is None or seen > n:  # a first look starts at the oldest record still there
                seen = 0
            start = max(seen, n - SAMPLE_RING)
            if start < n:
                recs = [_record.unpack_from(mm, at + RING_HEAD + i % SAMPLE_RING * RING_RECORD)
                        for i in range(start, n)]
                # Records up to this one may be overwritten by now (or being written).
                lapped = u64(mm, at)[0] - SAMPLE_RING + 1
                first = max(0, lapped - start)
                span = n - start
                merged.extend((j / span, r) for j, r in enumerate(recs) if j >= first)
            self._read[p] = n
        merged.sort(key=lambda fr: fr[0])
        return [r for _f, r in merged]

    def drain(self) -> int:
        """Run the requests sampled since (``collect``) through every miniature; the level chosen now."""
        self.writes = 0
        pending = self.collect()
        counts = self.counts
        minis = self.minis
        news = False  # whether any miniature hit: without a hit they have nothing new to say
        for h, size in pending:
            c = counts.get(h, 0)
            if c < _COUNT_MAX:
                counts[h] = c + 1
            for m in minis:
                if m.access(h, size, counts):
                    news = True
            self._seen += 1
            self._aged += 1
            if self._aged >= self.age_every:
                self._aged = 0
                self.counts = counts = {k: v >> 1 for k, v in counts.items() if v > 1}
            if self._seen >= self.decay_every:
                self._seen = 0
                self._warm += 1
                for m in minis:
                    m.hits /= 2
        if self._warm < WARM_PERIODS or not news:  # young miniatures hit alike: FREQ a while
            return self.level
        score = [m.hits * (1 + BIAS[m.level]) for m in minis]
        best = max(LEVELS, key=score.__getitem__)
        if score[best] > score[self.level] * (1 + MARGIN):
            self.level = best
        return self.level
