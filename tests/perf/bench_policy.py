"""Hit ratios of the arena's eviction policies against libCacheSim's, on the same traces.

Not a test: it asserts nothing.  ``run(quick)`` returns ``{"name", "tables",
"summary"}`` for the perf tool (``python tests/perf/main.py policy``; the
``arena`` bench appends these tables too); ``python
tests/perf/bench_policy.py [--quick]`` prints them on its own.

Every trace is generated with a fixed seed, and every request is a key of
the same length with a 100-byte value, so an entry always takes the same
``entry_size`` bytes in the arena: a group budget of ``CAP`` entries
(``CAP x entry_size``, an exact multiple of each shard slice, so no log
ever wraps with a gap) holds ``CAP`` entries, and libCacheSim's caches
(PyPI ``libcachesim``, the simulator of the S3-FIFO and SIEVE papers, in
the ``perf`` extra) get ``CAP`` unit-size objects.  The arena's metadata
(slot table, reference bytes, ghost table) lives outside the budget, as a
simulator's does.  The arena group is split into shards as deployed
(``gshards`` slices, each its own log), libCacheSim's cache is one queue.

Also measured: CPU time (``time.thread_time_ns``, fastest of N passes) of
``set`` and of a ``get`` hit per policy, the cost of a policy on the write
and read paths.
"""

from __future__ import annotations

import bisect
import os
import random
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from geecache.limits import POLICIES  # noqa: E402
from geecache.shm import Arena  # noqa: E402
from geecache.shm.layout import entry_size  # noqa: E402
from tests.perf.common import print_result  # noqa: E402

VALUE = b"v" * 100
KEY_WIDTH = 8
#: Entries every cache holds (2000 x 136 B: the group gets 4 shard slices of 500).
CAP = 2_000
#: Each run's arena: room for the group and its slot table at well under MAX_LOAD.
ARENA_BYTES = 4 << 20
#: libCacheSim's policies compared, by column name and class name.
LCS_POLICIES = (("LRU", "LRU"), ("ARC", "ARC"), ("SIEVE", "Sieve"), ("S3-FIFO", "S3FIFO"),
                ("W-TinyLFU", "WTinyLFU"))


class _Zipf:
    """Ranks 0..n-1 drawn with P(rank) ~ 1 / (rank+1)^s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self._cum, total = [], 0.0
        for i in range(1, n + 1):
            total += 1 / i ** s
            self._cum.append(total)
        self._total = total
        self._rng = rng

    def __call__(self) -> int:
        return bisect.bisect(self._cum, self._rng.random() * self._total)


def trace_scans(n_req: int, seed: int = 42) -> list[int]:
    """Zipf(0.9) over 20k keys, and a 4k-key one-time scan every 10k requests."""
    rng = random.Random(seed)
    z = _Zipf(20_000, 0.9, rng)
    out, scan = [], 10_000_000
    for n in range(n_req):
        if n and n % 10_000 == 0:
            out.extend(range(scan, scan + 4_000))
            scan += 4_000
        out.append(z())
    return out


def trace_shifting(n_req: int, seed: int = 43) -> list[int]:
    """Zipf(1.0) over 20k keys whose popular set moves: every 20k requests ranks map to new keys."""
    rng = random.Random(seed)
    z = _Zipf(20_000, 1.0, rng)
    out, offset = [], 0
    for n in range(n_req):
        if n and n % 20_000 == 0:
            offset = rng.randrange(1_000_000)  # a new phase: the top ranks are other keys
        out.append(offset + z())
    return out


def trace_one_hit(n_req: int, seed: int = 44) -> list[int]:
    """Web/CDN-like: Zipf(0.8) over 50k keys, with a quarter of requests for keys never seen again."""
    rng = random.Random(seed)
    z = _Zipf(50_000, 0.8, rng)
    out, fresh = [], 20_000_000
    for _ in range(n_req):
        if rng.random() < 0.25:
            out.append(fresh)
            fresh += 1
        else:
            out.append(z())
    return out


def trace_loop(n_req: int, seed: int = 45) -> list[int]:
    """Half a loop over 2.4k keys (1.2x the cache: LRU's worst case), half Zipf(0.9) over 20k keys."""
    rng = random.Random(seed)
    z = _Zipf(20_000, 0.9, rng)
    out, i = [], 0
    for _ in range(n_req):
        if rng.random() < 0.5:
            out.append(30_000_000 + i)
            i = (i + 1) % 2_400
        else:
            out.append(z())
    return out


def trace_recency(n_req: int, seed: int = 46) -> list[int]:
    """Fresh content (a feed, a news site): a new key every 8 requests, requested by its age.

    The other requests go to the key born *a* keys ago, *a* drawn from
    Zipf(1.0) over the last 5k births (2.5x the cache): the newest keys are
    the hottest, and a key cools as it ages, whatever it was asked for
    before.  Recency is the whole signal: LRU's best case, and the trap for
    a policy that admits by frequency alone.
    """
    rng = random.Random(seed)
    z = _Zipf(5_000, 1.0, rng)
    out, born = [], 0
    for _ in range(n_req):
        if not born or rng.random() < 0.125:
            born += 1
            out.append(40_000_000 + born)
        else:
            out.append(40_000_000 + max(1, born - z()))
    return out


def trace_mix(n_req: int, seed: int = 47) -> list[int]:
    """The other traces' patterns at once: a Zipf(0.9) core over 20k keys whose hot set moves
    every 40k requests, 15% one-hit keys, a loop over 3k keys (1.5x the cache) for 15%, and
    a 3k-key scan every 25k requests."""
    rng = random.Random(seed)
    z = _Zipf(20_000, 0.9, rng)
    out, fresh, loop, scan, offset = [], 50_000_000, 0, 60_000_000, 0
    for n in range(n_req):
        if n and n % 40_000 == 0:
            offset = rng.randrange(1_000_000)
        if n and n % 25_000 == 0:
            out.extend(range(scan, scan + 3_000))
            scan += 3_000
        r = rng.random()
        if r < 0.15:
            out.append(fresh)
            fresh += 1
        elif r < 0.30:
            out.append(70_000_000 + loop)
            loop = (loop + 1) % 3_000
        else:
            out.append(offset + z())
    return out


TRACES = (
    ("Zipf(0.9) + scans", trace_scans),
    ("Zipf(1.0), shifting hot set", trace_shifting),
    ("Zipf(0.8) + 25% one-hit", trace_one_hit),
    ("Zipf(0.9) + 1.2x loop", trace_loop),
    ("fresh keys, hot by age", trace_recency),
    ("mix: shift + one-hit + loop + scans", trace_mix),
)


def arena_hit_ratio(policy: str, trace: list[int], cap: int = CAP) -> float:
    """Hit ratio of a *cap*-entry group with *policy* over *trace* (a miss sets the key).

    The group is alone in a fresh arena, as a host's one group is: the
    shard-wide state (slot counts, ghost and sketch tables) is its own.
    """
    with Arena.create(ARENA_BYTES) as arena:
        arena.configure_group("g", cap * entry_size(KEY_WIDTH, len(VALUE)), policy)
        get, put = arena.get, arena.set
        hits = 0
        for k in trace:
            key = f"{k:0{KEY_WIDTH}d}"[-KEY_WIDTH:]
            if get("g", key) is None:
                put("g", key, VALUE)
            else:
                hits += 1
    return hits / len(trace)


def lcs_hit_ratio(cls_name: str, trace: list[int], cap: int = CAP) -> float:
    """Hit ratio of libCacheSim's *cls_name* with *cap* unit-size objects over *trace*."""
    import libcachesim
    cache = getattr(libcachesim, cls_name)(cap, hashpower=16)
    req = libcachesim.Request()
    req.obj_size = 1
    get = cache.get
    hits = 0
    for k in trace:
        req.obj_id = k
        hits += get(req)
    return hits / len(trace)


def _cpu_ns(fn, keys, passes: int) -> float:
    """Fastest of *passes* of the CPU ns per call of fn(key) over *keys*."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.thread_time_ns()
        for k in keys:
            fn(k)
        best = min(best, (time.thread_time_ns() - t0) / len(keys))
    return best


def cpu_costs(passes: int, n_fresh: int = 5_000) -> dict:
    """Per policy: CPU ns of a set that evicts, a set over an existing key, a get hit."""
    out = {}
    with Arena.create(64 << 20) as arena:
        for policy in POLICIES:
            arena.configure_group(policy, 2 << 20, policy)
            hot = [f"h:{i:06d}" for i in range(2_000)]
            for k in hot:
                arena.set(policy, k, VALUE)
            n = iter(range(10**9))
            fresh = [f"n:{i:06d}" for i in range(n_fresh)]

            def set_new(_k, policy=policy, n=n):
                arena.set(policy, f"n:{next(n):09d}", VALUE)
            for k in fresh * 4:  # past the budget: every later set evicts
                set_new(k)
            for k in hot:
                arena.get(policy, k)  # read: a second chance where the policy gives one
            out[policy] = (_cpu_ns(set_new, fresh, passes),
                           _cpu_ns(lambda k, p=policy: arena.set(p, k, VALUE), hot, passes),
                           _cpu_ns(lambda k, p=policy: arena.get(p, k), hot, passes))
    return out


def run(quick: bool = False, n_req: int | None = None) -> dict:
    """Run the benchmark; the perf tool's entry point (*n_req* overrides the trace length)."""
    n_req = n_req or (30_000 if quick else 150_000)
    try:
        import libcachesim  # noqa: F401
        lcs = LCS_POLICIES
    except ImportError:  # the perf extra is not installed: the arena's columns only
        lcs = ()
    columns = [f"arena {p}" for p in POLICIES] + [f"libCacheSim {n}" for n, _ in lcs]
    rows, summary = [], {}
    for title, make in TRACES:
        trace = make(n_req)
        r = {f"arena {p}": arena_hit_ratio(p, trace) for p in POLICIES}
        r.update({f"libCacheSim {n}": lcs_hit_ratio(c, trace) for n, c in lcs})
        rows.append([title] + [f"{r[c]:.3f}" for c in columns])
        tag = make.__name__.removeprefix("trace_")
        if lcs:
            best = max(lcs, key=lambda nc: r[f"libCacheSim {nc[0]}"])[0]
            summary[f"{tag}_best_libcachesim"] = f"{best} {r[f'libCacheSim {best}']:.4f}"
            for p in ("s3fifo", "s3lfu", "tinylfu", "adaptive"):
                summary[f"{tag}_{p}_minus_best_points"] = round(
                    100 * (r[f"arena {p}"] - r[f"libCacheSim {best}"]), 2)
        else:
            summary[f"{tag}_s3lfu"] = round(r["arena s3lfu"], 4)
        # Against the best of every column (the arena's own policies too).
        top = max(columns, key=r.__getitem__)
        summary[f"{tag}_adaptive_minus_best_column_points"] = f"{100 * (r['arena adaptive'] - r[top]):+.2f} ({top})"
        for p in ("s3lfu", "tinylfu", "adaptive"):
            summary[f"{tag}_{p}_minus_lru_points"] = round(100 * (r[f"arena {p}"] - r["arena lru"]), 2)
    costs = cpu_costs(5 if quick else 15) if n_req >= 10_000 else cpu_costs(1, 500)
    tables = [
        {"title": f"hit ratio at {CAP} entries ({n_req} requests + scans per trace, fixed seeds; "
                  f"arena: {KEY_WIDTH}-byte keys, {len(VALUE)}-byte values, a fresh arena per cell)",
         "columns": ["trace"] + columns, "rows": rows},
        {"title": "CPU ns per arena op by policy (thread_time, fastest of passes)",
         "columns": ["policy", "set (evicting)", "set (overwrite)", "get hit"],
         "rows": [[p, round(a), round(b), round(c)] for p, (a, b, c) in costs.items()]},
    ]
    return {"name": "policy", "tables": tables, "summary": summary}


if __name__ == "__main__":
    print_result(run(quick="--quick" in sys.argv[1:]))
