"""Helpers of the arena tests: the segments in /dev/shm, a clock moved by hand."""

from __future__ import annotations

import os

from tests.support.proc import SHM_DIR


def geecache_segments() -> set[str]:
    """Names of geecache segments in /dev/shm right now."""
    return {n for n in os.listdir(SHM_DIR) if n.startswith("geecache-")}


class Clock:
    """A clock tests move by hand (the arena reads it for TTLs)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
