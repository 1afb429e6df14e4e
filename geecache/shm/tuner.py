"""The hill climber of the ``tinylfu`` policy: how far its admission leans to recency.

Caffeine's adaptive W-TinyLFU tunes its window by climbing the sampled hit
rate; here the arena's logs are fixed regions, so what is tuned is the
admission at the window's tail (``Logs._tail_windowed``), one of three
*levels*:

- 0, **frequency**: a candidate enters the main log only when the sketch
  counts it more often than the main log's next victim (TinyLFU);
- 1, **frequency and ghost**: as 0, and a key the window evicted recently
  (the ghost set) is written into the main log directly (S3-FIFO's ghost);
- 2, **recency**: every candidate enters the main log (the whole slice is
  then one CLOCK: LRU).

The signal is the group's own hit rate: every ``PERIOD`` misses of the
group's first shard (sets of new keys, counted here under that shard's
lock) the climber reads the group's ``local_hits`` counter (the stat rows
every reader adds to: the compiled hit path and ``Group``) and compares
hits per miss with the previous period's.  A move that helped is followed
by another in the same direction; one that hurt is undone and the level
held for twice as many periods as last time (up to ``MAX_HOLD``), so a
settled workload is probed rarely and a changed one is found again.  A
group whose hits nobody counts never moves: it stays at ``START``.

State (``layout`` gstate bank 2 of the group's first shard, guarded by that
shard's lock; the other shards read the level without it, a hint):
``[level + 1 (0: START), direction, misses, hits at the period's start, last hits per
miss (x 2**16), the last hold x 256 + periods still held]``.  A writer killed halfway leaves a mix
of old and new words, each clamped when read: one odd period, never a
wrong value (invariant 1).
"""

from __future__ import annotations

from .layout import GSTATE, GSTATE_SIZE

_unpack = GSTATE.unpack_from
_pack = GSTATE.pack_into

#: Levels, from frequency to recency.
FREQUENCY, GHOST, RECENCY = 0, 1, 2
#: The level a new group starts at (the two-frequency-signal middle).
START = FREQUENCY
#: Misses of the first shard per period.
PERIOD = 512
#: The longest hold after a move that hurt, in periods.
MAX_HOLD = 16


class Tuner:
    """The climbers of one arena mapping (*mm*); *hits(gidx)* reads a group's ``local_hits`` total."""

    def __init__(self, mm, hits, n_shards: int) -> None:
        self._mm = mm
        self._hits = hits
        self._n_shards = n_shards

    def _at(self, g) -> int:
        return g.tuner + g.shards[0] * GSTATE_SIZE

    def level(self, g) -> int:
        """The admission level of group *g* now (any shard; no lock needed: a hint)."""
        lv = _unpack(self._mm, self._at(g))[0] - 1  # stored + 1: a new group's zeros read as START
        return lv if 0 <= lv <= RECENCY else START

    def miss(self, g, s: int) -> None:
        """Count a miss of group *g* in shard *s* (its lock held); climb at a period's end."""
        if s != g.shards[0]:
            return
        at = self._at(g)
        level, direction, misses, hits0, last, hold = _unpack(self._mm, at)
        misses += 1
        if misses < PERIOD:
            _pack(self._mm, at, level, direction, misses, hits0, last, hold)
            return
        hits = self._hits(g.idx)
        rate = ((hits - hits0) << 16) // misses if hits >= hits0 else 0
        level = level - 1 if 1 <= level <= RECENCY + 1 else START
        direction = 1 if direction >= 0 else -1
        backoff, held = divmod(max(0, hold), 256)  # the last hold's length, periods left
        if hits == hits0 and not last:
            pass  # nobody counts this group's hits: stay
        elif held:
            held -= 1
        elif rate >= last:
            nxt = level + direction
            if not 0 <= nxt <= RECENCY:
                direction = -direction
                nxt = level + direction
            level = nxt
        else:
            # The last move hurt: undo it and hold there, longer each time.
            direction = -direction
            level = min(RECENCY, max(0, level + direction))
            backoff = held = min(MAX_HOLD, 2 * backoff + 1)
        _pack(self._mm, at, level + 1, direction, 0, hits, rate, backoff * 256 + held)
