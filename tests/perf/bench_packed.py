"""Values kept compressed in the arena: bytes per entry and get cost.

JSON documents of about 1 KB (``bench_compression``'s: paged API answers,
seeded) are written through a ``Group`` whose cache is a real
arena, once per codec.  Measured:

* arena bytes per entry (``Arena.usage``) against the raw value's size;
* the CPU time of a hit (``Group.get_cached``: the arena probe plus the
  decompress) per codec against the raw group's, in ``time.thread_time_ns``,
  the fastest of several passes (the least disturbed by other processes).

Targets: lz4 keeps such documents in <= 55% of their raw size; a get of a
compressed value costs <= 2x a raw get.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from geecache.group import Group  # noqa: E402
from geecache.shm import Arena  # noqa: E402
from geecache.storage.memory import MemoryStorage  # noqa: E402
from tests.perf.bench_compression import json_payload  # noqa: E402
from tests.perf.common import print_result, progress, result, table  # noqa: E402

CODECS = ("none", "lz4", "snappy", "zstd", "gzip")


def documents(n: int, seed: int = 13) -> dict[str, bytes]:
    """*n* JSON documents of about 1 KB: ``bench_compression``'s paged API answers."""
    rnd = random.Random(seed)
    return {f"doc{i}": json_payload(1024, rnd) for i in range(n)}


def _cpu_ns_per_get(group: Group, keys: list[str], passes: int) -> float:
    """Fastest over *passes* of the thread CPU ns per ``get_cached`` over *keys*."""
    get = group.get_cached
    best = float("inf")
    for _ in range(passes):
        t0 = time.thread_time_ns()
        for k in keys:
            get(k)
        best = min(best, (time.thread_time_ns() - t0) / len(keys))
    return best


def measure(n: int, passes: int) -> dict[str, dict]:
    """Per codec: bytes per entry, raw bytes per value, and ns per hit."""
    docs = documents(n)
    keys = list(docs)
    raw_mean = sum(map(len, docs.values())) / n
    out = {}
    for codec in CODECS:
        budget = max(4 << 20, n * 2048)
        arena = Arena.create(4 * budget)  # one per codec: the same budget, nothing shared
        try:
            group = Group(f"p_{codec}", MemoryStorage(), max_bytes=budget, cache=arena, codec=codec)

            async def fill():
                for k, v in docs.items():
                    await group.set(k, v)

            asyncio.run(fill())
            used, entries = arena.usage(group.name)
            assert entries == n, (codec, entries)
            for k in keys[:50]:
                assert group.get_cached(k) == docs[k]
            out[codec] = {"bytes_per_entry": used / entries, "raw_bytes": raw_mean,
                          "ns_per_get": _cpu_ns_per_get(group, keys, passes)}
        finally:
            arena.close()
            arena.unlink()
    return out


def run(quick: bool = False, n: int | None = None) -> dict:
    """Run the benchmark; the perf tool's entry point (*n* documents: tiny in the tests)."""
    n = n or (300 if quick else 5000)
    passes = 3 if quick else 15
    progress(f"packed: {n} JSON documents per codec")
    m = measure(n, passes)
    raw = m["none"]
    rows = [[c, round(m[c]["raw_bytes"]), round(m[c]["bytes_per_entry"]),
             round(100 * m[c]["bytes_per_entry"] / m[c]["raw_bytes"], 1),
             round(m[c]["ns_per_get"] / 1000, 2), round(m[c]["ns_per_get"] / raw["ns_per_get"], 2)]
            for c in CODECS]
    tables = [table(f"~1 KB JSON documents in the arena, {n} per codec (get: thread CPU, fastest of {passes})",
                    ["codec", "raw B", "arena B/entry", "% of raw", "get µs", "get / raw get"], rows)]
    summary = {}
    for c in CODECS:
        summary[f"{c}_pct_of_raw"] = round(100 * m[c]["bytes_per_entry"] / m[c]["raw_bytes"], 1)
        summary[f"{c}_get_vs_raw_get"] = round(m[c]["ns_per_get"] / raw["ns_per_get"], 2)
    return result("packed", tables, summary)


if __name__ == "__main__":
    print_result(run(quick="--quick" in sys.argv[1:]))
