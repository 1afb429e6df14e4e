"""A supervisor killed with SIGKILL leaks its arena; the next one on its port reclaims it."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.proc import alive, start_supervisor, wait_until

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs


def test_next_supervisor_reclaims_a_killed_ones_arena(tmp_path):
    first = start_supervisor(tmp_path, workers=1)
    name = first.arena_name()
    assert name and os.path.exists(f"/dev/shm/{name}")
    workers = first.workers()
    os.kill(first.pid, signal.SIGKILL)  # by hand: Host.stop would clean up for it
    first.proc.wait(10)
    # The workers follow their supervisor (PDEATHSIG) and release the port.
    wait_until(lambda: not any(alive(p) for p in workers), 15, what="the orphaned workers to exit")
    assert os.path.exists(f"/dev/shm/{name}")  # nobody could unlink it
    second = start_supervisor(tmp_path, workers=1, port=first.port)
    try:
        assert not os.path.exists(f"/dev/shm/{name}")
        assert "left by supervisor" in second.log()
        assert second.get("/api?key=Tom") == (200, b"630")
    finally:
        first.kill_leftovers()  # its workers, had PDEATHSIG not ended them
        assert second.stop() == 0
    assert not os.path.exists(f"/dev/shm/{second.arena_name()}")
    assert not (tmp_path / "data" / f"supervisor-{first.port}.state").exists()
