"""Per-process counter rows in the arena: each process writes only its own row.

Guarded by: nothing on the write path (one writer per row); the STATS lock
only serialises claiming a row.  A process claims the first free row, or
the row of a dead process (continuing its counts, so totals never go
back).  If every row belongs to a live process, claiming raises
TooManyProcessesError: sharing a row would lose increments silently, so
the arena is sized for the processes (``Arena.create(max_procs=)``).
"""

from __future__ import annotations

import os
import struct

from ..errors import TooManyProcessesError
from ..stats import STAT_FIELDS
from .layout import I64, ROWHEAD
from .pids import alive

_NF = len(STAT_FIELDS)
_FIELD = {name: i for i, name in enumerate(STAT_FIELDS)}
_ROW = struct.Struct(f"{_NF}Q")


class StatRows:
    """The stat-row region of one arena mapping (*mm*); claims hold lock *lock* of *locks*."""

    def __init__(self, mm, locks, lock: int, off: int, max_procs: int, max_groups: int) -> None:
        self._mm = mm
        self._held = locks.held(lock)
        self._off = off
        self._max_procs = max_procs
        self._row_bytes = ROWHEAD + max_groups * _NF * 8
        self._row: int | None = None  # byte offset of this process's row
        # This process's counters as u64 cells (a memoryview of its row): one item
        # assignment per add, where a struct unpack + pack and two calls cost 5x more
        # on the hit path (two adds per hit).
        self._cells: memoryview | None = None

    def forked(self) -> None:
        """Forget the parent's row in a forked child."""
        self.release()
        self._row = None

    def release(self) -> None:
        """Drop the view of this process's row (before the mapping closes)."""
        if self._cells is not None:
            self._cells.release()
            self._cells = None

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

    def add(self, gidx: int, field: str, n: int = 1) -> None:
        """Add *n* to *field* of group *gidx* in this process's row."""
        cells = self._cells if self._cells is not None else self.cells()
        i = gidx * _NF + _FIELD[field]
        cells[i] += n

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
