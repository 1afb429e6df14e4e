"""The slot table: per shard, an open-addressing hash table of (hash, version, offset).

Linear probing from ``hash % slots_per_shard``; a hash of 0 marks an empty
slot.  Each slot is a seqlock: a writer makes its version odd, changes the
fields, and makes it even again, so a lock-free reader that copied an entry
rechecks the version and the hash (a hash read before the version may be one a
delete since cleared) and treats any change as a miss.  Every method but the
reads in ``Arena.get_entry`` runs under the shard's lock.  The count of
slots in use per shard lives in the shard's lock record (``SHARD_COUNT_AT``).
Deletion is backward-shift (no tombstones), in an order a reader survives.
"""

from __future__ import annotations

from ..errors import ArenaError
from .layout import (
    ENTRY, ENTRY_FLAGS_AT, ENTRY_SIZE, F_LIVE, LOCK_SIZE, SHARD_COUNT_AT, SLOT, SLOT_OFF_AT, SLOT_SIZE,
    SLOT_VERSION_AT, U32, U64, entry_size,
)

_M32 = 0xFFFFFFFF
_slot_unpack = SLOT.unpack_from
_entry_unpack = ENTRY.unpack_from
_u32_unpack = U32.unpack_from
_u32_pack = U32.pack_into
_u64_pack = U64.pack_into
_u64_unpack = U64.unpack_from


class SlotTable:
    """The slot table and reference bytes of one arena mapping (*mm*).

    Offsets stored in slots are in 8-byte units from the data area's start
    *data_off*; ``entry(s, i)`` turns one into the entry's absolute offset.
    """

    def __init__(self, mm, slots_off: int, refs_off: int, data_off: int, sps: int,
                 locks_off: int) -> None:
        self._mm = mm
        self._off = slots_off
        self._refs = refs_off
        self._data_off = data_off
        self._sps = sps
        self._locks_off = locks_off

    def find(self, s: int, h: int, kb: bytes, gidx: int, i: int) -> int:
        """The slot index of key bytes *kb* (hash *h*, group *gidx*) probing from *i*; -1 if absent."""
        mm = self._mm
        spsz = self._sps
        base = self._off + s * spsz * SLOT_SIZE
        for _ in range(spsz):
            sh, _v, off = _slot_unpack(mm, base + i * SLOT_SIZE)
            if not sh:
                return -1
            if sh == h:
                q = self._data_off + off * 8
                klen, _c, _f, _vl, _sl, eg, _e = _entry_unpack(mm, q)
                if eg == gidx and mm[q + ENTRY_SIZE:q + ENTRY_SIZE + klen] == kb:
                    return i
            i = i + 1 if i + 1 < spsz else 0
        return -1

    def free(self, s: int, i: int) -> int:
        """The first empty slot of shard *s* probing from *i* (the load is kept under MAX_LOAD)."""
        mm = self._mm
        spsz = self._sps
        base = self._off + s * spsz * SLOT_SIZE
        while _slot_unpack(mm, base + i * SLOT_SIZE)[0]:
            i = i + 1 if i + 1 < spsz else 0
        return i

    def point(self, s: int, i: int, h: int, q: int) -> int:
        """Point slot *i* at the entry at absolute offset *q*, reference byte cleared.

        Returns the absolute offset of the entry the slot pointed at before,
        or 0 if the slot was empty (then it is counted as in use).  The
        seqlock write (odd, fields, even) is inlined: this is on every set.
        """
        mm = self._mm
        p = self._off + (s * self._sps + i) * SLOT_SIZE
        old_h, v, old = _slot_unpack(mm, p)
        if old_h:
            old = self._data_off + old * 8
        else:
            old = 0
            self.count_add(s, 1)
        mm[self._refs + s * self._sps + i] = 0
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 1) & _M32)
        _u64_pack(mm, p, h)
        _u32_pack(mm, p + SLOT_OFF_AT, (q - self._data_off) >> 3)
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 2) & _M32)
        return old

    def _write(self, p: int, h: int, off: int) -> None:
        """Rewrite the slot at byte *p* in seqlock order (odd, fields, even)."""
        mm = self._mm
        v = _u32_unpack(mm, p + SLOT_VERSION_AT)[0]
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 1) & _M32)
        _u64_pack(mm, p, h)
        _u32_pack(mm, p + SLOT_OFF_AT, off)
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 2) & _M32)

    def move(self, s: int, i: int, src: int, dst: int, esize: int, flags: int, ref: int) -> None:
        """Copy slot *i*'s entry from *src* to *dst* (absolute), set its flags, repoint the slot.

        The slot's version is odd for the copy, so a reader never takes the
        half-copied bytes (the regions may overlap).  *ref*: the reference
        byte the entry keeps.
        """
        mm = self._mm
        p = self._off + (s * self._sps + i) * SLOT_SIZE
        ver = _u32_unpack(mm, p + SLOT_VERSION_AT)[0]
        _u32_pack(mm, p + SLOT_VERSION_AT, (ver + 1) & _M32)
        mm[dst:dst + esize] = mm[src:src + esize]  # bytes copy: regions may overlap
        mm[dst + ENTRY_FLAGS_AT] = flags
        _u32_pack(mm, p + SLOT_OFF_AT, (dst - self._data_off) >> 3)
        _u32_pack(mm, p + SLOT_VERSION_AT, (ver + 2) & _M32)
        mm[self._refs + s * self._sps + i] = ref

    def entry(self, s: int, i: int) -> int:
        """Absolute offset of the entry slot *i* of shard *s* points at."""
        off = _u32_unpack(self._mm, self._off + (s * self._sps + i) * SLOT_SIZE + SLOT_OFF_AT)[0]
        return self._data_off + off * 8

    def hash(self, s: int, i: int) -> int:
        """Slot *i*'s key hash (0: empty)."""
        return _u64_unpack(self._mm, self._off + (s * self._sps + i) * SLOT_SIZE)[0]

    def version(self, s: int, i: int) -> int:
        """Slot *i*'s seqlock version now."""
        return _u32_unpack(self._mm, self._off + (s * self._sps + i) * SLOT_SIZE + SLOT_VERSION_AT)[0]

    def count_add(self, s: int, n: int) -> int:
        """Add *n* to shard *s*'s count of slots in use; returns the new count."""
        at = self._locks_off + s * LOCK_SIZE + SHARD_COUNT_AT
        c = _u32_unpack(self._mm, at)[0] + n
        _u32_pack(self._mm, at, c)
        return c

    def delete(self, s: int, i: int) -> None:
        """Backward-shift deletion: later members of the probe run move up.

        Each moved slot is written before its old place is cleared, so a
        concurrent reader sees the entry in one place or the other, or
        misses; the back pointer in the moved entry's header follows it.
        """
        mm = self._mm
        spsz = self._sps
        base = self._off + s * spsz * SLOT_SIZE
        refs = self._refs + s * spsz
        j = i
        while True:
            j = j + 1 if j + 1 < spsz else 0
            hj, _v, offj = _slot_unpack(mm, base + j * SLOT_SIZE)
            if not hj:
                break
            k = hj % spsz
            # Stay when the home k lies cyclically in (i, j].
            if (i < j and i < k <= j) or (i > j and (k > i or k <= j)):
                continue
            self._write(base + i * SLOT_SIZE, hj, offj)
            mm[refs + i] = mm[refs + j]
            _u32_pack(mm, self._data_off + offj * 8 + 8, i)  # ENTRY.slot
            i = j
        self._write(base + i * SLOT_SIZE, 0, 0)
        self.count_add(s, -1)

    def wipe(self, s: int) -> None:
        """Clear every slot of shard *s* (seqlock order) and its count (repair)."""
        mm = self._mm
        base = self._off + s * self._sps * SLOT_SIZE
        for i in range(self._sps):
            p = base + i * SLOT_SIZE
            h, ver, _off = _slot_unpack(mm, p)
            if h or ver & 1:
                v = (ver | 1) & _M32  # odd: readers back off
                _u32_pack(mm, p + SLOT_VERSION_AT, v)
                _u64_pack(mm, p, 0)
                _u32_pack(mm, p + SLOT_VERSION_AT, (v + 1) & _M32)
        _u32_pack(mm, self._locks_off + s * LOCK_SIZE + SHARD_COUNT_AT, 0)

    def audit(self, s: int, gidx: int) -> tuple[int, int]:
        """(bytes, entries) group *gidx* holds in shard *s*, by a full scan; ArenaError if a slot is inconsistent."""
        mm = self._mm
        nbytes = entries = 0
        base = self._off + s * self._sps * SLOT_SIZE
        for i in range(self._sps):
            h, _v, off = _slot_unpack(mm, base + i * SLOT_SIZE)
            if h:
                klen, _c, flags, vlen, back, eg, _e = _entry_unpack(mm, self._data_off + off * 8)
                if eg == gidx:
                    if back != i or not flags & F_LIVE:
                        raise ArenaError(f"slot {i} of shard {s} is inconsistent")
                    nbytes += entry_size(klen, vlen)
                    entries += 1
        return nbytes, entries
