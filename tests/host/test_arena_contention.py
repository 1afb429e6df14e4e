"""The arena's contention counters, across real processes: shard-lock waits and their time,
seqlock conflicts, flight-table collisions; each counted in the waiting process's own row,
and only on the slow branch (an uncontended operation counts nothing)."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from geecache.errors import LockTimeoutError
from geecache.shm.layout import FLIGHT, RING, SLOT_SIZE, SLOT_VERSION_AT, U32
from geecache.shm.stats import CONTENTION_FIELDS
from tests.support.proc import child_holding, fork, reap

pytestmark = pytest.mark.procs


def mine(arena) -> dict[str, int]:
    """This process's contention row (claimed if need be)."""
    arena.register_process()
    (row,) = [r for r in arena.contention() if r["pid"] == os.getpid()]
    return row


def key_in_shard(arena, group: str, shard: int) -> str:
    """A key of *group* whose shard is *shard*."""
    g = arena._group(group)
    return next(k for k in (f"k{i}" for i in itertools.count()) if arena._locate(g, k.encode())[1] == shard)


def test_uncontended_operations_count_nothing(make_arena):
    arena = make_arena(shards=4)
    arena.configure_group("c", 1 << 20)
    for i in range(500):
        arena.set("c", f"k{i}", b"v" * 50)
        assert arena.get("c", f"k{i}") == b"v" * 50
        assert arena.try_begin("c", f"m{i}")
        arena.end("c", f"m{i}")
    arena.delete("c", "k0")
    row = mine(arena)
    assert set(row) == {"pid", *CONTENTION_FIELDS}
    assert all(row[f] == 0 for f in CONTENTION_FIELDS), row


def test_a_shard_lock_held_by_another_process_counts_a_wait_and_its_time(make_arena):
    arena = make_arena(shards=2)
    arena.configure_group("c", 1 << 20)
    key = key_in_shard(arena, "c", 0)
    arena.lock_timeout = 0.05
    with child_holding(arena._locks.held(0).__enter__) as holder:
        with pytest.raises(LockTimeoutError):
            arena.set("c", key, b"v")  # waits for shard 0, gives up after 50 ms
        arena.set("c", key_in_shard(arena, "c", 1), b"v")  # shard 1 is free: no wait
        row = mine(arena)
        assert row["shard_lock_waits"] == 1 and row["flight_lock_waits"] == 0
        # The whole timed wait is in the count (a timedlock waits at least until its deadline).
        assert row["shard_lock_wait_ns"] >= 40_000_000
        # Counted in the waiter's row, not the holder's.
        assert [r for r in arena.contention() if r["pid"] == holder] == []
    arena.lock_timeout = None
    arena.set("c", key, b"v")  # freed (and repaired) with its holder's exit
    assert mine(arena)["shard_lock_waits"] == 1


def test_a_wait_for_the_flight_lock_is_counted_apart_and_the_ring_lock_not_at_all(make_arena):
    arena = make_arena(shards=2)
    flight_lock, ring_lock = 2 + FLIGHT, 2 + RING
    for lock in (flight_lock, ring_lock):
        with child_holding(arena._locks.held(lock).__enter__):
            with pytest.raises(LockTimeoutError):
                with arena._locks.held(lock, timeout=0.05):
                    pass
    row = mine(arena)
    assert (row["shard_lock_waits"], row["flight_lock_waits"]) == (0, 1)
    assert row["flight_lock_wait_ns"] >= 40_000_000


def test_a_read_of_a_slot_mid_write_counts_a_seqlock_conflict(make_arena):
    arena = make_arena(shards=2)
    arena.configure_group("c", 1 << 20)
    arena.set("c", "k", b"value")
    g = arena._group("c")
    h, s, home = arena._locate(g, b"k")
    i = arena._slots.find(s, h, b"k", g.idx, home)
    at = arena._slots_off + (s * arena._sps + i) * SLOT_SIZE + SLOT_VERSION_AT
    ver = U32.unpack_from(arena._mm, at)[0]
    # A writer's first step (the seqlock protocol): the version goes odd before the fields change.
    U32.pack_into(arena._mm, at, ver + 1)
    assert arena.get("c", "k") is None
    assert arena.get("c", "k") is None
    assert mine(arena)["seqlock_conflicts"] == 2
    U32.pack_into(arena._mm, at, ver + 2)  # the writer's last step
    assert arena.get("c", "k") == b"value"
    assert mine(arena)["seqlock_conflicts"] == 2


def test_readers_racing_a_writer_of_the_same_key_count_conflicts(make_arena, tmp_path):
    arena = make_arena(shards=1)
    arena.configure_group("c", 1 << 20)
    arena.set("c", "hot", b"x" * 200)
    stop = tmp_path / "stop"

    def writer() -> None:
        deadline = time.monotonic() + 60
        for n in itertools.count():
            arena.set("c", "hot", bytes([65 + n % 26]) * 200)
            if n % 256 == 0 and (stop.exists() or time.monotonic() > deadline):
                return

    pid = fork(writer)
    try:
        misses, deadline = 0, time.monotonic() + 60
        while mine(arena)["seqlock_conflicts"] == 0:
            assert time.monotonic() < deadline, "no read ever met the writer"
            for _ in range(1000):
                v = arena.get("c", "hot")
                misses += v is None
                assert v is None or v == v[:1] * 200  # never a torn value
    finally:
        stop.write_text("1")
        status = reap([pid], timeout=60)
    assert list(status.values()) == [0]
    # Every conflict is a miss the reader answered (a miss may also be a moment with no entry).
    assert 0 < mine(arena)["seqlock_conflicts"] <= misses


def test_a_key_loading_in_another_process_counts_a_flight_collision(make_arena):
    arena = make_arena(flight_slots=1)
    arena.configure_group("c", 1 << 20)
    with child_holding(lambda: arena.try_begin("c", "a")):
        assert not arena.try_begin("c", "a")  # loading in the child: a collision
        assert not arena.try_begin("c", "a")
        assert arena.try_begin("c", "b")  # the one entry is taken by a live loader: untracked
        row = mine(arena)
        assert (row["flight_collisions"], row["flight_full"]) == (2, 1)

    def own_load() -> None:
        assert arena.try_begin("c", "z")
        assert not arena.try_begin("c", "z")  # its own load again: no collision
        assert mine(arena)["flight_collisions"] == 0
        arena.end("c", "z")

    assert list(reap([fork(own_load)], timeout=20).values()) == [0]
