"""A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

A write's version is the HLC timestamp of the process that originated it.
An HLC timestamp is close to wall time (so versions from different hosts
order roughly as the writes happened), never goes backwards in one process
(even when the wall clock steps back), and after ``update(remote)`` is
greater than the remote timestamp (so a host that has seen a version never
issues a smaller one afterwards).

Layout: one integer below 2**63, so it fits SQLite's signed INTEGER and a
protobuf ``int64``/``uint64`` unchanged::

    bits 62..11  physical: microseconds since the Unix epoch (52 bits, to year 2112)
    bits 10..0   logical counter (11 bits)

Why microseconds and no node id in the low bits: the workers of a host (and
the hosts) each run their own clock, with no shared state.  Two writes of a
key where the second starts after the first was acknowledged are at least a
network round trip apart (tens of µs), so with a µs physical part they get
increasing versions from *any* two processes reading the same wall clock;
with milliseconds they would often tie inside one ms, and a node id would
then order them arbitrarily, i.e. sometimes the wrong way round.  A node id
is not needed for uniqueness either: every write of a key meets one arbiter,
the source, which refuses a version less than *or equal to* the stored one,
so of two writes with equal versions (issued in the same µs, hence
concurrent) exactly one applies, and a write delivered twice (a local
fallback and a late forward of the same write) applies once.

Where clocks disagree (a wall clock stepped back under a long-lived worker,
a respawned worker, another host's clock ahead), the source's refusal
reports the stored version; the originator feeds it to ``update`` and
re-stamps its write, which is legal because that write has not been
acknowledged yet.  An optional shared ``floor`` (one u64, e.g. a slot in
the host's arena) lets every worker of a host start from the highest
timestamp any of them issued, which makes those retries rarer after a step
back; correctness does not depend on it.

The logical counter rises only while the wall clock is at or behind the
clock's physical part; when it would overflow, the physical part is
advanced by one µs instead (the clock runs at most 1 µs per 2048 events
ahead of real time, and wall time catches up).
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

LOGICAL_BITS = 11
PHYSICAL_BITS = 52
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
_PHYSICAL_LIMIT = 1 << PHYSICAL_BITS
#: One more than the largest timestamp: every timestamp fits a signed 64-bit integer.
LIMIT = 1 << (PHYSICAL_BITS + LOGICAL_BITS)


#: How far ahead of this host's wall clock (seconds) a version received from
#: elsewhere may be: a host whose clock is hours off (NTP lost, a VM restored)
#: still orders its writes with the others, and a forged or broken version
#: (2**63 - 2: the year 2112) cannot drag this clock, and with it every later
#: write of the key, to the end of its range.
DEFAULT_MAX_DRIFT = 86400.0


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of this host's wall clock than allowed."""


def pack(physical_us: int, logical: int = 0) -> int:
    """The timestamp of (*physical_us* since the epoch, *logical* counter)."""
    if not 0 <= physical_us < _PHYSICAL_LIMIT:
        raise ValueError(f"physical time {physical_us} µs is outside 0..2**{PHYSICAL_BITS}")
    if not 0 <= logical <= _LOGICAL_MASK:
        raise ValueError(f"logical counter {logical} is outside 0..{_LOGICAL_MASK}")
    return (physical_us << LOGICAL_BITS) | logical


def unpack(ts: int) -> tuple[int, int]:
    """(physical µs since the epoch, logical counter) of timestamp *ts*."""
    if not 0 <= ts < LIMIT:
        raise ValueError(f"timestamp {ts} is outside 0..2**63")
    return ts >> LOGICAL_BITS, ts & _LOGICAL_MASK


def to_unix(ts: int) -> float:
    """The wall time (Unix seconds) of timestamp *ts*, for logs and tests."""
    return unpack(ts)[0] / 1e6


def wall_us() -> int:
    """Microseconds since the Unix epoch from the system clock."""
    return time.time_ns() // 1000


class Floor(Protocol):
    """A timestamp shared by several clocks (e.g. the workers of a host)."""

    def read(self) -> int:
        """The highest timestamp published so far (0 when none)."""

    def raise_to(self, ts: int) -> None:
        """Publish *ts* if it is above the current value (a lost race may keep a lower one)."""


class BufferFloor:
    """A ``Floor`` in 8 bytes of a writable buffer (a shared-memory slot).

    Aligned 8-byte loads and stores through ``memoryview.cast('Q')`` are
    single machine instructions on the 64-bit platforms we run on, so a
    reader never sees half a value.  Without a compare-and-swap, two
    writers racing may leave the lower of their two values: the floor is
    advisory (each clock stays monotonic by itself), so that costs at most
    the few µs between the two.
    """

    def __init__(self, buf) -> None:
        view = memoryview(buf).cast("B")
        if len(view) < 8:
            raise ValueError("a BufferFloor needs 8 bytes")
        self._cell = view[:8].cast("Q")

    def read(self) -> int:
        return self._cell[0]

    def raise_to(self, ts: int) -> None:
        if ts > self._cell[0]:
            self._cell[0] = ts


class HLC:
    """A hybrid logical clock: ``now()`` for a local event, ``update(ts)`` on receipt.

    *wall* returns the wall clock in µs (injectable for tests).  *floor*, if
    given, is read before and raised after every event (see ``Floor``).
    *max_drift* (seconds), if given, makes ``update`` refuse a remote
    timestamp that far ahead of the local wall clock with ClockDriftError
    instead of dragging this clock into the future.  Use one instance per
    process, from one thread (the event loop's): it holds no lock.
    """

    def __init__(
        self,
        wall: Callable[[], int] = wall_us,
        *,
        floor: Floor | None = None,
        max_drift: float | None = None,
    ) -> None:
        self._wall = wall
        self._floor = floor
        self._max_drift_us = None if max_drift is None else int(max_drift * 1e6)
        self._l = 0  # physical part of the last timestamp issued
        self._c = 0  # its logical counter

    @property
    def max_drift(self) -> float | None:
        """Seconds a remote timestamp may be ahead of the wall clock (None: unbounded)."""
        return None if self._max_drift_us is None else self._max_drift_us / 1e6

    @max_drift.setter
    def max_drift(self, seconds: float | None) -> None:
        self._max_drift_us = None if seconds is None else int(seconds * 1e6)

    def ceiling(self) -> int:
        """The largest timestamp ``update`` takes now: the wall clock plus the drift limit.

        A stored version above it came from a clock (or a forger) too far
        ahead; a source lets a write replace it rather than refuse every
        write of the key until that time comes.
        """
        drift = self._max_drift_us
        if drift is None:
            return LIMIT - 1
        # pack(min(now + drift, the last µs), the last counter), inlined (asked once per write);
        # within LIMIT by construction.
        return (min(self._physical() + drift, _PHYSICAL_LIMIT - 1) << LOGICAL_BITS) | _LOGICAL_MASK

    def last(self) -> int:
        """The last timestamp this clock issued (0 before the first)."""
        return pack(self._l, self._c)

    def now(self) -> int:
        """A timestamp for a local event (a write this process originates)."""
        if self._floor is not None:
            self._merge_floor()
        pt = self._physical()
        if pt > self._l:
            self._l, self._c = pt, 0
        else:
            self._tick()
        return self._issue()

    def update(self, remote: int) -> int:
        """Take in *remote* (a timestamp received from elsewhere); the result is above it."""
        rl, rc = unpack(remote)
        pt = self._physical()
        if self._max_drift_us is not None and rl - pt > self._max_drift_us:
            raise ClockDriftError(
                f"remote timestamp is {(rl - pt) / 1e6:.3f} s ahead of this host's clock "
                f"(limit {self._max_drift_us / 1e6:g} s)"
            )
        self._merge_floor()
        l, c = self._l, self._c
        top = max(l, rl, pt)
        if top == l and top == rl:
            self._c = max(c, rc)
            self._tick()
        elif top == l:
            self._tick()
        elif top == rl:
            self._l, self._c = rl, rc
            self._tick()
        else:
            self._l, self._c = pt, 0
        return self._issue()

    def _physical(self) -> int:
        pt = self._wall()
        if not 0 <= pt < _PHYSICAL_LIMIT:
            raise ValueError(f"wall clock reads {pt} µs, outside 0..2**{PHYSICAL_BITS}")
        return pt

    def _tick(self) -> None:
        # The logical counter orders events within one physical µs; on overflow
        # borrow the next µs rather than wrap (wrapping would go backwards).
        if self._c < _LOGICAL_MASK:
            self._c += 1
        else:
            self._l, self._c = self._l + 1, 0

    def _merge_floor(self) -> None:
        if self._floor is not None:
            fl, fc = unpack(self._floor.read())
            if (fl, fc) > (self._l, self._c):
                self._l, self._c = fl, fc

    def _issue(self) -> int:
        # pack(self._l, self._c), inlined (once per write): the counter is in range by
        # _tick, the physical part may pass the range only by its borrow.
        if self._l >= _PHYSICAL_LIMIT:
            raise ValueError(f"physical time {self._l} µs is outside 0..2**{PHYSICAL_BITS}")
        ts = (self._l << LOGICAL_BITS) | self._c
        if self._floor is not None:
            self._floor.raise_to(ts)
        return ts


#: This process's clock: the versions of the writes it originates.  A forked
#: child inherits its state, which keeps it monotonic across the fork.  Its
#: drift limit is the host's ``max_clock_drift`` once a worker has its config.
clock = HLC(max_drift=DEFAULT_MAX_DRIFT)
