"""The member list (hash ring input) every worker reads and the registrar writes.

Double-buffered: version v lives in buffer ``v & 1``.  The writer fills the
buffer the readers are not using, then publishes the new version with one
store, so a writer killed mid-write leaves the previous list readable and
readers never wait on it.  Writers are serialised by the RING lock (there is
one writer by design; the lock makes a second one harmless).
"""

from __future__ import annotations

import time

from ..errors import ArenaError, ConfigError
from .layout import RING_LEN, U64

_RETRIES = 1000


class Ring:
    """The ring region of one arena mapping (*mm*); writers hold lock *lock* of *locks*."""

    def __init__(self, mm, locks, lock: int, off: int, capacity: int) -> None:
        self._mm = mm
        self._held = locks.held(lock)
        self._off = off
        self._capacity = capacity
        self._buf_bytes = RING_LEN.size + capacity

    def _buffer(self, version: int) -> int:
        return self._off + U64.size + (version & 1) * self._buf_bytes

    def version(self) -> int:
        """The published version; 0 before the first write."""
        return U64.unpack_from(self._mm, self._off)[0]

    def write(self, members: list[str]) -> int:
        """Publish *members*; returns the new version."""
        if isinstance(members, str) or not all(isinstance(m, str) and m and "\n" not in m for m in members):
            raise ConfigError("members", "must be a list of non-empty strings without newlines")
        raw = "\n".join(members).encode("utf-8")
        if len(raw) > self._capacity:
            raise ConfigError("members", f"{len(raw)} bytes; the ring region holds {self._capacity}")
        mm = self._mm
        with self._held:
            version = self.version() + 1
            at = self._buffer(version)
            RING_LEN.pack_into(mm, at, len(raw))
            mm[at + RING_LEN.size:at + RING_LEN.size + len(raw)] = raw
            U64.pack_into(mm, self._off, version)  # publish
        return version

    def read(self) -> tuple[int, list[str]]:
        """(version, members) read consistently (retries while the writer laps a buffer)."""
        mm = self._mm
        for attempt in range(_RETRIES):
            v1 = self.version()
            if v1 == 0:
                return 0, []
            at = self._buffer(v1)
            n = RING_LEN.unpack_from(mm, at)[0]
            raw = mm[at + RING_LEN.size:at + RING_LEN.size + min(n, self._capacity)]
            if self.version() == v1:
                return v1, raw.decode("utf-8").split("\n") if raw else []
            if attempt > 10:
                time.sleep(0.0005)
        raise ArenaError("ring kept changing while reading it")
