"""No unbounded lock wait on an event loop: a real SIGSTOPped lock holder.

A process that is alive but stopped while it holds an arena shard lock must
not freeze the workers: their writes to that shard give up after
``--lock-timeout`` (a load is served uncached, a write answers 503 after
writing its source), reads stay lock-free, and once the holder is killed
the robust mutex is repaired and writes succeed again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from geecache.shm import Arena
from tests.support.proc import fork, reap, start_supervisor, wait_until

pytestmark = pytest.mark.procs


def _state(pid: int) -> str:
    """The one-letter process state from /proc (``T`` when stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _hold_shard_of(arena_name: str, group: str, key: str) -> None:
    """In a forked child: take the shard lock *key* lives in, then stop this process."""
    arena = Arena.attach(arena_name)
    g = arena._group(group)
    _h, shard, _home = arena._locate(g, key.encode())
    arena._locks.acquire(shard)
    os.kill(os.getpid(), signal.SIGSTOP)


def test_a_stopped_lock_holder_does_not_freeze_writes(tmp_path):
    h = start_supervisor(tmp_path, "--lock-timeout", "0.5", "--worker-timeout", "0", workers=2)
    holder = None
    try:
        assert h.get("/api?key=Tom") == (200, b"630")  # cached now
        holder = fork(_hold_shard_of, h.arena_name(), "scores", "Tom")
        wait_until(lambda: _state(holder) == "T", 10, what="lock holder stopped")

        # Reads take no lock: the cached value is still served.
        assert h.get("/api?key=Tom") == (200, b"630")
        # The write reaches the source, then cannot drop the old cached value: 503, not a hang.
        status, _hd, body = h.request("PUT", "/api?key=Tom", b"700")
        assert status == 503, (status, body)
        assert "lock" in json.loads(body)["error"]
        assert h.get("/healthz")[0] == 200
        stats = h.admin_json("/stats")
        assert stats["scores"]["lock_timeouts"] >= 1

        # Killed, the holder's robust mutex is repaired by the next writer (the shard is emptied).
        os.kill(holder, signal.SIGKILL)
        reap([holder])
        holder = None
        assert h.request("PUT", "/api?key=Tom", b"701")[0] == 204
        assert h.get("/api?key=Tom") == (200, b"701")
    finally:
        if holder is not None:
            os.kill(holder, signal.SIGKILL)
            reap([holder])
        h.stop()
