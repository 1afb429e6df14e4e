"""The frequency sketch: how often each key was asked for lately, per arena shard (TinyLFU).

A count-min sketch (Einziger et al., TinyLFU, 2017) of ``SKETCH_DEPTH``
rows of byte counters per shard (``layout`` region ``sketch``): a key's
estimate is the least of its counter in each row.  Counts come from where
a shard's lock is held anyway: the hand folds the reference byte of an
entry it passes (the reads lock-free hits counted since, ``policy.py``)
into its counters.  A hit itself writes nothing here.  Misses are not
counted: measured in tests/perf/bench_policy.py, counting each new key's
write took the loop trace from 0.45 to 0.31 (a key missed often is, in a
loop, the one about to be evicted again).  Every ``age period`` counts (ten per slot
in use in the shard that pass the doorkeeper, TinyLFU's sample of ten
times the cache) every
counter is halved, so the sketch forgets in a few periods: popularity that
moved on stops counting.

Every call runs under the shard's lock, which guards the shard's block:
a count word (counts since the last halving) and the counter rows.  The sketch is a hint: a writer killed half
way leaves some counters one higher or a halving half done, which only
sways an admission (``log.py``), never a value; a shard repair leaves it.
"""

from __future__ import annotations

from .layout import LOCK_SIZE, SHARD_COUNT_AT, SKETCH_DEPTH, SKETCH_HEAD, SKETCH_MAX, U32

_u32_unpack = U32.unpack_from
_u32_pack = U32.pack_into
_M64 = (1 << 64) - 1
#: One odd multiplier per row: the row's index is the top bits of (hash x multiplier).
_MULT = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)[:SKETCH_DEPTH]
#: Halves a counter byte (bytes.translate: the whole shard in one C loop).
_HALVE = bytes(i >> 1 for i in range(256))
#: Counts per slot in use between halvings (TinyLFU's sample: ten times the cache).
AGE_PER_SLOT = 10


class Sketch:
    """The sketches of one arena mapping (*mm*): per shard a block from *off* (``layout.sketch_block``).

    A block is the count word (``SKETCH_HEAD`` bytes), the doorkeeper
    (SKETCH_DEPTH x *width* bytes of bits), then SKETCH_DEPTH rows of
    *width* counters, *width* a power of two; the count of slots in use
    (the age period's base) is read from each shard's lock record at
    *locks_off*.
    """

    def __init__(self, mm, off: int, width: int, locks_off: int) -> None:
        self._mm = mm
        self._off = off
        self._width = width
        self._block = SKETCH_HEAD + width * SKETCH_DEPTH * 2
        self._door_bits = width * SKETCH_DEPTH * 8
        self._shift = 64 - (width.bit_length() - 1)
        self._locks_off = locks_off

    def _cells(self, s: int, h: int) -> list[int]:
        base = self._off + s * self._block + SKETCH_HEAD + self._door_bits // 8
        w, shift = self._width, self._shift
        return [base + r * w + (((h * m) & _M64) >> shift) for r, m in enumerate(_MULT)]

    def _door(self, s: int, h: int) -> tuple[int, int]:
        """(byte offset, bit) of hash *h*'s doorkeeper bit in shard *s*."""
        bit = (h >> 7) % self._door_bits  # bits 0..6 pick a counter row's cell; 7.. the bit
        return self._off + s * self._block + SKETCH_HEAD + (bit >> 3), 1 << (bit & 7)

    def estimate(self, s: int, h: int) -> int:
        """How often hash *h* was counted in shard *s* lately (an over-estimate, never under)."""
        mm = self._mm
        at, bit = self._door(s, h)
        return (1 if mm[at] & bit else 0) + min(mm[c] for c in self._cells(s, h))

    def add(self, s: int, h: int, n: int = 1) -> None:
        """Count *n* requests for hash *h* in shard *s*; halve the shard's counters once a period is up.

        A key's first count of a period only sets its doorkeeper bit
        (TinyLFU's doorkeeper): the many keys seen once never reach the
        counters, which stay their own.  Conservative update: only the
        counters at the estimate rise, so a key shares less of its
        neighbours' counts.
        """
        mm = self._mm
        at, bit = self._door(s, h)
        door = mm[at]
        if not door & bit:
            mm[at] = door | bit
            n -= 1
        if n > 0:
            cells = self._cells(s, h)
            est = min(mm[c] for c in cells)
            new = min(est + n, SKETCH_MAX)
            for c in cells:
                if mm[c] < new:
                    mm[c] = new
        head = self._off + s * self._block
        count = _u32_unpack(mm, head)[0] + n  # counts past the doorkeeper (as measured)
        in_use = _u32_unpack(mm, self._locks_off + s * LOCK_SIZE + SHARD_COUNT_AT)[0]
        if count >= AGE_PER_SLOT * max(64, in_use):
            door = head + SKETCH_HEAD
            rows = door + self._door_bits // 8
            end = head + self._block
            mm[door:rows] = bytes(rows - door)  # a new period: every key unseen again
            mm[rows:end] = mm[rows:end].translate(_HALVE)
            count = 0
        _u32_pack(mm, head, count)
