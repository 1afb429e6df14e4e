"""Benchmark of the shared-memory arena (not a test: it asserts nothing).

``run(quick)`` returns ``{"name", "tables", "summary"}`` for the perf tool
(``python tests/perf/main.py arena``); ``python tests/perf/bench_arena.py
[--quick]`` prints the tables on its own.  Compared in the same run: a
dict, an OrderedDict LRU, diskcache (if importable) and redis-py against a
redis-server this starts on a free loopback port (if on PATH).  Each step
prints a progress line (the full run takes tens of seconds); a plot of the
latencies and hit ratios goes to ``tests/perf/out/``.
"""

from __future__ import annotations

import bisect
import mmap
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from xxhash import xxh3_64_intdigest  # noqa: E402

from geecache.shm import Arena  # noqa: E402
from geecache.shm.layout import entry_size  # noqa: E402
from tests.perf.common import plot_bars, print_result, progress  # noqa: E402
from tests.support.dataplane import hit_path_env  # noqa: E402
from tests.support.net import free_port  # noqa: E402

N_KEYS = 10_000
VALUE = b"v" * 100


def _per_op(fn, keys, repeats: int) -> float:
    """Median over *repeats* of the µs per call of fn(key) over *keys*."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for k in keys:
            fn(k)
        times.append((time.perf_counter_ns() - t0) / len(keys) / 1000)
    return statistics.median(times)


class _LRU:
    """The usual OrderedDict LRU: the in-process baseline."""

    def __init__(self, cap: int) -> None:
        self.d: OrderedDict = OrderedDict()
        self.cap = cap

    def get(self, k):
        v = self.d.get(k)
        if v is not None:
            self.d.move_to_end(k)
        return v

    def set(self, k, v):
        self.d[k] = v
        self.d.move_to_end(k)
        if len(self.d) > self.cap:
            self.d.popitem(last=False)


class _RawTable:
    """The floor: an unlocked open-addressing table in shared memory, no checks at all.

    What the arena does before any of its safety (locks, seqlock, CLOCK,
    budgets): hash, one slot read, one slice.  Measured in the same run, it
    turns the arena's µs into a ratio that noise on a shared box barely moves.
    """

    _SLOT = struct.Struct("Q I I")  # hash, data offset, value length

    def __init__(self, n_slots: int = 1 << 15, value_size: int = len(VALUE)) -> None:
        self._n = n_slots
        self._stride = value_size
        self._data = n_slots * self._SLOT.size
        self._mm = mmap.mmap(-1, self._data + n_slots * value_size)

    def _slot(self, key: str) -> tuple[int, int]:
        h = xxh3_64_intdigest(key.encode()) or 1
        i = h % self._n
        while True:
            at = i * self._SLOT.size
            sh = self._SLOT.unpack_from(self._mm, at)[0]
            if sh == h or not sh:
                return h, i
            i = (i + 1) % self._n

    def get(self, key: str):
        h, i = self._slot(key)
        sh, off, n = self._SLOT.unpack_from(self._mm, i * self._SLOT.size)
        return self._mm[off:off + n] if sh == h else None

    def set(self, key: str, value: bytes) -> None:
        h, i = self._slot(key)
        off = self._data + i * self._stride
        self._mm[off:off + len(value)] = value
        self._SLOT.pack_into(self._mm, i * self._SLOT.size, h, off, len(value))

    def close(self) -> None:
        self._mm.close()


def _backends(arena: Arena, tmp: str):
    """(name, get(key), set(key)) per backend, plus cleanups."""
    d: dict = {}
    lru = _LRU(N_KEYS * 2)
    raw = _RawTable()
    out = [
        ("arena", lambda k: arena.get("b", k), lambda k: arena.set("b", k, VALUE)),
        ("raw shm table", raw.get, lambda k: raw.set(k, VALUE)),
        ("dict", d.get, lambda k: d.__setitem__(k, VALUE)),
        ("OrderedDict LRU", lru.get, lambda k: lru.set(k, VALUE)),
    ]
    cleanups = [raw.close]
    try:
        import diskcache
        dc = diskcache.Cache(os.path.join(tmp, "dc"))
        out.append(("diskcache", dc.get, lambda k: dc.set(k, VALUE)))
        cleanups.append(dc.close)
    except ImportError:
        pass
    server = shutil.which("redis-server")
    if server:
        try:
            import redis
            port = free_port()
            proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cleanups.append(lambda: (os.kill(proc.pid, signal.SIGTERM), proc.wait(10)))
            r = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            out.append(("redis-py", r.get, lambda k: r.set(k, VALUE)))
            cleanups.append(r.close)
        except ImportError:
            pass
    return out, cleanups


def _latency(quick: bool) -> tuple[dict, dict]:
    repeats = 3 if quick else 7
    keys = [f"key:{i}" for i in range(N_KEYS)]
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    get_us, set_us = {}, {}
    with Arena.create(64 << 20) as arena, tempfile.TemporaryDirectory() as tmp:
        arena.configure_group("b", 16 << 20, "lru2")
        backends, cleanups = _backends(arena, tmp)
        try:
            for name, get, put in backends:
                sample = shuffled[:2000] if quick and name in ("diskcache", "redis-py") else shuffled
                set_us[name] = _per_op(put, sample, repeats)
                get_us[name] = _per_op(get, sample, repeats)
                assert get(sample[0]) == VALUE, name
                progress(f"latency {name}: get {get_us[name]:.2f} µs, set {set_us[name]:.2f} µs "
                         f"({len(sample)} keys x {repeats})")
        finally:
            for c in reversed(cleanups):
                c()
    return get_us, set_us


def _writes(quick: bool) -> dict:
    """µs per write of the compiled writer and of the Python one (``GEECACHE_PURE_PYTHON``),
    alternating in this run: a set with room, a set into a full group (it evicts), a delete
    of a key not there (what every owned write makes of the other partition's copy)."""
    repeats = 3 if quick else 7
    n = 5_000 if quick else N_KEYS
    out: dict[str, dict[str, float]] = {}
    arenas = {}
    for kind in ("compiled", "python"):
        with hit_path_env("python" if kind == "python" else "compiled"):
            arenas[kind] = Arena.create(64 << 20)
        arenas[kind].configure_group("room", 24 << 20, "lru")
        arenas[kind].configure_group("full", 1 << 20, "lru")
        for i in range(20_000):  # past the budget: from here on every new key evicts
            arenas[kind].set("full", f"fill:{i}", VALUE)
    try:
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(repeats):
            for kind, arena in arenas.items():
                ops = {
                    "set, room at the head": lambda k, a=arena: a.set("room", k, VALUE),
                    "set into a full group (evicts)": lambda k, a=arena: a.set("full", k, VALUE),
                    "delete of a key not there": lambda k, a=arena: a.delete("room", "absent:" + k),
                }
                keys = [f"w{r}:{i}" for i in range(n)]
                for op, fn in ops.items():
                    times.setdefault((op, kind), []).append(_per_op(fn, keys, 1))
        for (op, kind), ts in times.items():
            out.setdefault(op, {})[kind] = statistics.median(ts)
        progress("writes: " + "; ".join(f"{op} {v['compiled']:.2f} / {v['python']:.2f} µs" for op, v in out.items()))
    finally:
        for arena in arenas.values():
            arena.close()
            arena.unlink()
    return out


def _overhead() -> dict:
    """Bytes per 100-byte entry beyond key and value, with the arena full."""
    size = 64 << 20
    with Arena.create(size) as arena:
        budget = arena._data_bytes
        arena.configure_group("o", budget, "lru")
        progress("overhead: filling a 64 MiB arena with 100-byte values until the first eviction")
        n = 0
        while arena.stats("o")["evictions"] == 0 and n < 10_000_000:
            arena.set("o", f"key:{n}", VALUE)
            n += 1
            if n % 100_000 == 0:
                progress(f"overhead: {n} entries set")
        nbytes, entries = arena.usage("o")
        progress(f"overhead: full at {entries} entries")
        payload = len("key:100000") + len(VALUE)
        slot_bytes = arena._sps * arena._n_shards * 17
        return {
            "entries held": entries,
            "header+padding B/entry": round(nbytes / entries - payload, 1),
            "slot table B/entry": round(slot_bytes / entries, 1),
            "total overhead B/entry": round((nbytes + slot_bytes) / entries - payload, 1),
            "segment B/entry": round(size / entries, 1),
        }


def _zipf_trace(n_req: int, n_keys: int, s: float, scan_every: int, scan_len: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    cum, total = [], 0.0
    for i in range(1, n_keys + 1):
        total += 1 / i ** s
        cum.append(total)
    trace, scan_id = [], 0
    for n in range(n_req):
        if n and n % scan_every == 0:
            trace.extend(f"scan:{scan_id}:{j}" for j in range(scan_len))
            scan_id += 1
        trace.append(f"z:{bisect.bisect(cum, rng.random() * total)}")
    return trace


def _hit_ratios(quick: bool) -> dict:
    n_req = 60_000 if quick else 200_000
    trace = _zipf_trace(n_req, 20_000, 0.9, 10_000, 4_000, 42)
    cap_entries = 2_000
    budget = cap_entries * entry_size(len("z:12345"), len(VALUE))
    ratios = {}
    progress(f"hit ratio: a trace of {len(trace)} requests")
    with Arena.create(16 << 20) as arena:
        for policy in ("lru", "lru2", "s3fifo"):
            arena.configure_group(policy, budget, policy)
            hits = 0
            for k in trace:
                if arena.get(policy, k) is None:
                    arena.set(policy, k, VALUE)
                else:
                    hits += 1
            ratios[f"arena {policy}"] = hits / len(trace)
            progress(f"hit ratio arena {policy}: {ratios[f'arena {policy}']:.4f}")
    lru = _LRU(cap_entries)
    hits = 0
    for k in trace:
        if lru.get(k) is None:
            lru.set(k, VALUE)
        else:
            hits += 1
    ratios["exact LRU (OrderedDict)"] = hits / len(trace)
    return ratios


def run(quick: bool = False) -> dict:
    """Run the benchmark; the perf tool's entry point."""
    get_us, set_us = _latency(quick)
    writes = _writes(quick)
    over = _overhead()
    ratios = _hit_ratios(quick)
    names = list(get_us)
    tables = [
        {"title": f"µs per op, 100-byte values over {N_KEYS} keys (median of repeats)",
         "columns": ["backend", "get hit µs", "set µs"],
         "rows": [[n, round(get_us[n], 2), round(set_us[n], 2)] for n in names]},
        {"title": "ratio to the arena (higher = slower than the arena)",
         "columns": ["backend", "get", "set"],
         "rows": [[n, round(get_us[n] / get_us["arena"], 2), round(set_us[n] / set_us["arena"], 2)]
                  for n in names]},
        {"title": "the arena against the floor measured in this run: a raw unlocked shm table read",
         "columns": ["op", "arena µs", "raw read µs", "arena / raw read"],
         "rows": [["get hit", round(get_us["arena"], 2), round(get_us["raw shm table"], 2),
                   round(get_us["arena"] / get_us["raw shm table"], 2)],
                  ["set", round(set_us["arena"], 2), round(get_us["raw shm table"], 2),
                   round(set_us["arena"] / get_us["raw shm table"], 2)]]},
        {"title": "the arena's writes: the compiled writer against the Python one, alternating in this run",
         "columns": ["write", "compiled µs", "Python µs", "Python / compiled"],
         "rows": [[op, round(v["compiled"], 2), round(v["python"], 2), round(v["python"] / v["compiled"], 2)]
                  for op, v in writes.items()]},
        {"title": "arena overhead per 100-byte entry (full 64 MiB arena)",
         "columns": ["measure", "value"],
         "rows": [[k, v] for k, v in over.items()]},
        {"title": "hit ratio, Zipf(0.9) over 20k keys + a 4k-key scan every 10k requests, 2k-entry cache",
         "columns": ["policy", "hit ratio"],
         "rows": [[k, round(v, 4)] for k, v in ratios.items()]},
    ]
    summary = {
        "arena_get_us": round(get_us["arena"], 3),
        "arena_set_us": round(set_us["arena"], 3),
        "dict_get_us": round(get_us["dict"], 3),
        "raw_get_us": round(get_us["raw shm table"], 3),
        "arena_get_vs_raw_get": round(get_us["arena"] / get_us["raw shm table"], 2),
        "arena_set_vs_raw_get": round(set_us["arena"] / get_us["raw shm table"], 2),
        "set_room_us": round(writes["set, room at the head"]["compiled"], 3),
        "set_room_python_us": round(writes["set, room at the head"]["python"], 3),
        "set_evicting_us": round(writes["set into a full group (evicts)"]["compiled"], 3),
        "set_evicting_python_us": round(writes["set into a full group (evicts)"]["python"], 3),
        "overhead_bytes_per_entry": over["total overhead B/entry"],
        "hit_ratio_lru": round(ratios["arena lru"], 4),
        "hit_ratio_lru2": round(ratios["arena lru2"], 4),
        "hit_ratio_s3fifo": round(ratios["arena s3fifo"], 4),
        "lru2_minus_lru_points": round(100 * (ratios["arena lru2"] - ratios["arena lru"]), 2),
    }
    for n in names[1:]:
        summary[f"get_ratio_{n.split()[0].lower().replace('-', '_')}"] = round(get_us[n] / get_us["arena"], 3)
    # The title names what was measured: a cache whose client is missing is left out of both.
    plot = plot_bars("arena.png", "The shared-memory arena against " + ", ".join(names[1:]), [
        {"title": f"µs per op, 100-byte values, {N_KEYS} keys", "ylabel": "µs (log scale)", "logy": True,
         "categories": names, "series": {"get hit": [get_us[n] for n in names],
                                         "set": [set_us[n] for n in names]}},
        {"title": "hit ratio, Zipf(0.9) + scans, 2k entries", "ylabel": "hit ratio",
         "categories": list(ratios), "series": {"hit ratio": list(ratios.values())}},
    ])
    from tests.perf import bench_policy  # the policies against libCacheSim's, same traces
    policy = bench_policy.run(quick)
    tables += policy["tables"]
    summary.update(policy["summary"])
    return {"name": "arena", "tables": tables, "summary": summary, "plots": [plot] if plot else []}


if __name__ == "__main__":
    print_result(run(quick="--quick" in sys.argv[1:]))
