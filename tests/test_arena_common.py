"""Shared fixtures and helpers of the arena tests (no tests of its own)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

import pytest

from geecache.shm import Arena

SHM_DIR = "/dev/shm"


def geecache_segments() -> set[str]:
    """Names of geecache segments in /dev/shm right now."""
    return {n for n in os.listdir(SHM_DIR) if n.startswith("geecache-")}


@pytest.fixture
def make_arena():
    """Factory for arenas that are closed and unlinked after the test.

    Teardown fails the test if any of them is still in /dev/shm (only our
    own names are checked: other suites may create segments concurrently).
    """
    made: list[Arena] = []

    def make(size: int = 8 << 20, **kw) -> Arena:
        a = Arena.create(size, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()
        a.unlink()
    left = {a.name for a in made} & geecache_segments()
    assert not left, f"segments left behind: {left}"


class Clock:
    """A clock tests move by hand (the arena reads it for TTLs)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fork(fn, *args) -> int:
    """Run fn(*args) in a forked child that exits 0 on success, 1 on an exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pids, timeout: float = 60.0) -> dict[int, int]:
    """Wait for every pid (killing stragglers after *timeout*); pid -> exit status."""
    deadline = time.monotonic() + timeout
    status: dict[int, int] = {}
    pending = set(pids)
    while pending:
        for pid in list(pending):
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status[pid] = st
                pending.discard(pid)
        if pending and time.monotonic() > deadline:
            for pid in pending:
                os.kill(pid, signal.SIGKILL)
                status[pid] = os.waitpid(pid, 0)[1]
            raise AssertionError(f"children {sorted(pending)} did not finish in {timeout}s (wedged?)")
        time.sleep(0.01)
    return status


@contextlib.contextmanager
def child_holding(fn, timeout: float = 30.0):
    """Run fn() in a forked child that then stays alive until the block ends.

    The block starts once fn() has returned in the child; at its end the
    child is released, reaped and must have exited 0.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def body() -> None:
        fn()
        os.write(ready_w, b"x")
        select.select([done_r], [], [], timeout)  # bounded: the parent writes long before

    pid = fork(body)
    try:
        assert select.select([ready_r], [], [], timeout)[0], "the child never got ready"
        yield pid
    finally:
        os.write(done_w, b"x")
        status = reap([pid], timeout=timeout)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)
    assert list(status.values()) == [0]
