"""The pause guard drops a host's copies after its loop did not run for too long."""

import asyncio
import logging

import pytest

from geecache.cache import LocalCache
from geecache.group import Group
from geecache.pauseguard import PauseGuard
from geecache.storage import MemoryStorage


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_gap_over_the_threshold_drops_every_copy(caplog):
    cache = LocalCache()
    groups = [Group(name, MemoryStorage({"k": b"v"}), cache=cache) for name in ("a", "b")]
    clock = Clock()

    async def main():
        for g in groups:
            assert await g.get("k") == b"v"
            cache.set("hot:" + g.name, "remote", b"r")
        guard = PauseGuard(groups, threshold=1.0, interval=0.1, clock=clock)
        guard.start()
        clock.t += 0.5
        guard.tick()  # a normal interval: nothing dropped
        assert all(cache.get(g.name, "k") == b"v" for g in groups)
        clock.t += 5.0  # the process was stopped for 5 s
        with caplog.at_level(logging.WARNING):
            guard.tick()
        guard.stop()
        return guard.pauses

    assert asyncio.run(main()) == 1
    for g in groups:
        assert cache.get(g.name, "k") is None and cache.get("hot:" + g.name, "remote") is None
    assert "did not run for 5.0 s" in caplog.text


def test_a_load_running_across_the_pause_is_served_not_kept():
    class Slow(MemoryStorage):
        async def get(self, key):
            value = await super().get(key)
            await asyncio.sleep(0.05)
            return value

    cache = LocalCache()
    g = Group("g", Slow({"k": b"old"}), cache=cache)

    async def main():
        load = asyncio.ensure_future(g.get("k"))
        await asyncio.sleep(0.01)
        g.drop_copies()  # the host was paused while that load read the source
        assert await load == b"old"
        return cache.get("g", "k")

    assert asyncio.run(main()) is None


def test_bad_intervals():
    with pytest.raises(ValueError):
        PauseGuard([], threshold=0.1, interval=0.1)


def test_copies_are_dropped_when_a_host_alone_joins_a_ring_and_again_after_a_pause_settles():
    cache = LocalCache()
    g = Group("g", MemoryStorage({"k": b"v"}), cache=cache)
    clock = Clock()
    ring = ["me"]  # a host starts alone (the supervisor's seed), then the registrar adds the others

    def fill():
        cache.set("g", "k", b"v")

    async def main():
        guard = PauseGuard([g], threshold=1.0, interval=0.1, settle=3.0,
                           members=lambda: ring, self_address="me", clock=clock)
        guard.start()
        fill()
        clock.t += 0.1
        guard.tick()
        assert guard.drops == 0 and cache.get("g", "k") == b"v"  # alone: its own copies
        ring[:] = ["me", "a", "b"]  # joined: what it kept alone missed every write elsewhere
        clock.t += 0.1
        guard.tick()
        assert guard.drops == 1 and cache.get("g", "k") is None
        fill()
        ring[:] = ["a", "b"]  # its own ring without it (its lease expired in an etcd outage) ...
        clock.t += 0.1
        guard.tick()
        ring[:] = ["me", "a", "b"]  # ... and back: the others never stopped invalidating it
        clock.t += 0.1
        guard.tick()
        assert guard.drops == 1 and cache.get("g", "k") == b"v"
        clock.t += 10  # paused
        guard.tick()
        assert guard.drops == 2 and cache.get("g", "k") is None
        fill()
        for _ in range(7):
            clock.t += 0.5
            guard.tick()  # settle (3 s) after the pause, at the sixth of these
        assert guard.drops == 3 and cache.get("g", "k") is None
        for _ in range(10):
            clock.t += 0.1
            guard.tick()
        guard.stop()
        return guard.drops

    assert asyncio.run(main()) == 3
