"""MemoryStorage: a dict as the source of truth, for tests and demos."""

from __future__ import annotations

import heapq
import time
from typing import Callable

from .. import hlc
from ..defaults import DEFAULT_TOMBSTONE_TTL, PURGE_BATCH
from ..limits import as_bytes
from .base import Row, Storage, WriteOp, WriteResult, check_write



class MemoryStorage(Storage):
    """A process-local dict store: what a test or an example needs, nothing more.

    Not shared between processes: each forked worker gets its own copy.
    Versioned like SQLiteStorage (see ``geecache.storage.base``): per key the
    newest version, an optional expiry, and tombstones for deletes.  *clock*
    (Unix seconds) is injectable for tests.
    """

    versioned = True

    def __init__(
        self,
        initial: dict[str, bytes | str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        versions: hlc.HLC | None = None,
    ) -> None:
        if not tombstone_ttl > 0:
            raise ValueError(f"tombstone_ttl must be > 0 seconds, got {tombstone_ttl!r}")
        self._clock = clock
        self._tombstone_ttl = float(tombstone_ttl)
        self._versions = versions or hlc.clock
        # key -> [value or None (a tombstone), version, expire_at or 0].
        # Guarded by the event loop's single thread (no await inside a method).
        self._rows: dict[str, list] = {}
        # (expire_at, key) of every row given an expiry; an entry is stale when
        # the row's expiry has changed since, and is then skipped.
        self._expiries: list[tuple[float, str]] = []
        for k, v in (initial or {}).items():
            self._rows[k] = [as_bytes(v), 0, 0.0]

    def _live(self, key: str, now: float) -> list | None:
        row = self._rows.get(key)
        if row is None or row[0] is None or (row[2] and row[2] <= now):
            return None
        return row

    async def get(self, key: str) -> bytes | None:
        row = self._live(key, self._clock())
        return None if row is None else row[0]

    async def read(self, key: str) -> Row | None:
        row = self._live(key, self._clock())
        return None if row is None else Row(row[0], row[1], row[2])

    async def write(
        self,
        key: str,
        value: bytes | None,
        *,
        version: int = 0,
        expire_at: float = 0.0,
        deadline: float = 0.0,
    ) -> WriteResult:
        return self._apply(key, value, version, expire_at, deadline)

    async def write_many(self, ops: list[WriteOp]) -> list[WriteResult | Exception]:
        """Every op applied in order, at once (nothing else runs on the loop meanwhile)."""
        return [self._apply(*op) for op in ops]

    def _apply(self, key: str, value: bytes | None, version: int, expire_at: float,
               deadline: float) -> WriteResult:
        check_write(version, expire_at, deadline)
        if value is not None:
            value = as_bytes(value)
        now = self._clock()
        if deadline and now >= deadline:
            row = self._rows.get(key)
            return WriteResult(False, self._live(key, now) is not None, row[1] if row else 0, late=True)
        row = self._rows.get(key)
        expired = row is not None and bool(row[2]) and row[2] <= now
        existed = row is not None and row[0] is not None and not expired
        # A stored version past the clock's ceiling (see HLC.ceiling) refuses nothing.
        sane = row is None or row[1] <= self._versions.ceiling()
        if row is not None and version and version <= row[1] and not expired and sane:
            return WriteResult(False, existed, row[1])
        if not version:  # unversioned: ordered after everything stored (see base)
            version = max(row[1] + 1 if row and sane else 0, self._versions.now())
        if value is None:
            expire_at = now + self._tombstone_ttl
        self._rows[key] = [value, version, float(expire_at)]
        if expire_at:
            heapq.heappush(self._expiries, (float(expire_at), key))
        self._purge(now)
        return WriteResult(True, existed, version)

    def _purge(self, now: float) -> None:
        heap = self._expiries
        if len(heap) > 2 * len(self._rows) + 64:
            # Rows rewritten with another expiry left entries behind: rebuild.
            heap[:] = [(row[2], k) for k, row in self._rows.items() if row[2]]
            heapq.heapify(heap)
        for _ in range(PURGE_BATCH):
            if not heap or heap[0][0] > now:
                return
            at, key = heapq.heappop(heap)
            row = self._rows.get(key)
            if row is not None and row[2] == at:
                del self._rows[key]

    def __len__(self) -> int:
        """Live keys (neither deleted nor expired)."""
        now = self._clock()
        return sum(1 for k in self._rows if self._live(k, now) is not None)

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self)} keys)"
