"""Per-core scaling of cache hits: CPU per hit and efficiency per worker, with Go beside it.

    python tests/perf/bench_scaling.py [--quick]

What transfers to a bigger machine is what one hit costs a server core and
whether that cost grows with the worker count, not the wall req/s of a box
whose cores the load generator shares.  So for each worker count this
measures, around one wrk run of ``GET /api?key=K`` (every request a hit):

- **server CPU µs per hit**: utime + stime of the server's whole process
  tree (supervisor and workers, from /proc) over the requests answered;
- **req/s per server core**: requests over server CPU seconds;
- **efficiency**: req/s per server core relative to 1 worker (1.0 = each
  added worker costs a hit what the first did: linear scaling in CPU);
- **contention per request**, from the arena's per-process counters
  (``GET /stats/contention``): shard-lock waits and their time, seqlock
  conflicts, flight-table collisions; and the busiest worker's share of
  the server CPU (how evenly the shared accept queue spreads connections).

Go groupcache (the original, ``GEECACHE_GROUPCACHE_BIN`` or the anchors
build) runs beside it at GOMAXPROCS 1 and 2.

**CPU layout.**  The server's process tree and wrk are pinned to disjoint
CPU sets (``os.sched_setaffinity``, inherited by every child) when the
machine has the cores: wrk gets a quarter of them (at least one), the server
as many of the rest as it has workers.  A server with more workers than that
runs on every CPU, and its row says it shares cores with wrk (on a 2-core
box: 1 worker on CPU 0 and wrk on CPU 1; 2 workers share with wrk).  Rows at
4 and 8 workers on a small box are there for the contention counts: more
workers than cores still exercises the shared state.

**Arena only** (no HTTP): N processes forked over one arena hammer the same
16 hot keys, then 16 keys each of their own; one op in 16 deletes its key
and the next get reloads it through the host-wide flight table
(``try_begin`` / ``set`` / ``end``), so locks, seqlocks and the flight
table all see traffic.  Per op: CPU µs, lock waits, seqlock conflicts,
flight collisions.  A hits-only pass measures **writes to shared cache
lines per hit**: the reference bytes' sum before and after (each store
raises one by one; no hand runs in a hits-only pass), beside what the hit
path's code writes (stated in ``SHARED_WRITES``).

No extrapolation: a prediction for a bigger machine belongs in
docs/architecture.md, from these per-hit costs and counts, with what it
assumes.  Writes a PNG (efficiency and µs per hit against workers) to
``tests/perf/out/`` when matplotlib is importable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.bench_http import (  # noqa: E402
    CONNECTIONS, Server, groupcache_binary, run_load, start_geecache, start_groupcache, tree_cpu_seconds,
)
from tests.perf.common import _pyplot, load_generator, plot_path, progress, result, table  # noqa: E402

#: Worker counts the geecache server runs at (contention is counted at each).
WORKER_COUNTS = (1, 2, 4, 8)
#: The widest geecache server again, one SO_REUSEPORT socket per worker; judged against geecache's 1 worker.
REUSEPORT = "geecache --reuseport"
BASE_OF = {REUSEPORT: "geecache"}
#: GOMAXPROCS values Go groupcache runs at.
GO_PROCS = (1, 2)
#: Arena-only run: processes, hot keys shared by all, one op in DELETE_EVERY deletes its key.
ARENA_PROCS = (1, 2, 4, 8)
HOT_KEYS = 16
DELETE_EVERY = 16
ARENA_VALUE = b"v" * 100

#: What one cache hit over HTTP writes, from the code path (``Arena.get_entry``,
#: ``Group.get_cached``, the data plane): the rows of the shared-writes table.
SHARED_WRITES = (
    ("slot reference byte (refs region, shared by every worker)",
     "only while below the policy's ref_max (lru 1, s3fifo 3): once per key per hand pass;"
     " measured below"),
    ("stat row: gets, local_hits (2 u64 adds)", "the worker's own row, 64-byte aligned: no line shared"),
    ("HTTP tallies (request count, latency bucket)", "per-process memory, flushed once a second"),
    ("shard lock, seqlock version, flight table", "not touched by a hit (read-only probe)"),
)


# -- CPU layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a server of *workers* processes and the load generator run."""

    server: tuple[int, ...]  # CPUs the server's tree may run on
    load: tuple[int, ...]    # CPUs wrk may run on
    disjoint: bool           # no CPU in both

    def describe(self) -> str:
        """``server CPU 0 | wrk CPU 1`` or ``server CPUs 0-1, shared with wrk (CPU 1)``."""
        if self.disjoint:
            return f"server {cpu_text(self.server)} | wrk {cpu_text(self.load)}"
        return f"server {cpu_text(self.server)}, shared with wrk ({cpu_text(self.load)})"


def cpu_text(cpus: tuple[int, ...]) -> str:
    """``CPU 0``, ``CPUs 0-3`` or ``CPUs 0,2``."""
    if len(cpus) == 1:
        return f"CPU {cpus[0]}"
    if list(cpus) == list(range(cpus[0], cpus[-1] + 1)):
        return f"CPUs {cpus[0]}-{cpus[-1]}"
    return "CPUs " + ",".join(map(str, cpus))


def plan_layout(workers: int, cpus: tuple[int, ...]) -> Layout:
    """The layout for a server using *workers* cores on the machine's *cpus*.

    wrk gets the last quarter of the CPUs (at least one) and the server the
    first *workers* of the rest; a server wider than the rest runs on every
    CPU, sharing with wrk.  One CPU: both share it.
    """
    cpus = tuple(sorted(cpus))
    if len(cpus) < 2:
        return Layout(cpus, cpus, False)
    n_load = max(1, len(cpus) // 4)
    rest, load = cpus[:-n_load], cpus[-n_load:]
    if workers <= len(rest):
        return Layout(rest[:workers], load, True)
    return Layout(cpus, load, False)


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]):
    """Run the block with this process on *cpus*: what it starts inherits them."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- one HTTP measurement ----------------------------------------------------------------


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of *pid* and of each of its children (not their descendants)."""
    out = {pid: tree_cpu_seconds(pid) - sum(tree_cpu_seconds(c) for c in children(pid))}
    for c in children(pid):
        out[c] = tree_cpu_seconds(c)
    return out


def children(pid: int) -> list[int]:
    """Direct children of *pid* (every thread's)."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids


def admin_port(server: Server) -> int | None:
    """The admin port a geecache server was started with (None for other servers)."""
    args = list(server.proc.args)
    return int(args[args.index("--admin-port") + 1]) if "--admin-port" in args else None


def contention_total(server: Server) -> dict[str, int]:
    """The host's contention counters summed over its processes (empty for a non-geecache server)."""
    port = admin_port(server)
    if port is None:
        return {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/stats/contention")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET /stats/contention answered {resp.status}: {body[:200]!r}")
        return json.loads(body)["total"]
    finally:
        conn.close()


def measure_pinned(server: Server, layout: Layout, seconds: float, warmup: float) -> dict:
    """Warm *server*, then one wrk run on ``layout.load``: CPU per hit, per core, contention, balance."""
    threads = len(layout.load)
    with pinned(layout.load):
        run_load(server.url, warmup, threads, CONNECTIONS)
        c0, cpu0 = contention_total(server), process_cpu(server.proc.pid)
        r = run_load(server.url, seconds, threads, CONNECTIONS)
    cpu1, c1 = process_cpu(server.proc.pid), contention_total(server)
    spent = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
    cpu = sum(spent.values())
    n = r["requests"]
    r.update(cpu_us=cpu * 1e6 / n, rps_per_core=n / cpu if cpu else float("inf"), cores=cpu / r["wall"],
             **{f"{k}_per_req": (c1[k] - c0.get(k, 0)) / n for k in c1})
    # How evenly the kernel spread the connections: the busiest child's share of the children's CPU.
    workers = [v for pid, v in spent.items() if pid != server.proc.pid]
    if workers and sum(workers) > 0:
        r["busiest_share"] = max(workers) / sum(workers)
    return r


# -- arena only ----------------------------------------------------------------------------


def arena_worker(arena, w: int, mode: str, seconds: float, max_ops: int, out_fd: int) -> None:
    """One hammering process: gets, a delete every DELETE_EVERY ops, a flight-guarded reload on a miss."""
    keys = [f"hot{i}" if mode == "hot" else f"p{w}-{i}" for i in range(HOT_KEYS)]
    arena.register_process()
    gets = hits = loads = ops = 0
    t0 = time.process_time()
    deadline = time.monotonic() + seconds
    while ops < max_ops:
        for k in keys:
            ops += 1
            if ops % DELETE_EVERY == 0:
                # A different key each time, read again within the next HOT_KEYS ops: a reload.
                arena.delete("bench", keys[ops // DELETE_EVERY % HOT_KEYS])
                continue
            gets += 1
            if arena.get("bench", k) is not None:
                hits += 1
            elif arena.try_begin("bench", k):
                try:
                    arena.set("bench", k, ARENA_VALUE)
                    loads += 1
                finally:
                    arena.end("bench", k)
        if time.monotonic() > deadline:
            break
    cpu = time.process_time() - t0
    os.write(out_fd, json.dumps({"ops": ops, "gets": gets, "hits": hits, "loads": loads, "cpu": cpu}).encode())


def contention_sum(arena) -> dict[str, int]:
    """The arena's contention counters summed over every claimed row (they never go back)."""
    from geecache.shm.stats import contention_total

    return contention_total(arena.contention())


def fork_all(procs: int, body, seconds: float) -> list[dict]:
    """Run ``body(w, out_fd)`` in *procs* forked processes at once; the JSON each wrote to its pipe."""
    from tests.support.proc import reap

    pipes, pids = [], []
    for w in range(procs):
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                body(w, wfd)
                code = 0
            finally:
                os._exit(code)
        os.close(wfd)
        pipes.append(r)
        pids.append(pid)
    reports = []
    for r in pipes:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        if data:
            reports.append(json.loads(data))
    status = reap(pids, timeout=seconds + 60)
    if any(status.values()) or len(reports) != procs:
        raise RuntimeError(f"arena processes failed: {status}")
    return reports


def run_processes(arena, procs: int, mode: str, seconds: float, max_ops: int) -> dict:
    """*procs* ``arena_worker``s at once; their summed figures and the contention they caused."""
    before = contention_sum(arena)
    reports = fork_all(procs, lambda w, fd: arena_worker(arena, w, mode, seconds, max_ops, fd), seconds)
    total = {k: sum(x[k] for x in reports) for k in reports[0]}
    after = contention_sum(arena)
    total.update({k: after[k] - before.get(k, 0) for k in after})
    return total


def shared_writes_per_hit(arena, procs: int, gets_each: int) -> dict:
    """Hits only, *procs* processes on the hot keys: CPU per hit, and reference-byte stores per hit.

    Each store raises a byte by one and no hand runs in a hits-only pass,
    so the bytes' sum after minus before counts the stores exactly.
    """
    keys = [f"hot{i}" for i in range(HOT_KEYS)]
    for k in keys:
        arena.set("bench", k, ARENA_VALUE)
    start, end = arena._refs_off, arena._refs_off + arena._n_shards * arena._sps
    before = sum(arena._mm[start:end])

    def hits(_w: int, out_fd: int) -> None:
        get = arena.get
        t0 = time.process_time()
        for n in range(gets_each):
            if get("bench", keys[n % HOT_KEYS]) is None:
                raise AssertionError("a hits-only pass missed")
        os.write(out_fd, json.dumps({"cpu": time.process_time() - t0}).encode())

    reports = fork_all(procs, hits, 120)
    stores = sum(arena._mm[start:end]) - before
    n = procs * gets_each
    return {"hits": n, "ref_stores": stores, "per_hit": stores / n,
            "cpu_us": sum(r["cpu"] for r in reports) * 1e6 / n}


def run_arena_only(seconds: float, max_ops: int, procs_list=ARENA_PROCS, gets_each: int = 100_000) -> list[dict]:
    """The arena-only rows: hot and disjoint keys at each process count, then the hits-only pass."""
    from geecache.shm import Arena

    arena = Arena.create(32 << 20, shards=8)
    try:
        arena.configure_group("bench", 16 << 20)
        rows = []
        for mode in ("hot", "disjoint"):
            for procs in procs_list:
                progress(f"arena only: {procs} process(es), {mode} keys")
                rows.append({"mode": mode, "procs": procs, **run_processes(arena, procs, mode, seconds, max_ops)})
        for procs in sorted({1, max(procs_list)}):
            progress(f"arena only: hits-only pass, {procs} process(es)")
            rows.append({"mode": "hits only", "procs": procs, **shared_writes_per_hit(arena, procs, gets_each)})
        return rows
    finally:
        arena.close()
        arena.unlink()


# -- tables, plot -------------------------------------------------------------------------


def efficiency_rows(points: list[dict]) -> list[list]:
    """Rows of the main table from measured points (``server``, ``n``, ``layout`` and the figures).

    Efficiency is each point's req/s per server core over that server's
    1-worker (or GOMAXPROCS 1) figure.
    """
    base = {p["server"]: p["rps_per_core"] for p in points if p["n"] == 1}
    rows = []
    for p in points:
        b = base.get(BASE_OF.get(p["server"], p["server"]))
        rows.append([p["server"], p["n"], p["layout"], p["rps"], p["cores"], p["cpu_us"], p["rps_per_core"],
                     p["rps_per_core"] / b if b else None, p.get("busiest_share")])
    return rows


#: The contention counters the tables show, with their column names (``*_ns`` shown as µs).
CONTENTION_COLUMNS = (
    ("shard_lock_waits", "shard-lock waits"), ("shard_lock_wait_ns", "shard-lock wait µs"),
    ("flight_lock_waits", "flight-lock waits"), ("flight_lock_wait_ns", "flight-lock wait µs"),
    ("seqlock_conflicts", "seqlock conflicts"), ("flight_collisions", "flight collisions"),
    ("flight_full", "flight table full"),
)


def counted(counts: dict, per: float) -> list:
    """The CONTENTION_COLUMNS cells of *counts* divided by *per* (ns shown as µs)."""
    return [counts.get(k, 0) / per / (1000 if k.endswith("_ns") else 1) for k, _ in CONTENTION_COLUMNS]


def contention_rows(points: list[dict]) -> list[list]:
    """Per-request contention of the geecache points."""
    return [[p["n"], *counted({k: p.get(f"{k}_per_req", 0.0) for k, _ in CONTENTION_COLUMNS}, 1)]
            for p in points if p["server"] == "geecache"]



def arena_rows(rows: list[dict]) -> list[list]:
    """Per-op figures of the arena-only runs (the hits-only pass is its own table)."""
    out = []
    for r in rows:
        if r["mode"] == "hits only":
            continue
        ops = max(1, r["ops"])
        out.append([r["mode"], r["procs"], r["ops"], r["cpu"] * 1e6 / ops, (r["gets"] - r["hits"]) / ops,
                    *counted(r, ops)])
    return out


def plot(points: list[dict], title: str) -> str | None:
    """Efficiency and µs per hit against workers, one line per server; the PNG's path, or None."""
    plt = _pyplot()
    if plt is None:
        progress("matplotlib not importable; skipping plot scaling.png")
        return None
    from matplotlib.ticker import MaxNLocator

    base = {p["server"]: p["rps_per_core"] for p in points if p["n"] == 1}
    path = plot_path("scaling.png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    try:
        for name in dict.fromkeys(p["server"] for p in points):
            mine = [p for p in points if p["server"] == name]
            xs = [p["n"] for p in mine]
            b = base.get(BASE_OF.get(name, name))
            style = {"marker": "s", "ls": "none"} if name in BASE_OF else {"marker": "o"}
            if b:
                ax1.plot(xs, [p["rps_per_core"] / b for p in mine], label=name, **style)
            ax2.plot(xs, [p["cpu_us"] for p in mine], label=name, **style)
        ax1.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax1.set(title="efficiency per worker (req/s per server core ÷ 1 worker)", xlabel="workers / GOMAXPROCS",
                ylabel="efficiency")
        ax2.set(title="server CPU µs per hit (whole process tree)", xlabel="workers / GOMAXPROCS", ylabel="µs")
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            ax.title.set_fontsize(10)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


# -- the bench -----------------------------------------------------------------------------


def run(quick: bool, *, worker_counts=WORKER_COUNTS, go_procs=GO_PROCS, arena_procs=ARENA_PROCS,
        reuseport: bool = True) -> dict:
    """The whole bench; the keyword arguments shrink it (the perf tool's own test runs it tiny)."""
    seconds, warmup, rounds = (1, 1, 1) if quick else (4, 1, 2)
    arena_seconds, arena_ops = (0.3, 20_000) if quick else (2.0, 2_000_000)
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    progress(f"load generator: {load_generator()}; {len(cpus)} CPUs {cpus}; workers {list(worker_counts)}; "
             f"Go GOMAXPROCS {list(go_procs)}; {seconds}s per run, {rounds} interleaved round(s)")
    tmp = tempfile.mkdtemp(prefix="geecache-scaling-")
    servers: list[tuple[Server, str, int, Layout]] = []
    notes = []
    runs: dict[tuple[str, int], list[dict]] = {}
    try:
        for n in worker_counts:
            layout = plan_layout(n, cpus)
            with pinned(layout.server):
                servers.append((start_geecache(n, tmp), "geecache", n, layout))
        if reuseport and max(worker_counts) > 1:
            # The widest server again with a socket per worker: how evenly the kernel spreads
            # connections without the shared accept queue (the busiest-share column).
            n = max(worker_counts)
            layout = plan_layout(n, cpus)
            with pinned(layout.server):
                servers.append((start_geecache(n, tmp, name=REUSEPORT, reuseport=True), REUSEPORT, n, layout))
        binary = groupcache_binary(tmp)
        if binary:
            for g in go_procs:
                layout = plan_layout(g, cpus)
                with pinned(layout.server):
                    servers.append((start_groupcache(binary, name=f"Go groupcache GOMAXPROCS={g}",
                                                     env={"GOMAXPROCS": str(g)}), "Go groupcache", g, layout))
        else:
            notes.append("Go groupcache not measured: no binary ($GEECACHE_GROUPCACHE_BIN, "
                         "/tmp/gcgo/groupcache-bench) and none could be built")
        # Interleaved rounds, medians: drift on a shared box then hits every point alike.
        for r in range(rounds):
            for server, kind, n, layout in servers:
                progress(f"round {r + 1}/{rounds}: {server.name}, {n} ({layout.describe()})")
                runs.setdefault((kind, n), []).append(measure_pinned(server, layout, seconds, warmup))
    finally:
        for server, *_ in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    points = []
    for (kind, n), rs in runs.items():
        layout = next(lay for _s, k, m, lay in servers if (k, m) == (kind, n))
        keys = [k for k in rs[0] if isinstance(rs[0][k], (int, float))]
        p = {k: statistics.median(x[k] for x in rs) for k in keys}
        tag = layout.describe()
        if n > len(layout.server):
            tag += f"; {n} workers on {len(layout.server)} CPUs"
        points.append({**p, "server": kind, "n": n, "layout": tag})
    arena = run_arena_only(arena_seconds, arena_ops, arena_procs, gets_each=20_000 if quick else 200_000)
    title = f"Cache hits per server core, {load_generator()} -c{CONNECTIONS}; 1 worker: {plan_layout(1, cpus).describe()}"
    wide = next((n for n in range(2, max(worker_counts) + 1) if not plan_layout(n, cpus).disjoint), None)
    if wide:
        title += f"; {wide}+ workers: {plan_layout(wide, cpus).describe()}"
    png = plot(points, title)
    one = {p["server"]: p for p in points if p["n"] == 1}
    hits_only = [r for r in arena if r["mode"] == "hits only"]
    summary = {f"arena_hits_only_{r['procs']}_cpu_us": r["cpu_us"] for r in hits_only}
    for p in points:
        slug = {"geecache": "geecache", REUSEPORT: "reuseport"}.get(p["server"], "go")
        summary[f"{slug}_{p['n']}_cpu_us"] = p["cpu_us"]
        first = one.get(BASE_OF.get(p["server"], p["server"]))
        if first:
            summary[f"{slug}_{p['n']}_efficiency"] = p["rps_per_core"] / first["rps_per_core"]
        if "busiest_share" in p and p["n"] > 1:
            summary[f"{slug}_{p['n']}_busiest_share"] = p["busiest_share"]
    if "geecache" in one and "Go groupcache" in one:
        summary["geecache_vs_go_per_core_1"] = one["geecache"]["rps_per_core"] / one["Go groupcache"]["rps_per_core"]
    tables = [
        table(f"Cache hits by worker count ({load_generator()} -c{CONNECTIONS}, wrk threads = its CPUs; "
              f"medians of {rounds} round(s); efficiency = req/s per server core / 1 worker's)",
              ["server", "workers", "CPU layout", "req/s", "server cores used", "server CPU µs/hit",
               "req/s per server core", "efficiency", "busiest worker's CPU share"], efficiency_rows(points)),
        table("Contention per request over HTTP (every request a hit; from GET /stats/contention)",
              ["workers", *(c for _, c in CONTENTION_COLUMNS)], contention_rows(points)),
        table(f"Arena only, no HTTP: {HOT_KEYS} keys per process (hot: the same for all; disjoint: its own), "
              f"a delete every {DELETE_EVERY} ops and a flight-guarded reload on each miss; per op",
              ["keys", "processes", "ops", "CPU µs/op", "misses", *(c for _, c in CONTENTION_COLUMNS)],
              arena_rows(arena)),
        table(f"Arena only, hits only: every process reads the same {HOT_KEYS} hot keys",
              ["processes", "hits", "CPU µs/hit", "reference-byte stores", "stores per hit"],
              [[r["procs"], r["hits"], r["cpu_us"], r["ref_stores"], r["per_hit"]] for r in hits_only]),
        table("Writes to shared cache lines per hit", ["what a hit writes", "how often / whose line"],
              [list(r) for r in SHARED_WRITES]
              + [[f"measured, arena only, {r['procs']} process(es) on {HOT_KEYS} hot keys",
                  f"{r['ref_stores']} reference-byte stores in {r['hits']:,} hits = {r['per_hit']:.2e} per hit"]
                 for r in hits_only]),
    ]
    if notes:
        tables.append(table("Notes", ["note"], [[n] for n in notes]))
    return result("scaling", tables, summary, [png] if png else [])


if __name__ == "__main__":
    from tests.perf.common import print_result

    print_result(run("--quick" in sys.argv))
