"""The miss path: CPU per miss (a load through the host-wide single flight) beside a hit.

    python tests/perf/main.py miss [--quick]

A real supervisor, 2 workers, one group ``c`` on the ``counting`` test loader
(``value-<key>``, answering at once: ``GEECACHE_TEST_LOAD_DELAY=0``), so that
what is measured is the cache's own work for a miss, not a source's:

- **miss**: ``wrk -t2 -c32`` asks ``GET /api?group=c&key=K`` of a fresh key
  per request (the anchors' fresh-key script with a run prefix), so every
  request is a miss, a claim and a release of the host-wide flight, a load
  and an arena set; the group's ``loads`` counter must account for them;
- **hit**: the same requests over 1,000 keys cached beforehand, the baseline
  in the same run (the same route, the Python hit path of a named group).

Around each run the CPU of the host's whole process tree is read from /proc
(``bench_http``'s sampling): CPU per request is what bounds the rate on a
box where wrk shares the cores.  Rounds interleave the cases; the figures
are medians.  No target: a miss's cost as a multiple of a hit's is reported.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from tests.perf.bench_http import tree_cpu_seconds
from tests.perf.bench_write import SPACING, WORKERS, run_wrk
from tests.perf.common import progress, result, table
from tests.support.proc import start_supervisor

GROUP = "c"
CONNECTIONS = 32
HIT_KEYS = 1000

# A fresh key per request (run prefix: wrk's first script argument), or with a second
# argument N, keys walked round N cached ones.
KEYS_LUA = """
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) counter = tid * %(spacing)d; prefix = args[1] or "m"; cycle = tonumber(args[2] or "0") end
function request()
  counter = counter + 1
  if cycle > 0 then
    return wrk.format("GET", "/api?group=%(group)s&key=h" .. (counter %% cycle))
  end
  return wrk.format("GET", "/api?group=%(group)s&key=" .. prefix .. counter)
end
"""


def run(quick: bool = False, seconds: float | None = None, rounds: int | None = None) -> dict:
    """*rounds* of a miss run and a hit run, each *seconds* long (by default 2 x 2 s quick,
    else 3 x 4 s)."""
    if not shutil.which("wrk"):
        raise RuntimeError("the miss bench needs wrk (apt-get install wrk)")
    seconds = seconds or (2.0 if quick else 4.0)
    rounds = rounds or (2 if quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="geecache-bench-miss-"))
    script = tmp / "keys.lua"
    script.write_text(KEYS_LUA % {"spacing": SPACING, "group": GROUP})
    cfg = tmp / "geecache.toml"
    cfg.write_text(f'[[groups]]\nname = "{GROUP}"\nloader = "tests.support.loaders:counting"\nmax_bytes = "64MiB"\n')
    h = start_supervisor(tmp, "--config", str(cfg), "--arena", "256MiB", workers=WORKERS,
                         env={"GEECACHE_TEST_LOAD_DELAY": "0"})
    rows, figures = [], {"miss": [], "hit": [], "miss_rps": [], "hit_rps": []}
    unaccounted = 0
    try:
        url = f"http://127.0.0.1:{h.port}/"
        for i in range(HIT_KEYS):
            status, _ = h.get(f"/api?group={GROUP}&key=h{i}")
            if status != 200:
                raise RuntimeError(f"caching the hit keys: {status}")
        run_wrk(url, script, CONNECTIONS, 1, "warm")  # connections, the loader's pool, the arena's pages
        for r in range(rounds):
            for case in ("miss", "hit"):
                before = h.admin_json("/stats")[GROUP]
                cpu0 = tree_cpu_seconds(h.pid)
                got = run_wrk(url, script, CONNECTIONS, seconds, f"r{r}-", *(() if case == "miss" else (str(HIT_KEYS),)))
                cpu = tree_cpu_seconds(h.pid) - cpu0
                after = h.admin_json("/stats")[GROUP]
                n = max(1, got["requests"])
                loads = after["loads"] - before["loads"]
                if case == "miss":
                    # (wrk counts a request cut off at the run's end that the host did load)
                    unaccounted += max(0, got["requests"] - loads)
                bad = got["non2xx"] + got["socket_errors"]
                figures[case].append(cpu / n * 1e6)
                figures[case + "_rps"].append(got["rps"])
                rows.append([r + 1, case, round(got["rps"]), round(cpu / n * 1e6, 1), got["requests"], loads, bad])
                progress(f"round {r + 1} {case}: {got['rps']:,.0f} req/s, {cpu / n * 1e6:.1f} µs CPU a request, "
                         f"{loads} loads, {bad} errors")
    finally:
        h.stop()
    miss, hit = statistics.median(figures["miss"]), statistics.median(figures["hit"])
    ratio = statistics.median(m / x for m, x in zip(figures["miss"], figures["hit"]))
    errors = sum(row[-1] for row in rows)
    summary = {"miss_cpu_us": miss, "hit_cpu_us": hit, "miss_vs_hit_cpu": ratio,
               "miss_rps": statistics.median(figures["miss_rps"]), "hit_rps": statistics.median(figures["hit_rps"]),
               "errors": errors, "misses_not_loaded": unaccounted}
    tables = [
        table(f"GET /api?group={GROUP}&key=K, one host of {WORKERS} workers, wrk -t2 -c{CONNECTIONS}, "
              f"{seconds:g}s per case (a coroutine loader answering at once)",
              ["round", "case", "req/s", "server CPU µs/req", "requests", "loads", "errors"], rows),
        table("Medians", ["figure", "value"],
              [["miss, server CPU µs", miss], ["hit, server CPU µs", hit], ["miss / hit (paired median)", ratio],
               ["errors", errors], ["misses wrk counted that the host did not load", unaccounted]]),
    ]
    return result("miss", tables, summary)
