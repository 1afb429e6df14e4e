"""Batch gets against single GETs: keys/s on one host and with keys spread over three.

    python tests/perf/bench_batch.py [--quick]

Real supervisors on loopback, **one worker each**, serving the group
``bench`` (the ``counting`` test loader: ``value-<key>``, no delay); the
three-host case lists its members with ``--peers`` (no etcd).  The load is
``geecache.Client`` from a few threads, the same client both ways, so the
ratio is what batching saves per key (client and server): ``Client.get`` per
key against ``Client.get_many`` of 100 keys (one ``POST /api/batch``).

- **one host, cached**: every key in the host's arena.
- **three hosts, remote**: keys the two other hosts own, cached on their
  owners and new to A (a fresh pool walked once), so every single GET is a
  peer fetch and every batch one peer batch per owner.
- **three hosts, hot**: the same keys again: A serves its hot copies (``--hot-share 1``,
  so both pools' copies fit).

Every answer is checked (the value is exactly ``value-<key>``), and A's
``/stats`` per case (peer_hits, hot_hits, loads) are in the summary.  On a 2-core
box the client threads and the hosts share the cores: only the ratios carry
(target: batch/single >= 10x on one host).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from geecache.client import Client  # noqa: E402
from geecache.cluster.consistenthash import Ring  # noqa: E402
from tests.perf.common import progress, result, table  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.proc import start_supervisor  # noqa: E402

GROUP = "bench"
CONFIG = f'[[groups]]\nname = "{GROUP}"\nloader = "tests.support.loaders:counting"\nmax_bytes = "16MiB"\n'
BATCH = 100
THREADS = 4
ENV = {"GEECACHE_TEST_LOAD_DELAY": "0"}


def _run(url: str, keys: list[str], batch: int) -> float:
    """Keys/s of reading *keys* through *url*, *batch* keys per request (1: single GETs), THREADS threads."""
    chunks = [keys[i:i + batch] for i in range(0, len(keys), batch)]
    shares = [chunks[t::THREADS] for t in range(THREADS)]
    bad: list[str] = []

    def work(share):
        with Client(url, timeout=10.0) as c:
            for chunk in share:
                got = {chunk[0]: c.get(chunk[0], group=GROUP)} if batch == 1 else c.get_many(chunk, group=GROUP)
                if len(got) != len(chunk) or any(got[k] != f"value-{k}".encode() for k in chunk):
                    bad.append(chunk[0])

    threads = [threading.Thread(target=work, args=(s,)) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if bad:
        raise AssertionError(f"{len(bad)} wrong answers, e.g. for {bad[0]!r}")
    return len(keys) / elapsed


def _warm(url: str, keys: list[str]) -> None:
    with Client(url, timeout=10.0) as c:
        for i in range(0, len(keys), BATCH):
            c.get_many(keys[i:i + BATCH], group=GROUP)


def run(quick: bool = False, n: int | None = None) -> dict:
    """One host, then three: single GETs and 100-key batches of the same *n* keys (by default
    2,000 quick, else 20,000)."""
    n = n or (2_000 if quick else 20_000)
    tmp = Path(tempfile.mkdtemp(prefix="geecache-bench-batch-"))
    (tmp / "geecache.toml").write_text(CONFIG)
    rows, summary = [], {}
    try:
        progress(f"one host, {n} cached keys, {THREADS} client threads")
        h = start_supervisor(tmp, "--config", str(tmp / "geecache.toml"), workers=1, env=ENV)
        try:
            url = f"http://127.0.0.1:{h.port}"
            keys = [f"k{i}" for i in range(n)]
            _warm(url, keys)
            single = _run(url, keys, 1)
            batched = _run(url, keys, BATCH)
        finally:
            h.stop()
        rows.append(["one host, cached", round(single), round(batched), round(batched / single, 1)])
        summary.update({"one_host.single_keys_per_s": single, "one_host.batch_keys_per_s": batched,
                        "one_host.ratio": batched / single})

        progress("three hosts (--peers), keys A does not own: remote, then hot")
        ports = [free_port() for _ in range(3)]
        members = [f"http://127.0.0.1:{p}" for p in ports]
        hosts = []
        try:
            for port in ports:
                # A hot region as large as the group: both pools' hot copies must stay for the hot case.
                hosts.append(start_supervisor(tmp, "--config", str(tmp / "geecache.toml"), "--peers",
                                              ",".join(members), "--arena", "64MiB", "--hot-share", "1",
                                              workers=1, port=port, env=ENV, wait=False))
            for host in hosts:
                host.wait_ready(1)
            ring = Ring()
            ring.add(*members)
            a = members[0]
            # Two fresh pools (one per mode), each cached on its owners only.
            pools = {}
            for mode in ("single", "batch"):
                pool = [k for k in (f"{mode}{i}" for i in range(n * 3)) if ring.get(k) != a][:n]
                for owner in members[1:]:
                    _warm(owner, [k for k in pool if ring.get(k) == owner])
                pools[mode] = pool
            stats = lambda: hosts[0].admin_json("/stats")[GROUP]  # noqa: E731
            counted = {}

            def measured(name, pool, batch):
                before = stats()
                rate = _run(a, pool, batch)
                after = stats()
                counted[name] = {f: after[f] - before[f] for f in ("peer_hits", "hot_hits", "loads")}
                return rate

            remote_single = measured("remote_single", pools["single"], 1)
            remote_batch = measured("remote_batch", pools["batch"], BATCH)
            hot_single = measured("hot_single", pools["single"], 1)
            hot_batch = measured("hot_batch", pools["batch"], BATCH)
            progress(f"A's counters per case: {counted}")
        finally:
            for host in hosts:
                host.stop()
        rows.append(["three hosts, remote", round(remote_single), round(remote_batch),
                     round(remote_batch / remote_single, 1)])
        rows.append(["three hosts, hot", round(hot_single), round(hot_batch), round(hot_batch / hot_single, 1)])
        summary.update({"three_hosts.remote_single_keys_per_s": remote_single,
                        "three_hosts.remote_batch_keys_per_s": remote_batch,
                        "three_hosts.remote_ratio": remote_batch / remote_single,
                        "three_hosts.hot_single_keys_per_s": hot_single,
                        "three_hosts.hot_batch_keys_per_s": hot_batch,
                        "three_hosts.hot_ratio": hot_batch / hot_single})
        summary.update({f"three_hosts.{case}.{f}": v for case, c in counted.items() for f, v in c.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result("batch", [table(f"keys/s: single GETs vs {BATCH}-key batches ({THREADS} client threads, "
                                  f"{n} keys, 1 worker per host)",
                                  ["case", "single GET keys/s", "batch keys/s", "batch/single"], rows)], summary)


if __name__ == "__main__":
    from tests.perf.common import print_result

    print_result(run("--quick" in sys.argv))
