"""Group over the in-process cache: the load path, single flight, write-through, errors."""

from __future__ import annotations

import asyncio

import pytest

from geecache.cache import LocalCache
from geecache.errors import InvalidKeyError, LoadError, NotFoundError, ReadOnlySourceError, ValueTooLargeError
from geecache.group import Group
from geecache.storage import FunctionSource, MemoryStorage


def run(coro):
    return asyncio.run(coro)


class CountingSource(MemoryStorage):
    """A MemoryStorage that counts loads and can be made slow, to overlap callers."""

    def __init__(self, data, delay=0.0):
        super().__init__(data)
        self.loads = 0
        self.delay = delay

    async def get(self, key):
        self.loads += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().get(key)


def test_get_loads_once_then_hits():
    src = CountingSource({"Tom": b"630"})
    g = Group("scores", src, max_bytes=1 << 20)

    async def go():
        assert await g.get("Tom") == b"630"
        assert await g.get("Tom") == b"630"

    run(go())
    assert src.loads == 1
    s = g.stats.snapshot()
    assert (s["gets"], s["local_hits"], s["loads"]) == (2, 1, 1)


def test_concurrent_misses_load_once():
    src = CountingSource({"k": b"v"}, delay=0.05)
    g = Group("g", src)

    async def go():
        return await asyncio.gather(*(g.get("k") for _ in range(20)))

    assert run(go()) == [b"v"] * 20
    assert src.loads == 1
    assert g.stats.snapshot()["loads_deduped"] == 19


def test_not_found_is_named_and_not_cached():
    src = CountingSource({})
    g = Group("g", src)
    for _ in range(2):
        with pytest.raises(NotFoundError):
            run(g.get("missing"))
    assert src.loads == 2


def test_bad_keys_raise_invalid_key():
    g = Group("g", MemoryStorage({}))
    for key in ["", "x" * 251, "é" * 126]:
        with pytest.raises(InvalidKeyError):
            run(g.get(key))


def test_bad_group_name():
    with pytest.raises(InvalidKeyError):
        Group("hot:x", MemoryStorage({}))


def test_loader_that_raises_gives_load_error():
    def boom(key):
        raise RuntimeError("database on fire")

    g = Group("g", FunctionSource(boom))
    with pytest.raises(LoadError, match="database on fire"):
        run(g.get("k"))
    assert g.stats.snapshot()["load_errors"] == 1


def test_value_over_item_limit():
    cache = LocalCache()
    g = Group("g", MemoryStorage({"big": b"x" * 2000}), item_limit=1000, cache=cache)
    # The source's value is served, just never cached (the source is the truth).
    assert run(g.get("big")) == b"x" * 2000
    assert cache.get("g", "big") is None
    with pytest.raises(ValueTooLargeError):
        run(g.set("k", b"y" * 1001))


class ReadThenWait(MemoryStorage):
    """Reads the value, then takes a while to return it: a load that races a write."""

    async def get(self, key):
        value = await super().get(key)
        await asyncio.sleep(0.05)
        return value


def test_write_during_a_load_is_not_undone_by_it():
    src = ReadThenWait({"k": b"old"})
    cache = LocalCache()
    g = Group("g", src, cache=cache)

    async def go():
        load = asyncio.ensure_future(g.get("k"))   # reads "old", slowly
        await asyncio.sleep(0.01)
        await g.set("k", b"new")                   # lands while the load runs
        assert await load == b"old"                # that caller saw the value of its time
        assert await g.get("k") == b"new"          # but the stale value was not cached over "new"

    run(go())


def test_set_and_delete_write_through():
    src = MemoryStorage({"a": b"1"})
    g = Group("g", src)

    async def go():
        assert await g.get("a") == b"1"
        await g.set("a", b"2")
        assert await src.get("a") == b"2"
        assert await g.get("a") == b"2"
        assert await g.delete("a") is True
        assert await src.get("a") is None
        with pytest.raises(NotFoundError):
            await g.get("a")
        assert await g.delete("a") is False

    run(go())


def test_set_with_ttl_overrides_the_group_ttl():
    import time

    cache = LocalCache()
    g = Group("g", MemoryStorage({}), cache=cache, ttl=3600)
    run(g.set("short", b"v", ttl=5))
    run(g.set("default", b"v"))
    now = time.time()
    assert 0 < cache.get_entry("g", "short")[2] - now <= 5
    assert 5 < cache.get_entry("g", "default")[2] - now <= 3600
    for bad in (-1, float("nan"), "soon", 10 ** 9):
        with pytest.raises(InvalidKeyError):
            run(g.set("k", b"v", ttl=bad))


def test_readonly_source_refuses_writes():
    g = Group("g", FunctionSource(lambda key: b"v"))
    assert g.readonly
    with pytest.raises(ReadOnlySourceError):
        run(g.set("k", b"v"))
    with pytest.raises(ReadOnlySourceError):
        run(g.delete("k"))


def test_budget_evicts_least_recently_used():
    cache = LocalCache()
    src = MemoryStorage({f"k{i}": b"x" * 100 for i in range(10)})
    g = Group("g", src, max_bytes=350, cache=cache)

    async def go():
        for i in range(10):
            await g.get(f"k{i}")

    run(go())
    used, entries = cache.usage("g")
    assert used <= 350 and entries == 3
    assert cache.get("g", "k9") is not None and cache.get("g", "k0") is None
    assert g.stats.snapshot()["evictions"] == 7


def test_write_outlasts_a_load_running_in_another_worker(make_arena):
    """Two Groups over one arena are two workers of a host: the writer's value must win."""
    arena = make_arena()
    src = ReadThenWait({"k": b"old"})
    reader = Group("g", src, cache=arena, flight=arena, max_bytes=1 << 20)
    writer = Group("g", src, cache=arena, flight=arena, max_bytes=1 << 20)

    async def go():
        load = asyncio.ensure_future(reader.get("k"))   # holds the host-wide flight, reads "old"
        await asyncio.sleep(0.01)
        await writer.set("k", b"new")
        assert await load == b"old"
        assert arena.get("g", "k") == b"new"
        assert await reader.get("k") == b"new"

    run(go())
