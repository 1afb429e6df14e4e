"""The host's bounded log of its recent writes, for hosts that were away to ask.

A host that was paused, stalled or warm-restarted missed the invalidations
other hosts sent meanwhile (invariant 9, "away means unsure").  Rather than
drop everything, it asks each other host which keys that host wrote in the
last *within* seconds (``GET /_geecache/:writes``), and drops those copies
only.  This is the log they answer from.

One anonymous shared mapping, created by the supervisor before it forks
(``mmap(-1)`` is ``MAP_SHARED``), so every worker of the host appends to
and reads the same log: a peer's question reaches one worker, and it must
answer for all of them.  A ring of fixed-size records, each
``(CLOCK_MONOTONIC ns, group\\0key)``; CLOCK_MONOTONIC is system-wide, so
every process of the host stamps on one clock, and the question is a
duration measured by the asker (never a time of its clock), so two hosts'
clocks are never compared.

*Covered* means the log holds every write of the window: it existed (and
was written without a gap) since before the window began, and the oldest
record still kept is older than the window's start.  When it is not, the
asker drops all of its copies: the one case the log cannot save.

The robust mutex at the head of the mapping (``geecache.shm.lock``) guards
the header and the records; an append waits for it at most
``APPEND_WAIT`` (a stopped holder), and a write it could not log marks the
log uncovered from then (``gap_ns``, an aligned 8-byte store).  It is held
for a record copy or one scan of the ring, never across a call.
"""

from __future__ import annotations

import mmap
import struct
import time

from .errors import LockTimeoutError
from .shm.layout import LOCK_SIZE
from .shm.lock import Locks

#: Records kept: at this many writes per second or fewer, a log covers 10 s.
DEFAULT_RECORDS = 32768
#: Bytes of ``group\\0key`` a record holds (a group name ≤ 64, a key ≤ 250 bytes).
NAME_BYTES = 64 + 1 + 250
#: Longest wait for the log's lock on a write (a process stopped while holding it).
APPEND_WAIT = 0.05

# header: appended (records ever written), created_ns, gap_ns (0: none), unsure_since_ns (0: none),
# lost_ns (the stamp of the newest record the ring overwrote; 0: none yet), then the arena's
# ring version when the absence was noted (the supervisor's own [self] seed)
_HEAD = struct.Struct("Qqqqq")
_HEAD_AT = LOCK_SIZE
_UNSURE_RING = struct.Struct("Q")
_UNSURE_RING_AT = _HEAD_AT + _HEAD.size
_RECORDS_AT = 128
_RECORD = struct.Struct(f"qH{NAME_BYTES}s")
_SIZE = (_RECORD.size + 7) // 8 * 8


class WriteLog:
    """A host-wide ring of ``(monotonic ns, group, key)`` of the writes this host applied.

    Create it in the supervisor before forking; every child shares it.
    """

    def __init__(self, records: int = DEFAULT_RECORDS, clock=time.monotonic_ns) -> None:
        if records < 1:
            raise ValueError(f"a write log needs at least one record, got {records!r}")
        self.records = int(records)
        self._clock = clock
        self._mm = mmap.mmap(-1, _RECORDS_AT + self.records * _SIZE)
        Locks.init_region(self._mm, 0, 1)
        # A holder that died mid-record left at most that record torn: drop the log's cover.
        self._locks = Locks(self._mm, 0, 1, self._repair)
        _HEAD.pack_into(self._mm, _HEAD_AT, 0, clock(), 0, 0, 0)

    def _repair(self, _lock: int) -> None:
        self._mark_gap()

    def _head(self) -> tuple[int, int, int, int, int]:
        return _HEAD.unpack_from(self._mm, _HEAD_AT)

    def _mark_gap(self) -> None:
        struct.pack_into("q", self._mm, _HEAD_AT + 16, self._clock())

    def append(self, group: str, keys) -> None:
        """Log that this host wrote *keys* of *group* (now)."""
        now = self._clock()
        try:
            with self._locks.held(0, APPEND_WAIT):
                appended, _, _, _, lost = self._head()
                for key in keys:
                    name = f"{group}\0{key}".encode()
                    at = _RECORDS_AT + (appended % self.records) * _SIZE
                    if appended >= self.records:
                        lost = _RECORD.unpack_from(self._mm, at)[0]
                    _RECORD.pack_into(self._mm, at, now, len(name), name)
                    appended += 1
                struct.pack_into("Q", self._mm, _HEAD_AT, appended)
                struct.pack_into("q", self._mm, _HEAD_AT + 32, lost)
        except LockTimeoutError:
            self._mark_gap()  # a write not logged: no answer may claim to cover it

    def since(self, within: float) -> tuple[bool, dict[str, set[str]]]:
        """(covered, group -> keys) of the writes of the last *within* seconds.

        *covered* False: the log cannot tell them all (it is younger than the
        window, it wrapped within it, or a write went unlogged); the keys it
        has are still returned.
        """
        now = self._clock()
        start = now - int(max(within, 0.0) * 1e9)
        out: dict[str, set[str]] = {}
        with self._locks.held(0, 1.0):
            appended, created, gap, _, lost = self._head()
            oldest = max(0, appended - self.records)
            # Cover: the log existed before the window, and nothing of the window went unlogged
            # or was overwritten by the ring.
            covered = created <= start and gap < start and lost < start
            for seq in range(appended - 1, oldest - 1, -1):
                stamp, n, name = _RECORD.unpack_from(self._mm, _RECORDS_AT + (seq % self.records) * _SIZE)
                if stamp < start:
                    break
                group, _, key = name[:n].decode().partition("\0")
                out.setdefault(group, set()).add(key)
        return covered, out

    def age(self) -> float:
        """Seconds since this log was created (it holds no write of an older process)."""
        return (self._clock() - self._head()[1]) / 1e9

    def mark_unsure(self, since_ns: int, ring_version: int = 0) -> None:
        """Note that this host was away since *since_ns* (monotonic): its workers must ask the others
        once the registrar has moved the ring past *ring_version* (the supervisor's seed)."""
        _UNSURE_RING.pack_into(self._mm, _UNSURE_RING_AT, ring_version)
        struct.pack_into("q", self._mm, _HEAD_AT + 24, since_ns)

    def unsure_since(self) -> int:
        """The monotonic ns this host has been unsure since (a warm restart), 0 when it is not."""
        return self._head()[3]

    def unsure_ring(self) -> int:
        """The ring version ``mark_unsure`` was given."""
        return _UNSURE_RING.unpack_from(self._mm, _UNSURE_RING_AT)[0]

    def settle_unsure(self, since_ns: int) -> None:
        """The absence that began at *since_ns* was dealt with (kept if a newer one began)."""
        with self._locks.held(0, 1.0):
            if self._head()[3] == since_ns:
                struct.pack_into("q", self._mm, _HEAD_AT + 24, 0)
