"""Heartbeats: how the supervisor knows a child is ready, and that it still runs its loop.

One anonymous shared mapping (``mmap(-1)`` is ``MAP_SHARED``, so every forked
child writes the same pages the supervisor reads), one cell per child.  The
supervisor zeroes a cell before it forks the child that gets it; the child
stamps ``CLOCK_MONOTONIC`` (system-wide, so both sides compare it) from a
callback on its event loop every ``interval`` seconds.  The first stamp means
*ready* (gunicorn's "booted"); a stamp older than ``worker_timeout`` means the
loop is stuck (a blocking call, a SIGSTOP, a lock wait) and the supervisor
replaces the child.

Why not the arena's stat rows: the supervisor needs readiness per *child*,
not per pid (a row is claimed by pid and reused by the next process), and a
cell it zeroes itself before the fork cannot hold a stale stamp.  Why not a
pipe per child: a byte stream says nothing when the writer stops, and the
supervisor would have to drain N pipes.  A stamp is one aligned 8-byte store
on either side (no lock; a torn read cannot happen on the platforms we run on,
and at worst it would delay a verdict by one turn).

Leaf module (standard library only): the worker and the registrar import it.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import time

_STAMP = struct.Struct("q")
#: One cache line per cell, so children's stamps never share a line.
CELL = 64
#: Longest time between two stamps; shorter when the timeout is short.
MAX_INTERVAL = 1.0


def beat_interval(timeout: float) -> float:
    """Seconds between two stamps for a *timeout* (0 = no watchdog): 4 stamps per timeout, ≤ 1 s."""
    return MAX_INTERVAL if timeout <= 0 else min(MAX_INTERVAL, timeout / 4)


class Pulses:
    """The supervisor's side: *n* cells, handed out to children and taken back when reaped."""

    def __init__(self, n: int) -> None:
        self._mm = mmap.mmap(-1, n * CELL)
        self._free = list(range(n - 1, -1, -1))

    def take(self) -> int | None:
        """A zeroed cell for a child about to be forked; None when all are in use."""
        if not self._free:
            return None
        cell = self._free.pop()
        _STAMP.pack_into(self._mm, cell * CELL, 0)
        return cell

    def give_back(self, cell: int | None) -> None:
        """*cell*'s child was reaped."""
        if cell is not None:
            self._free.append(cell)

    def last(self, cell: int | None) -> int:
        """*cell*'s last stamp (``time.monotonic_ns``); 0 while its child is not ready."""
        return 0 if cell is None else _STAMP.unpack_from(self._mm, cell * CELL)[0]

    def pulse(self, cell: int | None, wake_fd: int, interval: float) -> "Pulse | None":
        """The child's side of *cell* (None: no cell, no watchdog)."""
        return None if cell is None else Pulse(self._mm, cell * CELL, wake_fd, interval)


class Pulse:
    """One child's cell: ``start(loop)`` once it serves, and the loop stamps it from then on."""

    def __init__(self, mm: mmap.mmap, at: int, wake_fd: int, interval: float) -> None:
        self._mm = mm
        self._at = at
        self._wake_fd = wake_fd
        self.interval = interval

    def beat(self) -> None:
        """Stamp the cell now."""
        _STAMP.pack_into(self._mm, self._at, time.monotonic_ns())

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Say *ready* (and wake the supervisor to notice), then stamp from *loop* every interval.

        A callback, not a thread: a loop that stops turning stops the stamps,
        which is the point.
        """
        def tick() -> None:
            self.beat()
            loop.call_later(self.interval, tick)

        tick()
        try:
            os.write(self._wake_fd, b"r")
        except OSError:
            pass  # the supervisor's pipe is full (it is awake anyway) or gone
