"""The previous owner's half of a warm-up: its hottest entries, by the eviction policy's own state.

A real arena (one shared-memory segment, in this process) and the in-process cache; the
cluster tests of the warm-up are in ``tests/cluster/test_handoff.py``.
"""

from __future__ import annotations

import time

import pytest

from geecache.cache import LocalCache
from geecache.shm import Arena


@pytest.fixture
def arena():
    a = Arena.create(8 << 20)
    try:
        yield a
    finally:
        a.close()
        a.unlink()


@pytest.mark.parametrize("policy", ["lru", "lru2", "s3fifo"])
def test_read_entries_come_first_then_the_newest(arena, policy):
    arena.configure_group("g", 1 << 20, policy)
    for i in range(500):
        arena.set("g", f"k{i}", b"v%d" % i)
    read = {f"k{i}" for i in range(0, 500, 50)}
    for key in read:
        assert arena.get("g", key) is not None
    entries, truncated = arena.hottest("g", lambda key: True, 1 << 30, time.monotonic() + 10)
    assert not truncated and len(entries) == 500
    assert {key for key, *_ in entries[:len(read)]} == read
    rest = [int(key[1:]) for key, *_ in entries[len(read):]]
    assert rest[0] > rest[-1]  # unread ones newest first (one log per shard: roughly)
    assert all(value == b"v" + key[1:].encode() for key, value, _c, _e in entries)


def test_the_scan_keeps_to_its_filter_and_byte_budget_and_raises_no_reference(arena):
    arena.configure_group("g", 1 << 20, "lru")
    for i in range(300):
        arena.set("g", f"k{i}", b"x" * 100)
    entries, truncated = arena.hottest("g", lambda key: key.endswith("7"), 1000, time.monotonic() + 10)
    assert truncated and len(entries) == 10 and all(key.endswith("7") for key, *_ in entries)
    # Nothing it sent counts as read: had the scan raised their reference bytes, they would
    # now rank above every unread entry.
    every, _ = arena.hottest("g", lambda key: True, 1 << 30, time.monotonic() + 10)
    assert {key for key, *_ in every[:10]} != {key for key, *_ in entries}


def test_expired_entries_are_not_sent():
    now = [1000.0]
    with Arena.create(4 << 20, clock=lambda: now[0]) as a:
        a.configure_group("g", 1 << 20, "lru")
        a.set("g", "short", b"s", ttl=5)
        a.set("g", "long", b"l", ttl=50)
        now[0] += 10
        entries, _ = a.hottest("g", lambda key: True, 1 << 20, time.monotonic() + 10)
        assert [(key, exp) for key, _v, _c, exp in entries] == [("long", 1050.0)]


def test_local_cache_sends_the_most_recently_used_first():
    cache = LocalCache()
    cache.configure_group("g", 1 << 20)
    for key in ("a", "b", "c"):
        cache.set("g", key, key.encode())
    cache.get("g", "a")
    entries, truncated = cache.hottest("g", lambda key: key != "b", 1 << 20, time.monotonic() + 10)
    assert [key for key, *_ in entries] == ["a", "c"] and not truncated
