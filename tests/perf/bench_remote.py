"""The remote path's price: CPU per remote hit and per local hit, summed over a 3-host cluster.

    python tests/perf/main.py remote [--quick]

Three supervisors with static peers (``--peers``, no etcd), one worker each,
the group ``bench`` (the ``counting`` test loader: ``value-<key>``), as
``shared/anchors/cluster_side_by_side.py`` runs them; the hosts, the key
pools and the load generator are ``bench_cluster``'s.  All load goes to host A:

- **local hit**: keys A owns, already in A's arena;
- **remote hit**: keys B or C owns, cached on their owner and asked of A once
  each (a fresh key per request, warmed on the owners beforehand), so every
  request is a peer fetch and A never holds a hot copy of what it is asked.

Around each run the CPU time of the three hosts' whole process trees is read
from /proc, so a hit's cost is the **cluster's CPU over the requests
answered**, whichever host spent it (the load generator is not counted).
Rounds interleave the two cases; the figures are medians.  A's counters must
account for the requests (``local_hits``, ``peer_hits``), the owners must not
load during the remote case, and every answer is checked.  Target: a remote
hit costs at most 4x a local hit.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.perf.bench_cluster import CONNECTIONS, Cluster, WRK_SCRIPT, delta, owned_keys, run_client, run_wrk
from tests.perf.common import load_generator, progress, result, table

#: Keys in the local pool (walked round and round: they are all cached at A).
LOCAL_POOL = 2000
#: Remote keys warmed per round cover this share over the local-hit rate's (a remote hit
#: is cheaper than that, so a round never runs out of fresh keys: "keys reused" says so).
FRESH_SHARE = 0.6
#: Bounds the fresh pool (warming costs one request per key; 300k take about a minute).
MAX_FRESH = 300_000


def run(quick: bool, seconds: float | None = None, rounds: int | None = None, fresh: int | None = None) -> dict:
    """*seconds* per case, *rounds* of both cases, *fresh* remote keys per round (blank: sized
    from a local probe); a test passes tiny ones."""
    seconds = seconds or (2 if quick else 3)
    rounds = rounds or (1 if quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="geecache-bench-remote-"))
    script = tmp / "keys.lua"
    script.write_text(WRK_SCRIPT)
    use_wrk = shutil.which("wrk") is not None
    checked = {"ok": 0, "sent": 0}

    def load(port: int, keys: list[str], name: str, secs: float, once: bool = False) -> dict:
        path = tmp / f"{name}.keys"
        path.write_text("\n".join(keys) + "\n")
        r = run_wrk(port, path, secs, script) if use_wrk and not once else run_client(port, path, secs, once)
        checked["ok"] += r["ok"]  # (one thread at a time: the owners' warm-ups are summed after)
        checked["sent"] += r["ok"] + r["bad"] + r["errors"]
        if r["bad"] or r["errors"]:
            progress(f"{name}: {r['bad']} wrong answers, {r['errors']} socket errors (e.g. {r['sample']})")
        return r

    progress(f"load generator: {load_generator()}, {CONNECTIONS} connections, {seconds:g}s per case, "
             f"{rounds} rounds; 3 supervisors, static peers, 1 worker each")
    cluster = Cluster(tmp, static=True)
    try:
        a = cluster.hosts[0]
        ring = cluster.ring()
        others = set(cluster.members[1:])
        local_keys = owned_keys(ring, {cluster.members[0]}, "loc", LOCAL_POOL)
        load(a.port, local_keys, "warm-local", 120, once=True)
        if fresh is None:
            probe = load(a.port, local_keys, "local-probe", 1)
            fresh = min(MAX_FRESH // rounds, int(probe["rps"] * seconds * FRESH_SHARE) + 500)
        pool = owned_keys(ring, others, "fresh", fresh * rounds)
        progress(f"warming {len(pool)} remote keys on their owners (B, C)")

        def warm(i: int) -> dict:
            return load(cluster.hosts[i].port, [k for k in pool if ring.get(k) == cluster.members[i]],
                        f"warm-owner-{i}", 600, once=True)

        with ThreadPoolExecutor(2) as threads:
            list(threads.map(warm, (1, 2)))
        rows, figures = [], {"local": [], "remote": [], "local_rps": [], "remote_rps": []}
        owner_loads = reused = 0
        for r in range(rounds):
            for case in ("local", "remote"):
                keys = local_keys if case == "local" else pool[r * fresh:(r + 1) * fresh]
                counter = "local_hits" if case == "local" else "peer_hits"
                before = [cluster.stats(i) for i in range(3)]
                cpu0 = cluster.cpu_seconds()
                got = load(a.port, keys, f"{case}-{r}", seconds)
                cpu = cluster.cpu_seconds() - cpu0
                after = [cluster.stats(i) for i in range(3)]
                n = max(1, got["requests"])
                share = delta(after[0], before[0], counter) / n
                if case == "remote":
                    owner_loads += sum(delta(after[i], before[i], "loads") for i in (1, 2))
                    reused += got["wrapped"]
                figures[case].append(cpu / n * 1e6)
                figures[case + "_rps"].append(got["rps"])
                rows.append([r + 1, case, got["rps"], cpu / n * 1e6, got["requests"], counter, round(share, 3),
                             got["wrapped"] if case == "remote" else "cycled"])
                progress(f"round {r + 1} {case}: {got['rps']:,.0f} req/s, cluster CPU {cpu / n * 1e6:.1f} µs/hit, "
                         f"{counter} per request {share:.3f}")
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    local, remote = statistics.median(figures["local"]), statistics.median(figures["remote"])
    ratio = statistics.median(r / l for r, l in zip(figures["remote"], figures["local"]))
    success = checked["ok"] / max(1, checked["sent"])
    summary = {"local_hit_cpu_us": local, "remote_hit_cpu_us": remote, "remote_vs_local_cpu": ratio,
               "local_hit_rps": statistics.median(figures["local_rps"]),
               "remote_hit_rps": statistics.median(figures["remote_rps"]),
               "success_rate": success, "owner_loads_during_remote": owner_loads, "remote_keys_reused": reused}
    tables = [
        table(f"Cluster CPU per hit, all load to host A of 3 (static peers, 1 worker each), {load_generator()}, "
              f"{CONNECTIONS} conns, {seconds:g}s per case",
              ["round", "case", "req/s", "cluster CPU µs/hit", "requests", "A counter", "counter/request",
               "keys reused"], rows),
        table("Medians (target: remote <= 4x local)", ["figure", "value"],
              [["local hit, cluster CPU µs", local], ["remote hit, cluster CPU µs", remote],
               ["remote / local (paired median)", ratio], ["success rate", success],
               ["owner loads during remote", owner_loads], ["remote keys reused", reused]]),
    ]
    return result("remote", tables, summary)
