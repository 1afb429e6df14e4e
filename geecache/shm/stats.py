"""Per-process counter rows in the arena: each process writes only its own row.

Guarded by: nothing on the write path (one writer per row); the STATS lock
only serialises claiming a row.  A process claims the first free row, or
the row of a dead process (continuing its counts, so totals never go
back).  If every row belongs to a live process, claiming raises
TooManyProcessesError: sharing a row would lose increments silently, so
the arena is sized for the processes (``Arena.create(max_procs=)``).

A row's head also holds the process's contention counters
(``CONTENTION_FIELDS``): lock waits, seqlock conflicts, flight-table
collisions.  They are bumped only on slow branches (a contended lock, a
read that met a slot mid-write, a load another process already runs), by
the small ``count_*`` / ``lock_waited`` helpers below, so a hit never
writes them; a compiled read path bumps the same cells on the same
branches (``contention_address``).
"""

from __future__ import annotations

import os
import struct

from ..errors import TooManyProcessesError
from ..stats import STAT_FIELDS
from .layout import CONTENTION_AT, CONTENTION_CELLS, I64, ROWHEAD
from .pids import alive

_NF = len(STAT_FIELDS)
_FIELD = {name: i for i, name in enumerate(STAT_FIELDS)}
_ROW = struct.Struct(f"{_NF}Q")

#: A process's contention counters, in the order its row head stores them (u64 each).
CONTENTION_FIELDS = (
    "shard_lock_waits",    # shard-lock acquisitions that found the lock held and waited
    "shard_lock_wait_ns",  # time spent in those waits (monotonic ns)
    "flight_lock_waits",   # the same for the host-wide flight table's lock (taken twice per load)
    "flight_lock_wait_ns",
    "seqlock_conflicts",   # lock-free reads that met their slot mid-write (odd or changed version,
                           # or a torn offset) and answered a miss: the read path does not retry
    "flight_collisions",   # try_begin found the key already loading in another live process
    "flight_full",         # try_begin found the flight table full of live loaders (load untracked)
)
assert len(CONTENTION_FIELDS) <= CONTENTION_CELLS
SHARD_LOCK_WAITS, SHARD_LOCK_WAIT_NS, FLIGHT_LOCK_WAITS, FLIGHT_LOCK_WAIT_NS, SEQLOCK_CONFLICTS, \
    FLIGHT_COLLISIONS, FLIGHT_FULL = range(len(CONTENTION_FIELDS))
_HEAD = struct.Struct(f"{len(CONTENTION_FIELDS)}Q")


def contention_total(rows: list[dict[str, int]]) -> dict[str, int]:
    """The per-process rows of ``StatRows.contention`` summed field by field (the pids dropped)."""
    return {field: sum(row[field] for row in rows) for field in CONTENTION_FIELDS}


class StatRows:
    """The stat-row region of one arena mapping (*mm*); claims hold lock *lock* of *locks*."""

    def __init__(self, mm, locks, lock: int, off: int, max_procs: int, max_groups: int,
                 shards: int = 0, flight_lock: int = -1) -> None:
        self._mm = mm
        self._held = locks.held(lock)
        self._shards = shards  # locks [0, shards) are shard locks
        self._flight_lock = flight_lock
        self._off = off
        self._max_procs = max_procs
        self._row_bytes = ROWHEAD + max_groups * _NF * 8
        self._row: int | None = None  # byte offset of this process's row
        # This process's counters as u64 cells (a memoryview of its row): one item
        # assignment per add, where a struct unpack + pack and two calls cost 5x more
        # on the hit path (two adds per hit).
        self._cells: memoryview | None = None
        # This process's contention counters (a view of its row head), made on the first slow branch.
        self._head: memoryview | None = None

    def forked(self) -> None:
        """Forget the parent's row in a forked child."""
        self.release()
        self._row = None

    def release(self) -> None:
        """Drop the view of this process's row (before the mapping closes)."""
        if self._cells is not None:
            self._cells.release()
            self._cells = None
        if self._head is not None:
            self._head.release()
            self._head = None

    def cells(self) -> memoryview:
        """This process's row as u64 cells (group g's field f is cell ``g * len(STAT_FIELDS) + f``)."""
        if self._cells is None:
            row = self._row if self._row is not None else self.claim()
            self._cells = memoryview(self._mm)[row + ROWHEAD:row + self._row_bytes].cast("Q")
        return self._cells

    def claim(self) -> int:
        """Claim (or find) this process's row and return its offset.

        TooManyProcessesError when every row belongs to a live process.
        """
        if self._row is not None:
            return self._row
        mm = self._mm
        me = os.getpid()
        with self._held:
            rows = [self._off + r * self._row_bytes for r in range(self._max_procs)]
            pids = [I64.unpack_from(mm, at)[0] for at in rows]
            choice = next((at for at, pid in zip(rows, pids) if pid == me), None)
            if choice is None:
                choice = next((at for at, pid in zip(rows, pids) if pid == 0), None)
            if choice is None:
                choice = next((at for at, pid in zip(rows, pids) if not alive(pid)), None)
            if choice is None:
                raise TooManyProcessesError(
                    f"all {self._max_procs} stat rows of the arena belong to live processes"
                    " (create it with a larger max_procs)")
            I64.pack_into(mm, choice, me)
        self._row = choice
        return choice

    def row_index(self) -> int:
        """This process's row number (claimed on first use): ``adaptive``'s sample ring is the same one."""
        return ((self._row if self._row is not None else self.claim()) - self._off) // self._row_bytes

    def add(self, gidx: int, field: str, n: int = 1) -> None:
        """Add *n* to *field* of group *gidx* in this process's row."""
        cells = self._cells if self._cells is not None else self.cells()
        i = gidx * _NF + _FIELD[field]
        cells[i] += n

    # -- contention: slow branches only ------------------------------------------------

    def head(self) -> memoryview:
        """This process's contention counters as u64 cells (``CONTENTION_FIELDS`` order)."""
        if self._head is None:
            row = self._row if self._row is not None else self.claim()
            at = row + CONTENTION_AT
            self._head = memoryview(self._mm)[at:at + _HEAD.size].cast("Q")
        return self._head

    def contention_address(self, base: int) -> int:
        """The address of this process's first contention cell, *base* being the mapping's address.

        For a compiled read path: it adds 1 to cell ``SEQLOCK_CONFLICTS`` where
        ``count_seqlock_conflict`` is called.
        """
        row = self._row if self._row is not None else self.claim()
        return base + row + CONTENTION_AT

    def count_seqlock_conflict(self) -> None:
        """A lock-free read met its slot mid-write and answers a miss (returns None for the caller)."""
        head = self._head if self._head is not None else self.head()
        head[SEQLOCK_CONFLICTS] += 1

    def count_flight_collision(self) -> None:
        """``Flight.try_begin`` found the key loading in another live process."""
        head = self._head if self._head is not None else self.head()
        head[FLIGHT_COLLISIONS] += 1

    def count_flight_full(self) -> None:
        """``Flight.try_begin`` found no free entry: every one belongs to a live loader."""
        head = self._head if self._head is not None else self.head()
        head[FLIGHT_FULL] += 1

    def lock_waited(self, i: int, ns: int) -> None:
        """Lock *i* was held by another process and this one waited *ns* for it (``Locks.on_wait``).

        Counted for the shard locks and the flight lock, the ones requests
        take.  Not for CONFIG and RING (a configure, the registrar's ring
        write) nor STATS, which guards row claims: counting that wait would
        claim a row while holding it.
        """
        if i < self._shards:
            head = self._head if self._head is not None else self.head()
            head[SHARD_LOCK_WAITS] += 1
            head[SHARD_LOCK_WAIT_NS] += ns
        elif i == self._flight_lock:
            head = self._head if self._head is not None else self.head()
            head[FLIGHT_LOCK_WAITS] += 1
            head[FLIGHT_LOCK_WAIT_NS] += ns

    def contention(self) -> list[dict[str, int]]:
        """Every claimed row's contention counters: ``{"pid": ..., field: value, ...}`` per row.

        A row reclaimed from a dead process carries its counts on (as the group counters do).
        """
        mm = self._mm
        out = []
        for r in range(self._max_procs):
            at = self._off + r * self._row_bytes
            pid = I64.unpack_from(mm, at)[0]
            if pid:
                out.append({"pid": pid, **dict(zip(CONTENTION_FIELDS, _HEAD.unpack_from(mm, at + CONTENTION_AT)))})
        return out

    # -- group counters --------------------------------------------------------------

    def own(self, gidx: int) -> dict[str, int]:
        """This process's counters for group *gidx*."""
        row = self._row if self._row is not None else self.claim()
        return dict(zip(STAT_FIELDS, _ROW.unpack_from(self._mm, row + ROWHEAD + gidx * _NF * 8)))

    def totals(self, gidx: int) -> dict[str, int]:
        """Counters for group *gidx* summed over every claimed row."""
        mm = self._mm
        sums = [0] * _NF
        for r in range(self._max_procs):
            at = self._off + r * self._row_bytes
            if I64.unpack_from(mm, at)[0]:
                for k, v in enumerate(_ROW.unpack_from(mm, at + ROWHEAD + gidx * _NF * 8)):
                    sums[k] += v
        return dict(zip(STAT_FIELDS, sums))

    def sink(self, gidx: int) -> "ArenaStats":
        """A StatsSink for group *gidx* writing this process's row."""
        return ArenaStats(self, gidx)


class ArenaStats:
    """``geecache.stats.StatsSink`` over the arena: ``add`` writes this process's row.

    Safe to keep across fork: the row is looked up per call, and a forked
    child claims its own on first use.
    """

    __slots__ = ("_rows", "_gidx", "_base")

    def __init__(self, rows: StatRows, gidx: int) -> None:
        self._rows = rows
        self._gidx = gidx
        self._base = gidx * _NF

    def add(self, field: str, n: int = 1) -> None:
        """Add *n* to *field* (one of STAT_FIELDS) for this process."""
        i = _FIELD.get(field)
        if i is None:
            raise ValueError(f"unknown stat field {field!r}")
        rows = self._rows
        cells = rows._cells if rows._cells is not None else rows.cells()
        i += self._base
        cells[i] += n

    def snapshot(self) -> dict[str, int]:
        """This process's counters (``Arena.stats`` gives the host's totals)."""
        return self._rows.own(self._gidx)
