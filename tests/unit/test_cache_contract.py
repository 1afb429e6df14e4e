"""One contract, every cache: the same tests run against each implementation (cachetools-style).

``geecache.cache.Cache`` has two implementations: the in-process
``LocalCache`` (the library on its own) and the shared-memory ``Arena`` (the
production cache; a fresh one per test, closed and unlinked after).  Every
test below takes the ``backend`` fixture and so runs once per implementation.

Where an implementation legitimately differs, the reason is written once, in
``DIFFERENCES``; where it falls short of the contract, in ``SHORTFALLS``
(those tests are xfail(strict=True): fixing the code makes them fail until
the entry is removed).  Arena-only behaviour (the reference model of its
policies, codec ids, key checks, processes) stays in test_arena_model.py and
test_arena_procs.py.
"""

from __future__ import annotations


import pytest

from geecache.cache import LocalCache
from geecache.limits import POLICIES
from geecache.errors import UnknownGroupError, ValueTooLargeError
from geecache.shm.arena import PURE_PYTHON_ENV
from geecache.shm.layout import entry_size
from geecache.stats import STAT_FIELDS
from tests.support.arena import Clock

#: Where an implementation legitimately differs from the contract: backend -> point -> reason.
DIFFERENCES = {
    "local": {
        "lru2": "LocalCache accepts lru2 and behaves as lru: LCache's two lists live in the arena "
                "(see LocalCache's docstring)",
        "s3fifo": "LocalCache accepts s3fifo and behaves as lru: S3-FIFO's queues and ghost set live "
                  "in the arena (see LocalCache's docstring)",
        "s3lfu": "LocalCache accepts s3lfu and behaves as lru: S3-FIFO's queues and the frequency "
                 "sketch live in the arena (see LocalCache's docstring)",
        "tinylfu": "LocalCache accepts tinylfu and behaves as lru: W-TinyLFU's window, main log and "
                   "frequency sketch live in the arena (see LocalCache's docstring)",
        "adaptive": "LocalCache accepts adaptive and behaves as lru: its window, main log, sketch and "
                    "miniature simulations live in the arena (see LocalCache's docstring)",
        "item_limit": "LocalCache has no item limit of its own: Group enforces it above the cache "
                      "(test_group.py::test_value_over_item_limit)",
    },
    "arena": {},
    "arena-python": {},
}

#: Where an implementation falls short of the contract (a bug, reported): backend -> point -> reason.
SHORTFALLS: dict[str, dict[str, str]] = {
    "local": {},
    "arena": {},
    "arena-python": {},
}

#: A budget under the arena's 64 KiB minimum slice: one shard, so one log, like LocalCache's one list.
SMALL = 32 * 1024


class Backend:
    """One cache implementation as the contract sees it: the cache, its clock, its accounting."""

    def __init__(self, name: str, request, cache, clock: Clock, make) -> None:
        self.name = name
        self.is_arena = name.startswith("arena")
        self.cache = cache
        self.clock = clock
        self._request = request
        self._make = make

    def make(self, **kw):
        """Another cache of this kind on the same clock (arena options such as ``item_limit``)."""
        return self._make(**kw)

    def entry_bytes(self, key: str, value: bytes) -> int:
        """What one entry adds to ``usage()[0]``: key and value bytes, plus the arena's header."""
        kb = key.encode()
        return entry_size(len(kb), len(value)) if self.is_arena else len(kb) + len(value)

    def check(self, group: str) -> tuple[int, int]:
        """``usage(group)``, checked against a full scan where the implementation has one."""
        used = self.cache.usage(group)
        if self.is_arena:
            assert used == self.cache.audit(group)
            assert group in self.cache.groups()
        return used

    def differs(self, point: str) -> bool:
        """True where the implementation legitimately differs on *point* (``DIFFERENCES``).

        The test then asserts the documented difference instead of the contract:
        nothing is skipped, and a difference that quietly went away fails.
        """
        return point in DIFFERENCES[self.name]

    def falls_short(self, point: str) -> None:
        """Expect this test to fail (strictly) where the implementation falls short on *point*."""
        reason = SHORTFALLS[self.name].get(point)
        if reason:
            self._request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(params=["local", "arena", "arena-python"])
def backend(request, monkeypatch) -> Backend:
    """Each cache implementation in turn, on a clock the test moves by hand.

    "arena" makes its common writes in C where ``geecache._arenawrite`` is built;
    "arena-python" is the same arena with every write in Python (``GEECACHE_PURE_PYTHON``).
    """
    clock = Clock()
    if request.param == "local":
        def make(**kw):
            return LocalCache(clock=clock)
    else:
        make_arena = request.getfixturevalue("make_arena")
        if request.param == "arena-python":
            monkeypatch.setenv(PURE_PYTHON_ENV, "1")

        def make(size=8 << 20, **kw):
            return make_arena(size, clock=clock, **kw)
    return Backend(request.param, request, make(), clock, make)


def test_get_set_overwrite_and_missing_keys(backend):
    c = backend.cache
    c.configure_group("g", 1 << 20)
    assert c.get("g", "k") is None and c.get_entry("g", "k") is None
    assert backend.check("g") == (0, 0)
    c.set("g", "k", b"one")
    assert c.get("g", "k") == b"one"
    assert c.get_entry("g", "k") == (b"one", 0, 0.0)
    c.set("g", "k", b"twotwo")  # an overwrite replaces, never adds
    assert c.get("g", "k") == b"twotwo"
    assert backend.check("g") == (backend.entry_bytes("k", b"twotwo"), 1)
    c.set("g", "empty", b"")  # an empty value is a hit, not a miss
    assert c.get("g", "empty") == b""
    assert backend.check("g") == (backend.entry_bytes("k", b"twotwo") + backend.entry_bytes("empty", b""), 2)


def test_delete(backend):
    c = backend.cache
    c.configure_group("g", 1 << 20)
    assert c.delete("g", "never") is False
    c.set("g", "k", b"v")
    assert c.delete("g", "k") is True
    assert c.delete("g", "k") is False
    assert c.get("g", "k") is None
    assert backend.check("g") == (0, 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_clear_delete_and_budget(backend, policy):
    """Many times the budget through two groups: each stays in its budget and uses it."""
    c = backend.cache = backend.make(size=16 << 20)
    c.configure_group("a", 1 << 20, policy)
    c.configure_group("b", 1 << 20)
    for i in range(20_000):
        c.set("a", f"k{i}", b"x" * 100)
        c.set("b", f"k{i}", b"y" * 100)
    nbytes, entries = backend.check("a")
    assert nbytes <= 1 << 20 and entries > 5000
    assert c.delete("a", "k19999") and not c.delete("a", "k19999")
    c.clear("a")
    assert backend.check("a") == (0, 0)
    assert c.get("a", "k19998") is None
    assert c.get("b", "k19998") == b"y" * 100


def test_budget_is_never_exceeded_and_evictions_are_counted(backend):
    c = backend.cache
    c.configure_group("g", SMALL)
    value = b"v" * 100
    keys = [f"k{i}" for i in range(4 * SMALL // 100)]  # about four times the budget
    for n, key in enumerate(keys):
        c.set("g", key, value)
        if n % 50 == 0:
            assert c.usage("g")[0] <= SMALL
    nbytes, entries = backend.check("g")
    assert nbytes <= SMALL and 0 < entries < len(keys)
    present = [k for k in keys if c.get("g", k) is not None]
    assert len(present) == entries and nbytes == sum(backend.entry_bytes(k, value) for k in present)
    assert keys[-1] in present and keys[0] not in present  # the newest stays, the oldest went
    assert c.stats_sink("g").snapshot()["evictions"] >= len(keys) - entries


def test_a_value_larger_than_the_budget_is_not_cached(backend):
    c = backend.cache
    c.configure_group("g", SMALL)
    c.set("g", "k", b"small")
    c.set("g", "k", b"x" * (SMALL + 1))  # under the item limit, over the whole budget
    assert c.get("g", "k") is None  # and the old value is not left behind
    assert backend.check("g") == (0, 0)


def test_a_read_entry_outlives_unread_ones(backend):
    """lru: an entry read since it was written survives eviction that takes older unread ones."""
    c = backend.cache
    c.configure_group("g", SMALL)
    value = b"v" * 100
    fill = SMALL // backend.entry_bytes("k000", value)
    for i in range(fill):
        c.set("g", f"k{i:03}", value)
    assert c.get("g", "k000") == value
    for i in range(fill // 4):  # a quarter of the budget more: the oldest go
        c.set("g", f"n{i:03}", value)
    assert c.get("g", "k000") == value
    assert c.get("g", "k001") is None


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "lru"])
def test_scan_resistant_policy_keeps_hot_entries_through_a_scan(backend, policy):
    c = backend.cache
    budget = SMALL
    c.configure_group("lru", budget, "lru")
    c.configure_group(policy, budget, policy)
    value = b"v" * 100
    for g in ("lru", policy):
        for i in range(50):
            c.set(g, f"hot{i}", value)
        for _ in range(2):
            for i in range(50):
                c.get(g, f"hot{i}")
        for i in range(500):  # a scan about twice the group's size
            c.set(g, f"scan{i}", value)
    survivors = {g: sum(c.get(g, f"hot{i}") is not None for i in range(50)) for g in ("lru", policy)}
    assert survivors["lru"] < 50
    if backend.differs(policy):  # documented: the policy is accepted and behaves as lru
        assert survivors[policy] == survivors["lru"]
    else:
        assert survivors[policy] == 50


def test_ttl_expiry_with_controlled_clock(backend):
    c, clock = backend.cache, backend.clock
    c.configure_group("t", 1 << 20)
    c.set("t", "a", b"1", ttl=10)
    c.set("t", "b", b"2")
    clock.now += 9.5
    assert c.get_entry("t", "a") == (b"1", 0, clock.now + 0.5)
    assert c.get_entry("t", "b") == (b"2", 0, 0.0)
    clock.now += 0.5  # expiry is inclusive: at expire_at the entry is gone
    assert c.get("t", "a") is None
    assert c.get("t", "b") == b"2"
    assert backend.check("t") == (backend.entry_bytes("b", b"2"), 1)
    c.set("t", "a", b"again")  # a set without ttl after expiry lives on
    clock.now += 1000
    assert c.get("t", "a") == b"again"


def test_expirations_are_counted(backend):
    backend.falls_short("expirations")
    c, clock = backend.cache, backend.clock
    c.configure_group("t", 1 << 20)
    c.set("t", "a", b"1", ttl=10)
    clock.now += 10
    assert c.get("t", "a") is None
    assert c.stats_sink("t").snapshot()["expirations"] == 1


def test_value_over_the_item_limit_is_named(backend):
    c = backend.make(item_limit=1000)
    c.configure_group("g", 1 << 20)
    c.set("g", "k", b"old")
    if backend.differs("item_limit"):  # documented: no limit of its own (Group enforces one)
        c.set("g", "k", b"x" * 1001)
        assert c.get("g", "k") == b"x" * 1001
        return
    with pytest.raises(ValueTooLargeError):
        c.set("g", "k", b"x" * 1001)
    c.set("g", "k", b"x" * 1000)  # the limit itself is allowed
    assert c.get("g", "k") == b"x" * 1000


def test_unknown_group_is_named(backend):
    backend.falls_short("unknown_group")
    c = backend.cache
    for op in (lambda: c.get("nope", "k"), lambda: c.set("nope", "k", b"v"),
               lambda: c.delete("nope", "k"), lambda: c.clear("nope"), lambda: c.usage("nope")):
        with pytest.raises(UnknownGroupError):
            op()


def test_unknown_policy_is_refused(backend):
    with pytest.raises(ValueError, match="fifo"):
        backend.cache.configure_group("h", 1 << 20, "fifo")


def test_groups_are_isolated(backend):
    c = backend.cache
    c.configure_group("a", 1 << 20)
    c.configure_group("b", 1 << 20)
    c.set("a", "k", b"in a")
    c.set("b", "k", b"in b, longer")
    assert (c.get("a", "k"), c.get("b", "k")) == (b"in a", b"in b, longer")
    assert backend.check("a") == (backend.entry_bytes("k", b"in a"), 1)
    assert backend.check("b") == (backend.entry_bytes("k", b"in b, longer"), 1)
    assert c.delete("a", "k") is True
    assert c.get("b", "k") == b"in b, longer"
    c.set("a", "k", b"back")
    c.clear("b")
    assert c.get("a", "k") == b"back" and c.get("b", "k") is None
    c.configure_group("a", 1 << 20)  # declaring a group again (every worker does) keeps its entries
    assert c.get("a", "k") == b"back"


def test_stats_sinks_count_per_group(backend):
    c = backend.cache
    c.configure_group("a", 1 << 20)
    c.configure_group("b", 1 << 20)
    a = c.stats_sink("a")
    assert a.snapshot() == dict.fromkeys(STAT_FIELDS, 0)
    a.add("gets", 3)
    a.add("gets")
    c.stats_sink("a").add("loads", 2)  # another sink for the same group adds to the same counts
    assert (a.snapshot()["gets"], a.snapshot()["loads"]) == (4, 2)
    assert c.stats_sink("b").snapshot() == dict.fromkeys(STAT_FIELDS, 0)
    # The group's counters over every process of the cache: here, this process's.
    assert c.stats("a") == a.snapshot() and c.stats("b") == dict.fromkeys(STAT_FIELDS, 0)


def test_an_entry_keeps_the_codec_id_it_was_stored_with(backend):
    """A Group whose cache keeps compressed values reads each entry by its own codec id."""
    c = backend.cache
    c.configure_group("g", 1 << 20)
    c.set("g", "packed", b"\x28\xb5\x2f\xfd", 60, codec=3)
    c.set("g", "raw", b"plain")
    assert c.get_entry("g", "packed") == (b"\x28\xb5\x2f\xfd", 3, backend.clock() + 60)
    assert c.get_entry("g", "raw") == (b"plain", 0, 0.0)
    c.set("g", "packed", b"plain again")  # an overwrite takes the new entry's codec
    assert c.get_entry("g", "packed") == (b"plain again", 0, 0.0)
    assert backend.check("g") == (backend.entry_bytes("packed", b"plain again")
                                  + backend.entry_bytes("raw", b"plain"), 2)


def test_usage_counts_utf8_bytes_of_keys(backend):
    backend.falls_short("utf8_bytes")
    c = backend.cache
    c.configure_group("g", 1 << 20)
    c.set("g", "ключ", b"value")
    assert c.get("g", "ключ") == b"value"
    assert backend.check("g") == (backend.entry_bytes("ключ", b"value"), 1)
