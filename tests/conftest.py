"""The fixtures shared by several test modules (helpers that are plain code live in tests/support)."""

from __future__ import annotations

from typing import Iterator

import pytest

from geecache.shm import Arena
from tests.support.arena import geecache_segments
from tests.support.etcd import EtcdServer, start_etcd


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


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A started EtcdServer, stopped and deleted after the test.

    The log tail is printed at teardown, which pytest shows only for failing tests.
    """
    yield from _closed_after(start_etcd())


@pytest.fixture
def etcd_unstarted() -> Iterator[EtcdServer]:
    """An EtcdServer with ports and data dir chosen but not started (the test starts it)."""
    yield from _closed_after(EtcdServer())


def _closed_after(server: EtcdServer) -> Iterator[EtcdServer]:
    """Yield *server*; then print its log tail (shown for failing tests) and close it."""
    try:
        yield server
    finally:
        print(server.log_tail())
        server.close()
