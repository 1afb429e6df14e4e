"""The fixtures shared by several test modules (helpers that are plain code live in tests/support)."""

from __future__ import annotations

import pytest

from geecache.shm import Arena
from tests.support.arena import geecache_segments


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
