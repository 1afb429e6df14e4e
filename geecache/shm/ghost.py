"""The ghost set: keys recently evicted from a small queue (S3-FIFO), per arena shard.

S3-FIFO (Yang et al., SOSP'23) remembers the keys its small queue evicted
without their values; a key that comes back while remembered is inserted
straight into the main queue.  Here the set is one fixed table per arena
shard (``layout.GHOST``: ``slots_per_shard`` words), 2-way set-associative:
a word holds a key hash's top 40 bits and a 24-bit stamp, the shard's
ghost sequence number (``layout.GHOST_SEQ_AT``, in the shard's lock record)
when the key was recorded.  A word is a member while fewer than *window*
keys were recorded after it, *window* being about the main queue's entry
count (the paper's ghost size), so the table forgets in FIFO order, as the
paper's ghost queue does; a collision forgets the older of a pair early.

Every call runs under the shard's lock.  The table is a hint: a lost or
stale word only places an entry in the other queue, never serves a wrong
value, so a shard repair need not touch it.
"""

from __future__ import annotations

from .layout import GHOST_SEQ_AT, GHOST_SIZE, GHOST_STAMP_BITS, LOCK_SIZE, U32, U64

_STAMP = (1 << GHOST_STAMP_BITS) - 1
_u64_unpack = U64.unpack_from
_u64_pack = U64.pack_into
_u32_unpack = U32.unpack_from
_u32_pack = U32.pack_into


class Ghost:
    """The ghost tables of one arena mapping (*mm*): *n* words per shard from *off*."""

    def __init__(self, mm, off: int, n: int, locks_off: int) -> None:
        self._mm = mm
        self._off = off
        self._pairs = max(1, n // 2)
        self._locks_off = locks_off

    def _bucket(self, s: int, h: int) -> int:
        # The low bits pick the slot-table home; bits 8.. pick the pair.
        return self._off + (s * self._pairs * 2 + (h >> 8) % self._pairs * 2) * GHOST_SIZE

    def _seq_at(self, s: int) -> int:
        return self._locks_off + s * LOCK_SIZE + GHOST_SEQ_AT

    def add(self, s: int, h: int) -> None:
        """Remember hash *h* in shard *s* (the older word of its pair makes way)."""
        mm = self._mm
        at = self._seq_at(s)
        seq = _u32_unpack(mm, at)[0]
        b = self._bucket(s, h)
        w0 = _u64_unpack(mm, b)[0]
        w1 = _u64_unpack(mm, b + GHOST_SIZE)[0]
        # The older word by stamp age (a 0 word is empty, the oldest of all).
        age0 = (seq - w0) & _STAMP if w0 else _STAMP + 1
        age1 = (seq - w1) & _STAMP if w1 else _STAMP + 1
        _u64_pack(mm, b if age0 >= age1 else b + GHOST_SIZE,
                  (h >> GHOST_STAMP_BITS) << GHOST_STAMP_BITS | (seq & _STAMP) or 1)
        _u32_pack(mm, at, (seq + 1) & 0xFFFFFFFF)

    def take(self, s: int, h: int, window: int) -> bool:
        """True (and forget it) if *h* was recorded in shard *s* fewer than *window* keys ago."""
        mm = self._mm
        seq = _u32_unpack(mm, self._seq_at(s))[0]
        fp = h >> GHOST_STAMP_BITS
        b = self._bucket(s, h)
        for at in (b, b + GHOST_SIZE):
            w = _u64_unpack(mm, at)[0]
            if w >> GHOST_STAMP_BITS == fp and w:
                _u64_pack(mm, at, 0)
                return (seq - w - 1) & _STAMP < window
        return False
