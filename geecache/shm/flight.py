"""Host-wide single flight: which process is loading which key.

A table of (hash of ``group\\0key``, loader pid) pairs: hashes in one array
of u64, pids in a parallel array of u32.  Every look for a slot searches the
hash array (``_index``): the compiled writer's ``find_u64`` compares its words
when it is built, else ``mmap.find`` searches its bytes (no int object per
slot; measured, 6.5 us for an unpack of the 512 slots and an index, well
under 1 us for the search in a loop, 2-4 us on the cold cache of a worker
under PUT load).  Updates hold the FLIGHT lock; ``loading`` (asked by every
write of a key the host owns) reads without the lock (it is advisory: a
waiter that sees a stale answer just checks the cache or calls ``try_begin``
again, which is exact).  A loader whose pid is dead is ignored and replaced,
so a killed loader never blocks a key.
Keys are told apart by their 64-bit hash only; a collision makes one key
wait for another's load, never returns a wrong value.
"""

from __future__ import annotations

import os
import struct

from .pids import alive


class Flight:
    """The in-flight table of one arena mapping (*mm*), guarded by lock *lock* of *locks*.

    *counts* (the arena's ``StatRows``) counts collisions and a full table in
    this process's row; if blank, they are not counted.
    """

    def __init__(self, mm, locks, lock: int, off: int, slots: int, counts=None) -> None:
        self._mm = mm
        self._counts = counts
        self._held = locks.held(lock)
        self._hashes = struct.Struct(f"{slots}Q")
        self._off = off
        self._pids_off = off + 8 * slots
        self._u64 = struct.Struct("Q")
        self._u32 = struct.Struct("I")
        self._slots = slots
        #: The compiled word search (``Writer.find_u64``) ``_index`` uses, or None: bytes.
        self._find_u64 = None

    def use_compiled_search(self, find_u64) -> None:
        """Search the hashes with *find_u64* (``offset, count, value -> index or -1``)."""
        self._find_u64 = find_u64

    def _pid(self, i: int) -> int:
        return self._u32.unpack_from(self._mm, self._pids_off + 4 * i)[0]

    def _put(self, i: int, h: int, pid: int) -> None:
        mm = self._mm
        # pid before hash on claim, hash before pid on release: a half entry
        # is either invisible (no hash) or has a pid that is checked anyway.
        if h:
            self._u32.pack_into(mm, self._pids_off + 4 * i, pid)
            self._u64.pack_into(mm, self._off + 8 * i, h)
        else:
            self._u64.pack_into(mm, self._off + 8 * i, 0)
            self._u32.pack_into(mm, self._pids_off + 4 * i, 0)

    def _index(self, h: int, start: int = 0) -> int:
        """The first slot at or after *start* whose hash is *h* (0: a free slot), or -1.

        A search of the hash words, not an unpack: measured, unpacking the 512 slots and
        scanning them in Python made a load's ``try_begin`` cost 13-17 us and its ``end``
        26-34 us."""
        if start >= self._slots:
            return -1
        find_u64 = self._find_u64
        if find_u64 is not None:
            i = find_u64(self._off + 8 * start, self._slots - start, h)
            return i + start if i >= 0 else -1
        mm, off = self._mm, self._off
        end = self._pids_off
        needle = self._u64.pack(h)
        at = mm.find(needle, off + 8 * start, end)
        while at >= 0:
            if not (at - off) & 7:  # a whole slot, not bytes straddling two
                return (at - off) >> 3
            at = mm.find(needle, at + 1, end)
        return -1

    def try_begin(self, h: int) -> bool:
        """True when the caller is now the loader of hash *h*."""
        me = os.getpid()
        with self._held:
            i = self._index(h)
            if i >= 0:
                pid = self._pid(i)
                if pid == me or alive(pid):
                    if pid != me and self._counts is not None:
                        self._counts.count_flight_collision()
                    return False
                self._put(i, h, me)  # the loader died: take over
                return True
            i = self._index(0)
            if i < 0:
                i = next((k for k in range(self._slots) if not alive(self._pid(k))), -1)
            if i >= 0:
                self._put(i, h, me)
            elif self._counts is not None:
                self._counts.count_flight_full()
            # A full table of live loaders: load untracked (a duplicate load, never a wrong value).
            return True

    def end(self, h: int) -> None:
        """The caller's load of *h* is over."""
        me = os.getpid()
        with self._held:
            i = self._index(h)
            while i >= 0:
                if self._pid(i) == me:
                    self._put(i, 0, 0)
                i = self._index(h, i + 1)

    def loading(self, h: int) -> bool:
        """True while a live process holds *h*."""
        i = self._index(h)
        return i >= 0 and alive(self._pid(i))

    def repair(self) -> None:
        """After a holder of the FLIGHT lock died: drop entries with no live pid."""
        hashes = self._hashes.unpack_from(self._mm, self._off)
        for i, x in enumerate(hashes):
            if x and not alive(self._pid(i)):
                self._put(i, 0, 0)
