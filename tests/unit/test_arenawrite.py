"""The arena's compiled writer against the Python one: the same operations, the same bytes.

``geecache._arenawrite`` may make a write only where ``Arena.set`` / ``Arena.delete`` would
make it, byte for byte, and must leave everything else untouched for the Python path.  Twin
arenas of one geometry on one clock -- one writing through the compiled writer, one forced onto
the Python path by ``GEECACHE_PURE_PYTHON`` -- take the same seeded random operations (sets of
new and old keys, values up to past a shard's slice, long keys, TTLs, codecs, deletes, reads
that raise reference bytes, time moving past expiries, tight budgets that evict); after each
one every answer, the slot table, the reference bytes, the data area, every log state and the
shards' slot counts must be equal (scripts/compiled_memcheck.sh runs this file under valgrind).
The rest checks what the writer hands back to Python: a lock another process holds or died
holding, and bad arguments.
"""

from __future__ import annotations

import errno
import os
import random
import signal

import pytest

from geecache.errors import ConfigError, GeeCacheError, LockTimeoutError
from geecache.shm import Arena
from geecache.shm.arena import PURE_PYTHON_ENV
from geecache.shm.policy import HOT_SHARE, POLICIES
from geecache.shm.layout import DATA_USED_AT, GSTATE_BANKS, GSTATE_SIZE, LOCK_SIZE, SHARD_COUNT_AT, U64
from tests.support.arena import Clock
from tests.support.proc import fork, reap

_arenawrite = pytest.importorskip("geecache._arenawrite", reason="the compiled writer is not built")

#: Share of the random cases to run (scripts/compiled_memcheck.sh runs a tenth under valgrind).
SCALE = float(os.environ.get("GEECACHE_FUZZ_SCALE", "1"))


class CountingWriter:
    """The arena's writer, its results counted: the tests must reach both of its answers."""

    def __init__(self, writer) -> None:
        self.writer = writer
        self.results: dict[int, int] = {}

    def set(self, *args):
        rc = self.writer.set(*args)
        self.results[rc] = self.results.get(rc, 0) + 1
        return rc

    def delete(self, *args):
        rc = self.writer.delete(*args)
        self.results[("delete", rc)] = self.results.get(("delete", rc), 0) + 1
        return rc

    def take_counted(self):
        return self.writer.take_counted()

    def release(self) -> None:
        self.writer.release()


def twins(make_arena, monkeypatch, size: int, **kw) -> tuple[Arena, Arena, Clock]:
    """(compiled, python, clock): two arenas of one geometry reading one clock."""
    clock = Clock()
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    compiled = make_arena(size, clock=clock, **kw)
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    python = make_arena(size, clock=clock, **kw)
    monkeypatch.delenv(PURE_PYTHON_ENV)
    assert compiled._writer is not None and python._writer is None
    compiled._writer = CountingWriter(compiled._writer)
    return compiled, python, clock


def regions(a: Arena) -> list[tuple[str, bytes]]:
    """What a write may change, by name: slots, reference bytes, data, log states, slot counts."""
    mm = a._mm
    gstate = a._table._gstate_off
    groups = a._table._max_groups
    counts = b"".join(mm[a._locks._off + s * LOCK_SIZE + SHARD_COUNT_AT:][:4] for s in range(a._n_shards))
    return [
        ("slots", mm[a._slots_off:a._refs_off]),
        ("refs", mm[a._refs_off:a._data_off]),
        ("data", mm[a._data_off:a._data_off + U64.unpack_from(mm, DATA_USED_AT)[0]]),  # every group's slices
        ("gstate", mm[gstate:gstate + groups * GSTATE_BANKS * a._n_shards * GSTATE_SIZE]),
        ("slot counts", counts),
    ]


def assert_same(compiled: Arena, python: Arena, what: str) -> None:
    for (name, c), (_n, p) in zip(regions(compiled), regions(python)):
        if c != p:
            at = next(i for i in range(len(c)) if c[i] != p[i])
            pytest.fail(f"after {what}: {name} differ first at byte {at}")


def random_key(rng: random.Random, keys: int) -> str:
    r = rng.random()
    if r < 0.03:
        return "L" * rng.randint(175, 248)  # with the group's prefix, past what C hashes
    if r < 0.06:
        return "é" * rng.randint(1, 30)  # multi-byte UTF-8
    return f"k{rng.randrange(keys)}"


def random_value(rng: random.Random, slice_bytes: int) -> bytes:
    r = rng.random()
    if r < 0.02:
        return bytes(rng.randrange(256) for _ in range(8)) * (slice_bytes // 8 + 1)  # past a slice
    if r < 0.1:
        return b""
    return rng.randbytes(rng.choice((1, 7, 8, 100, 333, 2000)))


@pytest.mark.parametrize("policy", ["lru", "lru2"])
@pytest.mark.parametrize("seed,size,budget,keys,ops", [
    (1, 1 << 20, 96 << 10, 400, 3000),    # tight: most sets past the start evict (Python's part)
    (2, 2 << 20, 256 << 10, 3000, 3000),  # the slot table fills before the bytes do
    (3, 4 << 20, 1 << 20, 300, 1500),     # roomy: nearly every set is the compiled common case
])
def test_the_compiled_writer_leaves_the_arena_as_the_python_one(make_arena, monkeypatch, policy,
                                                                 seed, size, budget, keys, ops):
    compiled, python, clock = twins(make_arena, monkeypatch, size, shards=4)
    for a in (compiled, python):
        a.configure_group("g", budget, policy)
        a.configure_group("other", budget // 2, policy)
    slice_bytes = compiled._group("g").slice
    rng = random.Random(seed)
    for n in range(max(200, int(ops * SCALE))):
        group = "g" if rng.random() < 0.85 else "other"
        key = random_key(rng, keys)
        r = rng.random()
        if r < 0.6:
            value = random_value(rng, slice_bytes)
            ttl = rng.choice((0, 0, 0, 1.5, 30))
            codec = rng.choice((0, 0, 1, 255))
            what = f"op {n}: set {group}/{key[:20]!r} ({len(value)} B, ttl {ttl}, codec {codec})"
            for a in (compiled, python):
                a.set(group, key, value, ttl=ttl, codec=codec)
        elif r < 0.75:
            what = f"op {n}: delete {group}/{key[:20]!r}"
            assert compiled.delete(group, key) == python.delete(group, key), what
        elif r < 0.97:
            what = f"op {n}: get {group}/{key[:20]!r}"
            assert compiled.get_entry(group, key) == python.get_entry(group, key), what
        else:
            clock.now += rng.choice((0.5, 2.0, 60.0))
            what = f"op {n}: the clock moved to {clock.now}"
        assert_same(compiled, python, what)
    for group in ("g", "other"):
        assert compiled.usage(group) == compiled.audit(group) == python.usage(group)
        assert compiled.stats(group) == python.stats(group)
    results = compiled._writer.results
    assert results.get(0, 0) > 0, results  # stored in C
    if seed == 1 and SCALE >= 1:  # a tenth of the tight case does not fill its budget
        assert results.get(_arenawrite.COUNTED, 0) > 0, results  # stored in C after evicting
    assert results.get(_arenawrite.NOT_HANDLED, 0) > 0, results  # left to Python
    assert results.get(("delete", 1), 0) > 0 and results.get(("delete", 0), 0) > 0, results


def test_the_flight_search_finds_what_the_bytes_search_finds(make_arena, monkeypatch):
    """``Flight.loading`` through ``find_u64`` answers as the search of the table's bytes does:
    the same first whole word, never bytes straddling two words, nothing past the table."""
    compiled, python, _clock = twins(make_arena, monkeypatch, 1 << 20)
    rng = random.Random(7)
    cf, pf = compiled._flight, python._flight
    assert cf._find_u64 is not None and pf._find_u64 is None
    me = os.getpid()
    for round_ in range(max(20, int(200 * SCALE))):
        words = [0] * cf._slots
        for _ in range(rng.choice((0, 1, 5, 60, cf._slots))):
            words[rng.randrange(cf._slots)] = rng.getrandbits(64) or 1
        for f in (cf, pf):
            for i, w in enumerate(words):
                f._put(i, w, me if w else 0)
        table = b"".join(w.to_bytes(8, "little") for w in words)
        needles = [w for w in words if w][:5] + [rng.getrandbits(64) or 1]
        at = rng.randrange(1, len(table) - 8)  # bytes straddling two words: never a match
        needles.append(int.from_bytes(table[at:at + 8], "little") or 1)
        needles.append(int.from_bytes(compiled._mm[cf._pids_off:cf._pids_off + 8], "little") or 1)
        for h in needles:
            assert cf.loading(h) == pf.loading(h) == (h in words), (round_, h)
    with pytest.raises(ValueError):
        cf._find_u64(len(compiled._mm) - 8, 2, 1)
    with pytest.raises(ValueError):
        cf._find_u64(0, 1 << 62, 1)


@pytest.mark.parametrize("slots", [512, 8])
def test_the_flight_table_claims_and_releases_alike_through_either_search(make_arena, monkeypatch, slots):
    """``try_begin`` and ``end`` find their slots through ``find_u64`` or the bytes search
    (``Flight._index``) and leave the same table, answering alike: a claim, a key already
    claimed, a dead loader's slot taken over, a full table (8 slots), a release of a key
    claimed twice (a table written by an older process)."""
    compiled, python, _clock = twins(make_arena, monkeypatch, 1 << 20, flight_slots=slots)
    cf, pf = compiled._flight, python._flight
    assert cf._find_u64 is not None and pf._find_u64 is None and cf._slots == slots
    rng = random.Random(slots)
    me, dead = os.getpid(), 2 ** 22 + 12345  # (above pid_max's default: never a live process)
    pool = [rng.getrandbits(64) or 1 for _ in range(24)]

    def table(a):
        f = a._flight
        return a._mm[f._off:f._pids_off + 4 * f._slots]

    for n in range(max(300, int(3000 * SCALE))):
        h = rng.choice(pool)
        r = rng.random()
        if r < 0.45:
            assert cf.try_begin(h) == pf.try_begin(h), n
        elif r < 0.85:
            cf.end(h)
            pf.end(h)
        elif r < 0.95:  # a loader that died holding a slot
            i = rng.randrange(slots)
            for f in (cf, pf):
                f._put(i, h, dead)
        else:  # the same hash in two slots, released together
            i, j = rng.sample(range(slots), 2)
            for f in (cf, pf):
                while (k := f._index(h)) >= 0:  # (any claim of it, a dead loader's too)
                    f._put(k, 0, 0)
                f._put(i, h, me)
                f._put(j, h, me)
                assert f._index(h) == min(i, j) and f._index(h, min(i, j) + 1) == max(i, j)
                f.end(h)
                assert f._index(h) == -1
        assert table(compiled) == table(python), n
        for x in pool[:6] + [0]:
            start = rng.randrange(slots + 1)
            assert cf._index(x, start) == pf._index(x, start), (n, x, start)
            assert cf.loading(x) == pf.loading(x), (n, x)
    assert any(table(compiled)[k] for k in range(8 * slots)), "the table never held a claim"


def test_a_set_that_fails_in_python_changes_nothing_in_c(make_arena, monkeypatch):
    """Bad input is refused before either writer runs: the arenas stay equal and empty."""
    compiled, python, _clock = twins(make_arena, monkeypatch, 1 << 20)
    for a in (compiled, python):
        a.configure_group("g", 256 << 10)
        for bad in ((b"k", b"v"), ("", b"v"), ("k", 12345), ("k" * 300, b"v")):
            with pytest.raises((GeeCacheError, TypeError)):
                a.set("g", *bad)
        with pytest.raises(ConfigError):
            a.set("g", "k", b"v", codec=256)
    assert_same(compiled, python, "refused sets")
    assert compiled.usage("g") == (0, 0)
    assert compiled._writer.results == {}


def _hold_shard_lock(arena: Arena, shard: int, then: str) -> None:
    arena._locks.acquire(shard)
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGSTOP)


def _shard_of(arena: Arena, group: str, key: str) -> int:
    return arena._locate(arena._group(group), key.encode())[1]


@pytest.mark.procs
def test_a_lock_that_died_held_is_repaired_through_the_compiled_writer(make_arena, monkeypatch):
    compiled, _python, _clock = twins(make_arena, monkeypatch, 1 << 20, shards=2)
    compiled.configure_group("g", 256 << 10)
    victims = [f"v{i}" for i in range(40)]
    for key in victims:
        compiled.set("g", key, b"old")
    shard = _shard_of(compiled, "g", "k")
    pid = fork(_hold_shard_lock, compiled, shard, "die")
    status = reap([pid])[pid]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    compiled._writer.results.clear()
    compiled.set("g", "k", b"new")
    assert compiled._writer.results == {errno.EOWNERDEAD: 1}
    assert compiled.repairs() == 1
    assert compiled.get("g", "k") == b"new"
    # The repair emptied the dead holder's shard, and only it.
    for key in victims:
        expect = None if _shard_of(compiled, "g", key) == shard else b"old"
        assert compiled.get("g", key) == expect, key
    assert compiled.usage("g") == compiled.audit("g")


@pytest.mark.procs
def test_a_lock_held_by_a_stopped_process_times_out_through_the_compiled_writer(make_arena, monkeypatch):
    compiled, _python, _clock = twins(make_arena, monkeypatch, 1 << 20, shards=2)
    compiled.configure_group("g", 256 << 10)
    compiled.set("g", "k", b"old")
    shard = _shard_of(compiled, "g", "k")
    pid = fork(_hold_shard_lock, compiled, shard, "stop")
    try:
        _, status = os.waitpid(pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        compiled.lock_timeout = 0.2
        compiled._writer.results.clear()
        with pytest.raises(LockTimeoutError):
            compiled.set("g", "k", b"new")
        with pytest.raises(LockTimeoutError):
            compiled.delete("g", "k")
        assert compiled._writer.results == {errno.EBUSY: 1, ("delete", errno.EBUSY): 1}  # Python waited
    finally:
        os.kill(pid, signal.SIGKILL)
        reap([pid])
    assert compiled.get("g", "k") == b"old"  # nothing was written; the next write repairs the shard
    compiled.set("g", "k", b"new")
    assert compiled.get("g", "k") == b"new"


def test_the_writer_refuses_bad_arguments_and_a_released_mapping(make_arena, monkeypatch):
    compiled, _python, clock = twins(make_arena, monkeypatch, 1 << 20)
    compiled.configure_group("g", 256 << 10)
    writer = compiled._writer.writer
    view = compiled._group("g").write_view
    with pytest.raises(TypeError):
        writer.set(view, "k", b"v", 0, 0.0)  # a key is bytes
    with pytest.raises(TypeError):
        writer.set(view[:6], b"k", b"v", 0, 0.0)
    with pytest.raises(TypeError):
        writer.set(view, b"k", bytearray(b"v"), 0, 0.0)
    with pytest.raises(TypeError):
        writer.delete(view)
    with pytest.raises(ValueError):
        writer.set(view[:7] + (2,), b"k", b"v", 0, 0.0)  # a policy the writer does not know
    with pytest.raises(ValueError):
        _arenawrite.Writer(compiled._mm, (1 << 40, 0, 0, 0, 8, 8, 6), clock, False)
    with pytest.raises(ValueError):
        _arenawrite.Writer(compiled._mm, (0, 0, 0, 0, 0, 8, 6), clock, False)
    with pytest.raises(TypeError):
        _arenawrite.Writer(compiled._mm, (0, 0, 0, 0, 8, 8, 6), None, False)
    released = _arenawrite.Writer(compiled._mm, (compiled._slots_off, compiled._refs_off, compiled._data_off,
                                                 compiled._locks._off, compiled._sps, compiled._n_shards, 6),
                                  clock, False)
    released.release()
    with pytest.raises(ValueError):
        released.set(view, b"k", b"v", 0, 0.0)
    assert writer.set(view, b"k", b"v", 0, 0.0) == 0
    assert compiled.get("g", "k") == b"v"


def test_groups_of_two_log_and_adaptive_policies_are_written_in_python(make_arena):
    a = make_arena(4 << 20)
    for policy in ("s3fifo", "s3lfu", "tinylfu", "adaptive"):
        a.configure_group(policy, 128 << 10, policy)
        assert a._group(policy).write_view is None
    for policy in ("lru", "lru2"):
        a.configure_group(policy, 128 << 10, policy)
        assert a._group(policy).write_view is not None


def test_the_writer_knows_the_policies_it_mirrors():
    assert (POLICIES["lru"].code, POLICIES["lru2"].code) == (0, 1)
    assert _arenawrite.HOT_SHARE == HOT_SHARE


def test_a_clock_that_fails_inside_the_hand_is_raised_and_the_shard_stays_consistent(make_arena, monkeypatch):
    clock = Clock()
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    a = make_arena(1 << 20, clock=clock)
    a.configure_group("g", 64 << 10)
    n = 0
    while a.stats("g")["evictions"] == 0:  # fill with expiring entries until the hand runs
        a.set("g", f"k{n}", b"x" * 200, ttl=60)
        n += 1
    fail = {"on": True}

    def broken() -> float:
        if fail["on"]:
            raise OSError("the clock is gone")
        return clock.now

    a._writer = _arenawrite.Writer(a._mm, (a._slots_off, a._refs_off, a._data_off, a._locks._off, a._sps,
                                           a._n_shards, a._logs.slot_limit), broken, False)
    with pytest.raises(OSError):
        a.set("g", "new", b"x" * 200)
    fail["on"] = False
    assert a.usage("g") == a.audit("g")
    a.set("g", "new", b"x" * 200)
    assert a.get("g", "new") == b"x" * 200
    assert a.usage("g") == a.audit("g")
