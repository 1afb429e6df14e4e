"""The write path: PUT/s and latency through a host, beside raw SQLite on the same disk.

    python tests/perf/bench_write.py [--quick]

One run measures, on one box and one disk (a temp dir):

- **raw SQLite**: the statement a PUT runs (``INSERT ... ON CONFLICT DO
  UPDATE``), WAL mode, ``synchronous=FULL`` (every commit durable), with one
  row per commit and with 100 rows per commit: what the disk allows;
- **PUTs through geecache**: a real supervisor, 2 workers, one group on an
  SQLite file in the same directory; ``wrk -t2 --latency`` sends PUTs of fresh
  keys with 100-byte values (the anchors' ``put.lua``) at c16 and c64: PUT/s,
  p50/p99/max latency, non-2xx answers, and the rows per commit the host's
  ``/stats`` counted (``source_writes / source_commits``), and the server CPU
  per PUT: utime + stime of the host's whole process tree (supervisor,
  workers, their threads) over the requests answered, as ``bench_http``
  samples it: on a box where wrk shares the cores, CPU per request is what
  bounds the rate;
- **the floors** (``put_floor.py``), in the same run at c64: a bare httptools protocol on
  uvloop, 2 processes on one socket, answering each PUT at once (the HTTP floor), and the
  same answering once the row committed through the write path's design and nothing else
  (a commit thread per process taking everything queued, an ``flock`` turn, one multi-row
  upsert, ``synchronous=FULL``): how far the PUT path's own work is from what Python on
  this box can do at all (``put_c64.ratio_to_commit_floor``);
- **a 90% GET / 10% PUT mix** at c64 over 1,000 cached keys (every tenth
  request a PUT of a fresh key), its GET rate beside a pure-GET run of the
  same keys.

Ratios carry, absolute figures do not: wrk shares the 2 cores with the
host.  Targets: PUT/s >= 0.15 x raw SQLite's 100-rows-per-commit rate,
p99 <= 25 ms and max <= 250 ms at c64, no non-2xx.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.bench_http import Server, free_port, tree_cpu_seconds  # noqa: E402
from tests.perf.common import progress, result, table  # noqa: E402
from tests.support.proc import start_supervisor  # noqa: E402

GROUP = "w"
WORKERS = 2
THREADS = 2
VALUE_BYTES = 100
GET_KEYS = 1000
#: Fresh keys per wrk thread: its counter starts at tid * this (put.lua's spacing).
SPACING = 10_000_000

# The anchors' put.lua, with a run prefix (wrk's first script argument) so that every run
# writes fresh keys.
PUT_LUA = """
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) counter = tid * %(spacing)d; prefix = args[1] or "w" end
function request()
  counter = counter + 1
  return wrk.format("PUT", "/api?key=" .. prefix .. counter, nil, string.rep("v", %(size)d))
end
"""
# Every tenth request a PUT of a fresh key, the rest GETs walking the cached keys.
MIX_LUA = """
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) counter = tid * %(spacing)d; n = 0; prefix = args[1] or "m"; put_every = tonumber(args[2]) end
function request()
  n = n + 1
  if put_every > 0 and n %% put_every == 0 then
    counter = counter + 1
    return wrk.format("PUT", "/api?key=" .. prefix .. counter, nil, string.rep("v", %(size)d))
  end
  return wrk.format("GET", "/api?key=g" .. (n %% %(keys)d))
end
"""


#: The floors (``put_floor.py``'s modes): what a bare Python server on this box does for a PUT.
FLOORS = (("http", "floor: bare httptools, 204 at once"),
          ("commit", "floor: bare httptools + group commit"))


def raw_sqlite(path: Path, rows_per_commit: int, seconds: float) -> float:
    """Rows/s of versioned upserts into a fresh WAL, synchronous=FULL table, *rows_per_commit* a commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
                     "version INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID")
        sql = ("INSERT INTO kv (key, value, version) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
               "value = excluded.value, version = excluded.version WHERE excluded.version > kv.version")
        value = b"v" * VALUE_BYTES
        rows, started = 0, time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline and rows < 50_000_000:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(rows_per_commit):
                rows += 1
                conn.execute(sql, (f"k{rows}", value, rows))
            conn.execute("COMMIT")
        return rows / (time.perf_counter() - started)
    finally:
        conn.close()


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise RuntimeError(f"wrk latency {text!r} not understood")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def run_wrk(url: str, script: Path, connections: int, seconds: float, *args: str) -> dict:
    """One wrk run: requests/s, p50/p99/max latency (seconds) and the non-2xx count."""
    cmd = ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", str(script), url, "--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p50, p99 = (re.search(rf"^\s+{p}%\s+(\S+)", out, re.M) for p in ("50", "99"))
    if not (m and lat and p50 and p99):
        raise RuntimeError(f"wrk output not understood: {out[-800:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(m.group(1))
    return {"requests": requests, "rps": requests / _seconds(m.group(2) + m.group(3)),
            "p50": _seconds(p50.group(1)), "p99": _seconds(p99.group(1)), "max": _seconds(lat.group(3)),
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run(quick: bool = False, seconds: float | None = None, get_keys: int = GET_KEYS) -> dict:
    """Raw SQLite, then PUTs at c16 and c64, then the 90/10 mix and pure GETs over *get_keys*
    cached keys; each wrk run *seconds* long (by default 3 quick, else 6)."""
    if not shutil.which("wrk"):
        raise RuntimeError("the write bench needs wrk (apt-get install wrk)")
    seconds = seconds or (3.0 if quick else 6.0)
    tmp = Path(tempfile.mkdtemp(prefix="geecache-bench-write-"))
    rows, summary = [], {}
    try:
        progress(f"raw SQLite in {tmp}: 1 row and 100 rows per commit")
        raw1 = raw_sqlite(tmp / "raw1.db", 1, min(seconds, 3.0))
        raw100 = raw_sqlite(tmp / "raw100.db", 100, min(seconds, 3.0))
        summary.update({"raw_sqlite.one_row_commits_per_s": raw1, "raw_sqlite.rows_per_s_100_per_commit": raw100})

        vars_ = {"spacing": SPACING, "size": VALUE_BYTES, "keys": get_keys}
        put_lua, mix_lua = tmp / "put.lua", tmp / "mix.lua"
        put_lua.write_text(PUT_LUA % vars_)
        mix_lua.write_text(MIX_LUA % vars_)
        cfg = tmp / "geecache.toml"
        cfg.write_text(f'[[groups]]\nname = "{GROUP}"\nsqlite = "{tmp / "w.db"}"\nmax_bytes = "64MiB"\n')
        h = start_supervisor(tmp, "--config", str(cfg), "--arena", "256MiB", workers=WORKERS)
        try:
            url = f"http://127.0.0.1:{h.port}/"
            run_wrk(url, put_lua, 16, 1, "warm")  # connections, threads, the file's first pages
            for c in (16, 64):
                before = h.admin_json("/stats")[GROUP]
                cpu0 = tree_cpu_seconds(h.pid)
                r = run_wrk(url, put_lua, c, seconds, f"c{c}-")
                cpu = tree_cpu_seconds(h.pid) - cpu0
                after = h.admin_json("/stats")[GROUP]
                us_per_put = cpu * 1e6 / r["requests"] if r["requests"] else 0.0
                commits = after["source_commits"] - before["source_commits"]
                writes = after["source_writes"] - before["source_writes"]
                per_commit = writes / commits if commits else 0.0
                progress(f"PUT c{c}: {r['rps']:.0f}/s, p99 {_ms(r['p99'])} ms, {per_commit:.1f} rows/commit, "
                         f"{us_per_put:.0f} server CPU us/PUT")
                rows.append([f"PUT c{c}", round(r["rps"]), _ms(r["p50"]), _ms(r["p99"]), _ms(r["max"]),
                             r["non2xx"] + r["socket_errors"], round(per_commit, 1), round(us_per_put, 1),
                             round(r["rps"] / raw1, 2), round(r["rps"] / raw100, 3)])
                summary.update({f"put_c{c}.{k}": v for k, v in r.items()})
                summary[f"put_c{c}.rows_per_commit"] = per_commit
                summary[f"put_c{c}.server_cpu_us_per_put"] = us_per_put
                summary[f"put_c{c}.ratio_to_raw_100_rows"] = r["rps"] / raw100

            progress(f"90% GET / 10% PUT over {get_keys} cached keys, and pure GETs")
            for i in range(get_keys):
                status = h.request("PUT", f"/api?key=g{i}", b"v" * VALUE_BYTES)[0]
                if status != 204:
                    raise RuntimeError(f"seeding the GET keys: {status}")
            run_wrk(url, mix_lua, 64, 1, "warmget", "0")
            pure = run_wrk(url, mix_lua, 64, seconds, "none", "0")
            mix = run_wrk(url, mix_lua, 64, seconds, "mix", "10")
        finally:
            h.stop()
        progress("the floors: a bare httptools server answering PUTs at once, and with group commit")
        for mode, title in FLOORS:
            floor = Server(title, [sys.executable, os.path.join(PERF_DIR, "put_floor.py"), str(port := free_port()),
                                   str(WORKERS), mode, str(tmp / f"floor-{mode}.db")], port).wait_ready()
            try:
                url = f"http://127.0.0.1:{floor.port}/"
                run_wrk(url, put_lua, 16, 1, "warm")
                cpu0 = floor.cpu_seconds()
                r = run_wrk(url, put_lua, 64, seconds, f"floor-{mode}-")
                us_per_put = (floor.cpu_seconds() - cpu0) * 1e6 / r["requests"] if r["requests"] else 0.0
            finally:
                floor.stop()
            if mode == "commit":  # every PUT it acknowledged is in the file (fresh keys: a row each)
                with sqlite3.connect(tmp / f"floor-{mode}.db") as conn:
                    summary["floor_commit.rows_in_file"] = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
                summary["floor_commit.acknowledged"] = r["requests"]
            progress(f"{title}: {r['rps']:.0f}/s, {us_per_put:.0f} server CPU us/PUT")
            rows.append([f"{title} c64", round(r["rps"]), _ms(r["p50"]), _ms(r["p99"]), _ms(r["max"]),
                         r["non2xx"] + r["socket_errors"], None, round(us_per_put, 1),
                         round(r["rps"] / raw1, 2), round(r["rps"] / raw100, 3)])
            summary[f"floor_{mode}.rps"] = r["rps"]
            summary[f"floor_{mode}.server_cpu_us_per_put"] = us_per_put
            summary[f"floor_{mode}.ratio_to_raw_100_rows"] = r["rps"] / raw100
        summary["put_c64.ratio_to_commit_floor"] = summary["put_c64.rps"] / summary["floor_commit.rps"]
        mix_gets = mix["rps"] * 0.9
        rows.append(["pure GET c64", round(pure["rps"]), _ms(pure["p50"]), _ms(pure["p99"]), _ms(pure["max"]),
                     pure["non2xx"] + pure["socket_errors"], None, None, None, None])
        rows.append(["90/10 mix c64", round(mix["rps"]), _ms(mix["p50"]), _ms(mix["p99"]), _ms(mix["max"]),
                     mix["non2xx"] + mix["socket_errors"], None, None, None, None])
        summary.update({"mix.gets_per_s": mix_gets, "mix.puts_per_s": mix["rps"] * 0.1,
                        "pure_get.gets_per_s": pure["rps"], "mix.get_rate_ratio": mix_gets / pure["rps"],
                        "mix.p99": mix["p99"], "mix.max": mix["max"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw_rows = [["raw SQLite, 1 row/commit", round(raw1)], ["raw SQLite, 100 rows/commit", round(raw100)]]
    mix_rows = [["GET/s in the 90/10 mix", round(mix_gets)], ["GET/s, pure GETs", round(pure["rps"])],
                ["mix ÷ pure", round(mix_gets / pure["rps"], 2)]]
    return result("write", [
        table("raw SQLite on the same disk (WAL, synchronous=FULL, versioned upsert): rows/s",
              ["case", "rows/s"], raw_rows),
        table(f"through geecache ({WORKERS} workers, wrk -t{THREADS}, {seconds:g}s per run, {VALUE_BYTES}-byte values)",
              ["case", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "rows/commit",
               "CPU µs/req", "÷ raw 1-row", "÷ raw 100-row"], rows),
        table("GET rate with writes beside it", ["case", "GET/s"], mix_rows),
    ], summary)


if __name__ == "__main__":
    from tests.perf.common import print_result

    print_result(run("--quick" in sys.argv))
