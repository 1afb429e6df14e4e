"""Distributed throughput: local, remote and hot hits across three real hosts and etcd.

    python tests/perf/bench_cluster.py [--quick]

A real etcd (tests.support.etcd) and three supervisors on free loopback
ports, **one worker each**, discover each other and serve the group
``bench`` (the ``counting`` test loader: ``value-<key>``, no delay).  All
load goes to host A, over 127.0.0.1, in three cases:

- **local hit**: keys A owns, already in A's arena.
- **remote hit**: keys B or C owns, already cached on their owner, asked of
  A for the first time: A has no hot copy, so every request is a peer
  fetch.  Honest by construction: the pool holds a *fresh key per request*
  (sized from the local-hit rate, warmed on the owners beforehand, walked
  once; ``wrapped`` counts any request that had to reuse a key, expected 0).
- **hot hit**: keys B or C owns, fetched through A once before, so A serves
  its hot copy.

Each case is checked against A's ``/stats`` (its admin port): the counter it means to
exercise (local_hits, peer_hits, hot_hits) must account for the requests,
and the owners must not load during the remote case.  Every response is
checked (status 200 and exactly ``value-<key>`` for the key asked); the
success rate covers every request the bench sent, warming included.

The load generator is ``wrk`` when on PATH (Debian/Ubuntu: ``apt-get
install wrk``), one connection per thread so a Lua script can pair each
response with its key; else a bounded aiohttp client in a separate process
(slower; figures from the two are not comparable).  On a 2-core box the
generator, three hosts and etcd share the cores, so only the ratios carry
(target: remote/local >= 0.5, success 100%).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from geecache.cluster.consistenthash import Ring  # noqa: E402
from tests.perf.bench_http import tree_cpu_seconds  # noqa: E402
from tests.perf.common import load_generator, progress, result, table  # noqa: E402
from tests.support.etcd import start_etcd  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.proc import start_supervisor, wait_until  # noqa: E402

GROUP = "bench"
CONFIG = f"""
[[groups]]
name = "{GROUP}"
loader = "tests.support.loaders:counting"
"""
#: Concurrent connections of every measurement (wrk: one per thread).
CONNECTIONS = 16
#: Keys in the local and hot pools: small enough to warm in a moment, large enough to spread.
POOL = 2000
#: Cap on the remote (fresh-key) pool; warming it costs about one request per key.
MAX_FRESH = 120_000
LEASE_TTL = 5
#: The fresh pool covers remote hits up to this share of the local-hit rate (measured: 0.2-0.45
#: on 2 cores); a faster remote case wraps, and the "keys reused" column says so.
FRESH_SHARE = 0.8

# One connection per wrk thread: each thread's requests and responses then
# strictly alternate, so `last` is the key the response answers.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local all = {}
  for line in io.lines(args[1]) do all[#all + 1] = line end
  local n = tonumber(args[2])
  keys = {}
  for i = id + 1, #all, n do keys[#keys + 1] = all[i] end
  nkeys, pos, sent, ok, bad, last, sample = #keys, 0, 0, 0, 0, "", ""
end

function request()
  pos = pos + 1
  if pos > nkeys then pos = 1 end
  sent = sent + 1
  last = keys[pos]
  return wrk.format("GET", "/api?group=bench&key=" .. last)
end

function response(status, headers, body)
  if status == 200 and body == "value-" .. last then
    ok = ok + 1
  else
    bad = bad + 1
    if sample == "" then sample = status .. " " .. last end
  end
end

function done(summary, latency, requests)
  local ok, bad, wrapped, sample = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok")
    bad = bad + t:get("bad")
    wrapped = wrapped + math.max(0, t:get("sent") - t:get("nkeys"))
    if sample == "" then sample = t:get("sample") end
  end
  local e = summary.errors
  io.write(string.format(
    'GEECACHE_RESULT {"requests": %d, "seconds": %f, "ok": %d, "bad": %d, "errors": %d, ' ..
    '"wrapped": %d, "p50_ms": %f, "p99_ms": %f, "sample": "%s"}\n',
    summary.requests, summary.duration / 1e6, ok, bad, e.connect + e.read + e.write + e.timeout,
    wrapped, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, sample))
end
"""


# -- load generators ------------------------------------------------------------------------


def _finish(r: dict) -> dict:
    r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
    return r


def run_wrk(port: int, keys_file: Path, seconds: float, script: Path) -> dict:
    """One wrk run over the keys in *keys_file* (each thread walks its own slice)."""
    out = subprocess.run(
        ["wrk", f"-t{CONNECTIONS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "-s", str(script),
         f"http://127.0.0.1:{port}/", "--", str(keys_file), str(CONNECTIONS)],
        capture_output=True, text=True, timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("GEECACHE_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    return _finish(json.loads(line.split(" ", 1)[1]))


def client_main(port: int, keys_file: str, seconds: float, connections: int, once: bool) -> None:
    """Fallback generator (a separate process): *connections* keep-alive clients for *seconds*.

    Client i walks keys[i::connections]; with *once* it stops at the end of its
    slice, so the request count is bounded by the pool as well as by time.
    """
    import aiohttp

    keys = Path(keys_file).read_text().split()

    async def main() -> dict:
        latencies: list[float] = []
        counts = {"ok": 0, "bad": 0, "errors": 0, "wrapped": 0, "sample": ""}
        deadline = time.perf_counter() + seconds
        base = f"http://127.0.0.1:{port}/api?group={GROUP}&key="
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            async def client(mine: list[str]) -> None:
                i = 0
                while mine and time.perf_counter() < deadline:
                    if i >= len(mine):
                        if once:
                            return
                        counts["wrapped"] += 1
                    key = mine[i % len(mine)]
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        async with session.get(base + key) as resp:
                            body = await resp.read()
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        counts["errors"] += 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                    if resp.status == 200 and body == b"value-" + key.encode():
                        counts["ok"] += 1
                    else:
                        counts["bad"] += 1
                        counts["sample"] = counts["sample"] or f"{resp.status} {key}"

            started = time.perf_counter()
            await asyncio.gather(*(client(keys[i::connections]) for i in range(connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        n = len(latencies)
        return {**counts, "requests": n, "seconds": elapsed,
                "p50_ms": latencies[n // 2] * 1e3 if n else 0.0,
                "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3 if n else 0.0}

    print("GEECACHE_RESULT " + json.dumps(asyncio.run(main())))


def run_client(port: int, keys_file: Path, seconds: float, once: bool) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--client", str(port), str(keys_file), str(seconds),
         str(CONNECTIONS), "once" if once else "cycle"],
        capture_output=True, text=True, timeout=seconds + 60, cwd=REPO_ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("GEECACHE_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"load client failed (exit {out.returncode}): {out.stderr[-1000:]}")
    return _finish(json.loads(line.split(" ", 1)[1]))


# -- the cluster ------------------------------------------------------------------------------


class Cluster:
    """Three one-worker supervisors on free loopback ports, and etcd unless *static*; closed by pid.

    *static*: the hosts know each other from ``--peers`` (no etcd), as the
    shared anchors run them.  *config*: the group's TOML (``CONFIG`` if blank).
    """

    def __init__(self, tmp: Path, *, static: bool = False, config: str = CONFIG) -> None:
        self.tmp = tmp
        (tmp / "geecache.toml").write_text(config)
        self.hosts = []
        self.etcd = None if static else start_etcd()
        ports = [free_port() for _ in range(3)]
        # As the hosts name each other: by --peers' URLs, or by what each advertises in etcd.
        self.members = [f"http://127.0.0.1:{p}" if static else f"127.0.0.1:{p}" for p in ports]
        try:
            for port, member in zip(ports, self.members):
                where = (["--peers", ",".join(self.members)] if static else
                         ["--etcd", self.etcd.endpoint, "--advertise", member, "--lease-ttl", str(LEASE_TTL)])
                self.hosts.append(start_supervisor(
                    tmp, "--config", str(tmp / "geecache.toml"), *where, "--arena", "256MiB",
                    workers=1, port=port, wait=False,
                    env={"GEECACHE_TEST_LOAD_DELAY": "0", "GEECACHE_LOG_LEVEL": "warning"}))
            for h in self.hosts:
                h.wait_ready(1 if static else 2)  # the worker (and the registrar)
            for h in self.hosts:
                wait_until(lambda: sorted(h.admin_json("/cluster")["members"]) == sorted(self.members),
                           LEASE_TTL + 10, what=f"3 members on :{h.port}")
        except BaseException:
            self.close()
            raise

    def ring(self) -> Ring:
        """The hosts' ring, checked against host A's owner of a few keys."""
        ring = Ring()
        ring.add(*self.members)
        for key in (f"check{i}" for i in range(10)):
            assert self.hosts[0].admin_json(f"/cluster?key={key}")["owner"] == ring.get(key), key
        return ring

    def cpu_seconds(self) -> float:
        """The CPU time so far of the three hosts' whole process trees."""
        return sum(tree_cpu_seconds(h.proc.pid) for h in self.hosts)

    def stats(self, i: int) -> dict:
        return self.hosts[i].admin_json("/stats")[GROUP]

    def close(self) -> None:
        """Stop every host and etcd by pid; remove an arena a killed supervisor left behind."""
        for h in self.hosts:
            name = h.arena_name()
            h.stop()
            shm = Path("/dev/shm") / (name or "").lstrip("/")
            if name and shm.exists():
                progress(f"arena {name} of :{h.port} left behind; removing it")
                shm.unlink()
        if self.etcd is not None:
            self.etcd.close()


def owned_keys(ring: Ring, owners: set[str], prefix: str, n: int) -> list[str]:
    """The first *n* keys ``<prefix><i>`` that *ring* gives to one of *owners*."""
    out, i = [], 0
    while len(out) < n:
        key = f"{prefix}{i}"
        if ring.get(key) in owners:
            out.append(key)
        i += 1
    return out


def delta(after: dict, before: dict, field: str) -> int:
    return after[field] - before[field]


# -- the bench --------------------------------------------------------------------------------


def run(quick: bool) -> dict:
    seconds = 3 if quick else 8
    tmp = Path(tempfile.mkdtemp(prefix="geecache-bench-cluster-"))
    script = tmp / "keys.lua"
    script.write_text(WRK_SCRIPT)
    use_wrk = shutil.which("wrk") is not None
    totals = {"ok": 0, "sent": 0}  # guarded by totals_lock: the owners are warmed from two threads
    totals_lock = threading.Lock()

    def load(port: int, keys: list[str], name: str, secs: float, once: bool = False) -> dict:
        path = tmp / f"{name}.keys"
        path.write_text("\n".join(keys) + "\n")
        if use_wrk and not once:
            r = run_wrk(port, path, secs, script)
        else:  # warming walks each key once: the bounded client does that exactly
            r = run_client(port, path, secs, once)
        with totals_lock:
            totals["ok"] += r["ok"]
            totals["sent"] += r["ok"] + r["bad"] + r["errors"]
        if r["bad"] or r["errors"]:
            progress(f"{name}: {r['bad']} wrong answers, {r['errors']} socket errors (e.g. {r['sample']})")
        return r

    progress(f"load generator: {load_generator()}, {CONNECTIONS} connections, {seconds}s per case; "
             "etcd + 3 supervisors, 1 worker each")
    cluster = Cluster(tmp)
    try:
        a = cluster.hosts[0]
        ring = cluster.ring()  # the bench's ring must be the hosts' ring
        others = set(cluster.members[1:])
        local_keys = owned_keys(ring, {cluster.members[0]}, "loc", POOL)
        hot_keys = owned_keys(ring, others, "hot", POOL)

        progress(f"warming {POOL} local keys and {POOL} hot copies through A")
        load(a.port, local_keys, "warm-local", 120, once=True)
        load(a.port, hot_keys, "warm-hot", 120, once=True)
        rows, got = [], {}

        def case(label: str, keys: list[str], counter: str, must_be_fresh: bool = False) -> None:
            before = cluster.stats(0)
            r = load(a.port, keys, label, seconds)
            after = cluster.stats(0)
            share = delta(after, before, counter) / max(1, r["requests"])
            got[label] = r
            # Only the fresh pool must not repeat; the others cycle on purpose.
            rows.append([label, r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], counter, round(share, 3),
                         str(r["wrapped"]) if must_be_fresh else "cycled"])
            progress(f"{label}: {r['rps']:,.0f} req/s, {counter} per request {share:.3f}")

        # A fresh key per request, sized from a short local-hit probe.
        probe = load(a.port, local_keys, "local-probe", max(1, seconds // 3))
        n_fresh = min(MAX_FRESH, int(probe["rps"] * seconds * FRESH_SHARE) + 1000)
        fresh = owned_keys(ring, others, "fresh", n_fresh)
        progress(f"warming {n_fresh} fresh keys on their owners (B, C)")
        # Both owners at once: each owner's one worker is the bottleneck, not the cores.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: load(cluster.hosts[i].port, [k for k in fresh if ring.get(k) == cluster.members[i]],
                                         f"warm-fresh-{i}", 300, once=True), (1, 2)))
        # The three cases back to back, so a neighbour's load on a shared box skews the ratios less.
        owners_before = [cluster.stats(i) for i in (1, 2)]
        case("remote hit", fresh, "peer_hits", must_be_fresh=True)
        owner_loads = sum(delta(cluster.stats(i), b, "loads") for i, b in zip((1, 2), owners_before))
        case("local hit", local_keys, "local_hits")
        case("hot hit", hot_keys, "hot_hits")
        if got["remote hit"]["wrapped"]:
            progress(f"remote hit: {got['remote hit']['wrapped']} requests reused a key (pool too small)")
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    local, remote, hot = (got[k]["rps"] for k in ("local hit", "remote hit", "hot hit"))
    success = totals["ok"] / max(1, totals["sent"])
    summary = {
        "local_hit_rps": local, "remote_hit_rps": remote, "hot_hit_rps": hot,
        "remote_vs_local": remote / local, "hot_vs_local": hot / local,
        "success_rate": success, "requests_checked": totals["sent"],
        "requests_failed": totals["sent"] - totals["ok"], "owner_loads_during_remote": owner_loads,
        "remote_keys_reused": got["remote hit"]["wrapped"],
    }
    tables = [
        table(f"Host A of 3 (etcd, 1 worker each), {load_generator()}, {CONNECTIONS} conns, {seconds}s per case",
              ["case", "req/s", "p50 ms", "p99 ms", "requests", "A counter", "counter/request", "keys reused"],
              rows),
        table("Ratios (targets: remote/local >= 0.5; success 100%)", ["figure", "value"],
              [["remote/local", remote / local], ["hot/local", hot / local],
               ["success rate", success], ["requests checked", totals["sent"]],
               ["requests failed", totals["sent"] - totals["ok"]],
               ["owner loads during remote case", owner_loads]]),
    ]
    return result("cluster", tables, summary)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--client"]:
        client_main(int(argv[1]), argv[2], float(argv[3]), int(argv[4]), argv[5] == "once")
    else:
        from tests.perf.common import print_result

        print_result(run("--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
