"""The arena against a reference model of its eviction policy, in one process.

The policies are CLOCK approximations (see ``geecache.shm.policy``): FIFO
with reinsertion over a circular byte log per (group, shard).  The model
below is that algorithm written with dicts instead of bytes, so the test
pins the exact hits, misses, evictions and expirations of the packed
implementation (hashing, probing, backward-shift deletion, headers).  What
the policies guarantee relative to exact LRU / LRU-2:

- lru: an entry read since the hand last passed it survives that pass
  (second chance); an unread one is evicted in log (insertion) order.
- lru2: new entries are cold; a cold entry read at least once before the
  hand reaches it is promoted to hot, an unread one is evicted; hot entries
  are never evicted by the hand directly: while hot entries exceed
  HOT_SHARE of the slice, unread ones are demoted to cold (and evicted on
  the next pass unless read).  So a scan of cold entries cannot evict hot
  ones, and cold entries always go first.
- expired entries are never returned and get no second chance.

What every cache must do (LocalCache too: get/set/delete/clear, TTLs, the
budget, lru2 against a scan) is in test_cache_contract.py.
"""

from __future__ import annotations

import itertools
import random
import struct
import sys

import pytest

from geecache.errors import ConfigError, InvalidKeyError
from geecache.shm.layout import SKETCH_MAX, entry_size
from geecache.shm import shadow
from geecache.shm.arena import PURE_PYTHON_ENV
from geecache.shm.policy import HOT_SHARE, POLICIES
from geecache.shm.sketch import AGE_PER_SLOT

from tests.support.arena import Clock
from tests.support.proc import fork, reap


class RefLog:
    """Reference: one group's circular log and CLOCK policy, as plain Python."""

    def __init__(self, size: int, policy: str, clock) -> None:
        self.L = size
        self.lru2 = policy == "lru2"
        self.clock = clock
        self.head = self.tail = self.used = 0
        self.hot = 0  # bytes of hot entries
        self.recs: dict[int, dict] = {}  # position -> record
        self.where: dict[str, int] = {}  # live key -> position
        self.evictions = self.expirations = 0

    # -- the Cache surface
    def get(self, key):
        pos = self.where.get(key)
        if pos is None:
            return None
        r = self.recs[pos]
        if r["exp"] and r["exp"] <= self.clock():
            self._kill(key)
            self.expirations += 1
            return None
        r["ref"] = 1
        return r["value"]

    def set(self, key, value, ttl=0):
        if key in self.where:
            self._kill(key)
        esize = entry_size(len(key.encode()), len(value))
        if esize > self.L:
            return
        budget = 3 * len(self.where) + 8
        while True:
            pos = self._fit(esize)
            if pos >= 0:
                break
            if not self.used:
                return
            budget -= 1
            self._reclaim("evict" if budget > 0 else "force")
        self.recs[pos] = dict(kind="entry", key=key, value=value, esize=esize, live=True,
                              hot=False, ref=0, exp=self.clock() + ttl if ttl else 0.0)
        self.where[key] = pos

    def delete(self, key):
        if key not in self.where:
            return False
        self._kill(key)
        return True

    def usage(self):
        return sum(self.recs[p]["esize"] for p in self.where.values()), len(self.where)

    # -- the log
    def _kill(self, key):
        r = self.recs[self.where.pop(key)]
        r["live"] = False
        self.hot -= r["esize"] if r["hot"] else 0

    def _fit(self, esize):
        if not self.used:
            self.head = self.tail = 0
        if self.head > self.tail or not self.used:
            if esize <= self.L - self.head:
                pos = self.head
            elif esize <= self.tail:
                self.recs[self.head] = dict(kind="wrap")
                self.used += self.L - self.head
                pos = 0
            else:
                return -1
        elif self.head < self.tail and esize <= self.tail - self.head:
            pos = self.head
        else:
            return -1
        self.head = (pos + esize) % self.L
        self.used += esize
        return pos

    def _reclaim(self, mode):
        t = self.tail
        r = self.recs.pop(t)
        if r["kind"] == "wrap":
            self.used -= self.L - t
            self.tail = 0
            return
        self.tail = (t + r["esize"]) % self.L
        self.used -= r["esize"]
        if not r["live"]:
            return
        if mode == "evict":
            if r["exp"] and r["exp"] <= self.clock():
                del self.where[r["key"]]
                self.hot -= r["esize"] if r["hot"] else 0
                self.expirations += 1
                return
            if not self.lru2:
                keep, hot = r["ref"], r["hot"]
            elif r["hot"]:
                keep, hot = True, bool(r["ref"]) or self.hot <= self.L * HOT_SHARE
            else:
                keep, hot = r["ref"], True
            if keep:
                pos = self._fit(r["esize"])
                if pos >= 0:
                    self.hot += (hot - r["hot"]) * r["esize"]
                    r.update(ref=0, hot=hot)
                    self.recs[pos] = r
                    self.where[r["key"]] = pos
                    return
        del self.where[r["key"]]
        self.hot -= r["esize"] if r["hot"] else 0
        if mode != "clear":
            self.evictions += 1


@pytest.mark.parametrize("writes", ["compiled", "python"])
@pytest.mark.parametrize("policy", ["lru", "lru2"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_model(make_arena, monkeypatch, policy, seed, writes):
    rng = random.Random(seed)
    clock = Clock()
    if writes == "python":  # every write in Python, as where geecache._arenawrite is not built
        monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    arena = make_arena(8 << 20, clock=clock)
    budget = 24 * 1024  # under 64 KiB: one shard, so one log, like the model
    arena.configure_group("m", budget, policy)
    ref = RefLog(budget & ~7, policy, clock)
    keys = [f"k{i}" for i in range(400)]
    hot = keys[:40]
    for step in range(30_000):
        op = rng.random()
        key = rng.choice(hot) if rng.random() < 0.6 else rng.choice(keys)
        if op < 0.55:
            assert arena.get("m", key) == ref.get(key), f"step {step} get {key}"
        elif op < 0.9:
            value = (key * 40)[: rng.choice([1, 20, 100, 300, 1500])].encode() + bytes([step % 256])
            ttl = rng.choice([0, 0, 0, 5, 50])
            arena.set("m", key, value, ttl=ttl)
            ref.set(key, value, ttl)
        elif op < 0.97:
            assert arena.delete("m", key) == ref.delete(key)
        else:
            clock.now += rng.choice([1, 3, 10])
        if step % 997 == 0:
            assert arena.usage("m") == ref.usage() == arena.audit("m")
    stats = arena.stats("m")
    assert (stats["evictions"], stats["expirations"]) == (ref.evictions, ref.expirations)
    assert ref.evictions > 1000 and ref.expirations > 10  # the run exercised both


def test_codec_travels_with_value(make_arena):
    arena = make_arena()
    arena.configure_group("c", 1 << 20)
    arena.set("c", "k", b"\x28\xb5", codec=3)
    assert arena.get_entry("c", "k") == (b"\x28\xb5", 3, 0.0)
    arena.set("c", "k", b"plain")
    assert arena.get_entry("c", "k") == (b"plain", 0, 0.0)


def test_bad_input_is_named(make_arena):
    # The item limit and unknown groups: test_cache_contract.py (for every cache).
    arena = make_arena()
    arena.configure_group("g", 1 << 20)
    for bad in ("", "x" * 251, 5):
        with pytest.raises(InvalidKeyError):
            arena.set("g", bad, b"v")
        with pytest.raises(InvalidKeyError):
            arena.get("g", bad)
    with pytest.raises(ConfigError):
        arena.configure_group("g", 2 << 20)  # a different budget for an existing group
    with pytest.raises(ConfigError):
        arena.configure_group("h", 1 << 20, "fifo")
    with pytest.raises(ConfigError):
        arena.configure_group("huge", 1 << 40)
    arena.configure_group("g", 1 << 20)  # the same again is fine (every worker calls it)


# ---- s3fifo: two logs per slice and a ghost set (policy.S3Fifo).  The
# packed structure is pinned by invariants and behaviour rather than an
# exact model: values always the last set, usage == audit, every entry in
# the log its flags say, a scan leaving the main log alone, the ghost.

def _in_main(arena, group, key):
    """Whether *key*'s entry is in the group's main log (``F_HOT``), None if absent."""
    g = arena._group(group)
    kb = key.encode()
    h, s, home = arena._locate(g, kb)
    i = arena._slots.find(s, h, kb, g.idx, home)
    return None if i < 0 else arena._logs.view_of(g, s, i) is g.main


@pytest.mark.parametrize("policy", ["s3fifo", "s3lfu", "tinylfu", "adaptive"])
def test_two_log_random_ops_keep_values_and_accounting(make_arena, policy):
    rng = random.Random(5)
    clock = Clock()
    arena = make_arena(8 << 20, clock=clock)
    arena.configure_group("m", 24 * 1024, policy)
    latest: dict[str, tuple[bytes, float]] = {}
    keys = [f"k{i}" for i in range(400)]
    hot = keys[:40]
    for step in range(20_000):
        op = rng.random()
        key = rng.choice(hot) if rng.random() < 0.6 else rng.choice(keys)
        if op < 0.55:
            got = arena.get("m", key)
            value, exp = latest.get(key, (None, 0))
            # A miss is always allowed (evicted); a hit is the latest value, unexpired.
            assert got is None or (got == value and not (exp and exp <= clock.now)), step
        elif op < 0.9:
            value = (key * 40)[: rng.choice([1, 20, 100, 300, 1500, 3000])].encode() + bytes([step % 256])
            ttl = rng.choice([0, 0, 0, 5, 50])
            arena.set("m", key, value, ttl=ttl)
            latest[key] = (value, clock.now + ttl if ttl else 0)
        elif op < 0.97:
            arena.delete("m", key)
            latest.pop(key, None)
        else:
            clock.now += rng.choice([1, 3, 10])
        if step % 997 == 0:
            assert arena.usage("m") == arena.audit("m")
    g = arena._group("m")
    (s,) = g.shards
    small, main = arena._logs.state(g, s), arena._logs.state(g.main, s)
    assert small[5] == 0 and main[5] == main[3] > 0  # main-log bytes are all F_HOT, small none
    assert arena.stats("m")["evictions"] > 1000


@pytest.mark.parametrize("policy", ["s3fifo", "s3lfu", "tinylfu", "adaptive"])
def test_two_log_scan_does_not_flush_the_main_queue(make_arena, policy):
    arena = make_arena(8 << 20)
    budget = 60 * 1024  # one shard: a small log of ~6 KiB, a main log of ~54 KiB
    arena.configure_group("s", budget, policy)
    value = b"v" * 100
    hot = [f"hot{i}" for i in range(200)]  # ~28 KiB: fits the main log
    for _ in range(3):
        for k in hot:
            if arena.get("s", k) is None:
                arena.set("s", k, value)
    for i in range(5_000):  # a one-time scan ten times the group's size
        arena.set("s", f"scan{i}", value)
    # The hot keys still in the small log were read: its hand promoted them.
    assert all(_in_main(arena, "s", k) for k in hot)
    assert all(arena.get("s", k) == value for k in hot)
    assert sum(_in_main(arena, "s", f"scan{i}") is True for i in range(5_000)) < 400


@pytest.mark.parametrize("policy", ["s3fifo", "s3lfu"])
def test_two_log_ghost_sends_a_returning_key_to_main(make_arena, policy):
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, policy)
    value = b"v" * 100
    for i in range(2_000):  # fill both logs: the small log now evicts to the ghost
        arena.set("s", f"fill{i}", value)
    arena.set("s", "back", value)
    assert _in_main(arena, "s", "back") is False  # a new key enters the small log
    for i in range(100):  # more than the small log holds, unread: "back" is evicted
        arena.set("s", f"more{i}", value)
    assert arena.get("s", "back") is None
    arena.set("s", "back", value)  # remembered: straight to the main log
    assert _in_main(arena, "s", "back") is True
    arena.set("s", "new", value)
    assert _in_main(arena, "s", "new") is False


# ---- s3lfu: S3-FIFO with a TinyLFU admission sketch (policy.S3Lfu, sketch.py).

@pytest.mark.parametrize("policy", ["s3fifo", "s3lfu"])
def test_s3lfu_admits_a_frequent_key_the_small_log_would_evict(make_arena, policy):
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, policy)
    value = b"v" * 100
    for i in range(2_000):  # both logs full of keys written once, never read
        arena.set("s", f"fill{i}", value)
    g = arena._group("s")
    h, s, _home = arena._locate(g, b"often")
    arena._logs._sketch.add(s, h, 5)  # as the hand folds reads of an earlier stay in
    arena.set("s", "often", value)
    assert _in_main(arena, "s", "often") is False
    for i in range(100):  # past the small log's size, unread: "often" meets its hand
        arena.set("s", f"more{i}", value)
    if policy == "s3lfu":  # counted 5 times against a tail never read: it takes the place
        assert _in_main(arena, "s", "often") is True
        assert arena.get("s", "often") == value
    else:  # S3-FIFO evicts an unread entry from the small log (to the ghost)
        assert arena.get("s", "often") is None
    # A key never read loses against a main log of keys never read (a tie keeps the victim).
    assert sum(_in_main(arena, "s", f"more{i}") is True for i in range(100)) == 0


# ---- tinylfu: W-TinyLFU in a window log and a main log (policy.TinyLfu, log.py _tail_windowed).

def test_tinylfu_admits_a_key_missed_often_and_keeps_the_victim_on_a_tie(make_arena):
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, "tinylfu")
    value = b"v" * 100
    for i in range(2_000):  # both logs full of keys written once, never read
        arena.set("s", f"fill{i}", value)
    for _ in range(5):  # five misses of one key: the sketch counts each write of a new key
        arena.set("s", "often", value)
        arena.delete("s", "often")
    arena.set("s", "often", value)
    assert _in_main(arena, "s", "often") is False  # a new key enters the window
    for i in range(20):  # past the window's few entries, unread: "often" meets its hand
        arena.set("s", f"more{i}", value)
    assert _in_main(arena, "s", "often") is True  # counted more often than the victim: admitted
    assert arena.get("s", "often") == value
    # A key missed once ties with a victim missed once: the victim stays, the key is evicted
    # (but for the few victims whose one count a halving of the sketch cleared).
    assert sum(arena.get("s", f"more{i}") is not None for i in range(10)) <= 3
    assert arena.usage("s") == arena.audit("s")


def test_tinylfu_ghost_remembers_only_the_last_few_evicted_keys(make_arena):
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, "tinylfu")
    value = b"v" * 100
    for i in range(2_000):  # both logs full: the window evicts to the ghost
        arena.set("s", f"fill{i}", value)
    for name, later in (("soon", 0), ("late", 200)):
        arena.set("s", name, value)
        for i in range(12):  # past the window's entries, unread: evicted (a tie keeps the victim)
            arena.set("s", f"{name}-push{i}", value)
        assert arena.get("s", name) is None
        for i in range(later):  # more evicted keys recorded after it
            arena.set("s", f"{name}-after{i}", value)
        arena.set("s", name, value)
        # Back within a twentieth of the main log's entry count: straight to the main log.
        assert _in_main(arena, "s", name) is (name == "soon")


@pytest.mark.parametrize("policy", ["lru", "s3fifo", "tinylfu"])
def test_tinylfu_keeps_a_fixed_part_of_a_loop_larger_than_the_cache(make_arena, policy):
    """A loop over 1.2x the cache: CLOCK misses every time; TinyLFU keeps most of it in place."""
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, policy)
    value = b"v" * 100
    for i in range(2_000):
        arena.set("s", f"fill{i}", value)
    held = arena.usage("s")[1]
    keys = [f"loop{i}" for i in range(held * 6 // 5)]
    hits = 0
    for rnd in range(20):
        for k in keys:
            if arena.get("s", k) is None:
                arena.set("s", k, value)
            elif rnd >= 10:
                hits += 1
    ratio = hits / (10 * len(keys))
    if policy == "tinylfu":
        assert ratio > 0.6, ratio
    else:
        assert ratio < 0.5, ratio
    assert arena.usage("s") == arena.audit("s")


def test_sketch_counts_saturate_and_halve_once_a_period_is_up(make_arena):
    arena = make_arena(4 << 20, shards=1)
    sketch = arena._logs._sketch
    h = 0x1234_5678_9ABC_DEF1
    assert sketch.estimate(0, h) == 0
    sketch.add(0, h, 10)
    assert sketch.estimate(0, h) == 10
    sketch.add(0, h, 100)
    assert sketch.estimate(0, h) == SKETCH_MAX + 1  # the doorkeeper's bit, then the counters
    # No slot in use: the period is the floor's, AGE_PER_SLOT x 64 counts past the doorkeeper;
    # 109 are in (h's first count set its doorkeeper bit), and each other key's 2 add one.
    other = itertools.count(1)
    for _ in range(AGE_PER_SLOT * 64 - 109 - 1):
        sketch.add(0, next(other) * 0x9E37_79B9_7F4A_7C15 & (1 << 64) - 1, 2)
    assert sketch.estimate(0, h) == SKETCH_MAX + 1
    sketch.add(0, next(other) * 0x9E37_79B9_7F4A_7C15 & (1 << 64) - 1, 2)  # the period's last count
    assert sketch.estimate(0, h) == SKETCH_MAX // 2  # counters halved, the doorkeeper cleared


@pytest.mark.parametrize("policy", ["s3lfu", "tinylfu", "adaptive"])
def test_hit_writes_only_the_reference_byte(make_arena, policy):
    """The lock-free hit's whole policy step: raise the slot's reference byte, up to ref_max."""
    arena = make_arena(4 << 20, shards=1)
    arena.configure_group("s", 60 * 1024, policy)
    for i in range(50):
        arena.set("s", f"k{i}", b"v" * 100)
    mm = arena._mm
    sketch_bytes = lambda: bytes(mm[arena._logs._sketch._off:arena._data_off])  # noqa: E731
    refs = lambda: bytes(mm[arena._refs_off:arena._refs_off + arena._sps])  # noqa: E731
    before_sketch, before_refs = sketch_bytes(), refs()
    ref_max = POLICIES[policy].ref_max
    assert ref_max == {"s3lfu": 3, "tinylfu": 15, "adaptive": 15}[policy]
    for _ in range(ref_max + 2):
        for i in range(50):
            assert arena.get("s", f"k{i}") is not None
    after = refs()
    assert sketch_bytes() == before_sketch
    assert sum(after) - sum(before_refs) == 50 * ref_max  # each hit slot counted up to ref_max, no further
    assert max(after) == ref_max
    # Nothing else in the segment changed, but for adaptive this process's sample ring
    # (60 KiB: every key is sampled, so every hit adds a record).
    whole = bytes(mm)
    for _ in range(2):
        for i in range(50):
            arena.get("s", f"k{i}")
    changed = [i for i, (a, b) in enumerate(zip(whole, bytes(mm))) if a != b]
    g = arena._group("s")
    if policy == "adaptive":
        ring = g.rings + arena._stats.row_index() * shadow.RING_BLOCK
        assert changed and all(ring <= i < ring + shadow.RING_BLOCK for i in changed)
    else:
        assert changed == []


# ---- adaptive: tinylfu whose admission level miniature simulations choose (shadow.py).

def _level(arena, group):
    g = arena._group(group)
    return arena._mm[g.level_at]


def test_adaptive_level_all_admits_every_candidate_and_ghost_heeds_the_full_window(make_arena):
    """The level byte decides: ALL lets a candidate a tie would refuse in; GHOST heeds a key
    set again later than tinylfu's short ghost window."""
    arena = make_arena(8 << 20)
    arena.configure_group("s", 60 * 1024, "adaptive")
    g = arena._group("s")
    g.shadows.drain = lambda: arena._mm[g.level_at]  # the test sets the level, not the miniatures
    value = b"v" * 100
    for i in range(2_000):  # both logs full of keys written once, never read
        arena.set("s", f"fill{i}", value)
    arena._mm[g.level_at] = shadow.ALL
    for i in range(20):  # through the window unread: each ties its victim, and enters anyway
        arena.set("s", f"all{i}", value)
    assert sum(_in_main(arena, "s", f"all{i}") is True for i in range(10)) == 10
    for level, in_main in ((shadow.FREQ, False), (shadow.GHOST, True)):
        arena._mm[g.level_at] = level
        name = f"back{level}"
        arena.set("s", name, value)
        for i in range(12):  # past the window's entries, unread: refused (a tie), to the ghost
            arena.set("s", f"{name}-push{i}", value)
        assert arena.get("s", name) is None
        for i in range(200):  # more refused keys: past a twentieth of the window, not the whole
            arena.set("s", f"{name}-after{i}", value)
        arena.set("s", name, value)
        assert _in_main(arena, "s", name) is in_main
    assert arena.usage("s") == arena.audit("s")


def _ring(arena, g, row=None):
    """(count, records) of *g*'s sample ring of stat row *row* (this process's by default)."""
    row = arena._stats.row_index() if row is None else row
    at = g.rings + row * shadow.RING_BLOCK
    n = int.from_bytes(arena._mm[at:at + 8], sys.byteorder)
    recs = [struct.unpack_from("QQ", arena._mm, at + shadow.RING_HEAD + i % shadow.SAMPLE_RING * 16)
            for i in range(max(0, n - shadow.SAMPLE_RING), n)]
    return n, recs


def test_adaptive_samples_a_share_of_keys_into_its_ring_and_other_policies_none(make_arena):
    arena = make_arena(8 << 20)
    budget = 2_000 * entry_size(8, 100)
    arena.configure_group("a", budget, "adaptive")
    arena.configure_group("t", budget, "tinylfu")
    a, t = arena._group("a"), arena._group("t")
    assert t.shadows is None and t.rings == 0
    assert shadow.sample_shift(budget) == 2  # a quarter of the keys: miniatures of ~470 entries
    for i in range(4_000):
        arena.set("a", f"{i:08d}", b"v" * 100)
        arena.set("t", f"{i:08d}", b"v" * 100)
    before, _ = _ring(arena, a)
    hits = [f"{i:08d}" for i in range(3_000, 4_000) if arena.get("a", f"{i:08d}") is not None]
    n, recs = _ring(arena, a)
    sampled = n - before
    assert 0.15 * len(hits) < sampled < 0.35 * len(hits)
    want = [arena._locate(a, k.encode())[0] for k in hits]
    assert [h for h, _ in recs[-sampled:]] == [h for h in want if not h & a.sample_mask]
    assert all(size == entry_size(8, 100) for _h, size in recs)
    # The miniatures read every ring from where they last looked: these hits, then nothing.
    got = a.shadows.collect()
    assert [h for h, _ in got[-sampled:]] == [h for h, _ in recs[-sampled:]]
    assert a.shadows.collect() == []


@pytest.mark.procs
def test_adaptive_miniatures_see_what_other_processes_sampled(make_arena):
    """Each process records in its own ring; every process's miniatures read all of them, so
    a worker's choice rests on the whole host's requests, not its own share."""
    arena = make_arena(8 << 20)
    budget = 2_000 * entry_size(8, 100)
    arena.configure_group("a", budget, "adaptive")
    a = arena._group("a")
    assert a.shadows.collect() == []  # nothing recorded yet
    keys = [f"{i:08d}" for i in range(2_000)]

    def worker():
        for k in keys:
            if arena.get("a", k) is None:
                arena.set("a", k, b"v" * 100)

    status = reap([fork(worker) for _ in range(2)])
    assert all(st == 0 for st in status.values()), status
    got = a.shadows.collect()
    mine = arena._stats.row_index()
    rows = {r for r in range(arena._stats._max_procs) if r != mine and _ring(arena, a, r)[0]}
    assert len(rows) == 2  # each child claimed a row and wrote its ring
    want = sum(not arena._locate(a, k.encode())[0] & a.sample_mask for k in keys)
    assert len(got) == 2 * want  # one set (the first child) or one hit (the second) per key each
    assert arena._mm[a.level_at] in shadow.LEVELS


def _run(arena, group, keys):
    hits = 0
    for k in keys:
        if arena.get(group, k) is None:
            arena.set(group, k, b"v" * 100)
        else:
            hits += 1
    return hits / len(keys)


def test_adaptive_chooses_frequency_on_a_loop_and_admit_all_when_popularity_shifts(make_arena):
    """In a real arena, in one process: the miniatures pick FREQ for a loop 1.2x the cache
    (where admitting every candidate is CLOCK's worst case) and ALL for a hot set that keeps
    moving (where frequency counted in the phase before holds the cache back)."""
    arena = make_arena(8 << 20)
    budget = 2_000 * entry_size(8, 100)
    rng = random.Random(3)
    loop = [f"{30_000_000 + i % 2_400:08d}" for i in range(2_400 * 16)]
    arena.configure_group("loop", budget, "adaptive")
    arena.configure_group("loop-all", budget, "adaptive")
    g_all = arena._group("loop-all")
    g_all.shadows.drain = lambda: shadow.ALL  # what the loop costs at the wrong level
    assert _run(arena, "loop", loop) > 0.5
    assert _level(arena, "loop") == shadow.FREQ
    assert _run(arena, "loop-all", loop) < 0.2
    # A hot set of 1,500 keys (under the cache) that moves to new keys every 4,000 requests,
    # and a tail of keys seen once in a while.
    shifting = []
    for phase in range(12):
        hot = [f"{(phase + 1) * 1_000_000 + j:08d}" for j in range(1_500)]
        for _ in range(4_000):
            if rng.random() < 0.8:
                shifting.append(hot[int(rng.random() ** 2 * len(hot))])
            else:
                shifting.append(f"{rng.randrange(90_000_000, 99_000_000):08d}")
    arena.configure_group("shift", budget, "adaptive")
    seen = []
    g = arena._group("shift")
    drain = g.shadows.drain
    g.shadows.drain = lambda: seen.append(drain()) or seen[-1]
    _run(arena, "shift", shifting)
    late = seen[len(seen) // 2:]
    assert late.count(shadow.ALL) > 0.8 * len(late), late
    assert _level(arena, "shift") == shadow.ALL
