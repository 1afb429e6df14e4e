"""The cluster at 10, 100 and 1,000 hosts, studied in-process: no sockets, no etcd.

This machine has 2 cores; hosts beyond a handful are out of reach, so the
questions a large deployment asks are answered by running the project's own
logic on simulated member lists:

* **key balance**: each member's exact share of the hash space
  (``consistenthash.Ring.shares``) with today's vnode count, as max/mean and
  min/mean;
* **keys moved** per join and per leave: sampled keys whose owner changed,
  against the ideal 1/N, and a check that every moved key moved to (or from)
  the member that changed and no other (the consistent-hash property);
* **ring rebuild**: the CPU time of one whole build (``Ring.set_nodes``) and of
  deriving the ring for one join from the one in use (``Ring.with_nodes``, what
  every worker of every host does per membership change), and of one ``Ring.get``;
* **etcd traffic per host change**: the registrar watches the whole prefix,
  so one join (a PUT) or leave (a DELETE) is one watch event delivered to
  every member; its size is the etcd ``WatchResponse`` protobuf a watcher
  receives for it (aetcd's own generated messages), with the registrar's key
  and value (``prefix + advertise`` -> ``advertise``); plus the lease
  keepalives every host sends (one per lease_ttl / 3);
* **peer connections** each host holds: every worker keeps a
  ``ConnectionPool`` per other member, at least one connection to each member
  it has called, at most ``max_idle`` idle ones;
* **invalidation fan-out** per write: the members an owner's
  ``HTTPPool.invalidate`` sends to (the pool's own peer table after a
  refresh on the simulated member list, counted, not assumed).

``docs/architecture.md`` (Scaling out) reads these figures: where the design
stops scaling and what changes first.
"""

from __future__ import annotations

import inspect
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from geecache.cluster.consistenthash import DEFAULT_REPLICAS, Ring  # noqa: E402
from geecache.cluster.pool import HTTPPool, StaticMembers  # noqa: E402
from geecache.cluster.transport import ConnectionPool  # noqa: E402
from geecache.cluster.registry.config import REGISTRY_PREFIX  # noqa: E402
from tests.perf.common import print_result, progress, result, table  # noqa: E402

SIZES = (10, 100, 1000)
#: Workers per host assumed for the connection counts (the project's examples run 2-8).
WORKERS = 4
#: The lease a host keeps alive (the default lease_ttl).
LEASE_TTL = 10


def member_names(n: int) -> list[str]:
    """*n* advertised addresses as a data centre would hand them out."""
    return [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8001" for i in range(n)]


def _keys(n: int) -> list[str]:
    return [f"user:{i}:profile" for i in range(n)]


def balance(ring: Ring) -> tuple[float, float]:
    """(max share / mean share, min share / mean share) over the ring's members."""
    shares = ring.shares().values()
    mean = 1 / len(shares)
    return max(shares) / mean, min(shares) / mean


def moved(before: Ring, after: Ring, keys: list[str], changed: str) -> tuple[float, bool]:
    """(share of *keys* whose owner differs, whether each of them moved to or from *changed*)."""
    n = 0
    only_changed = True
    for key in keys:
        a, b = before.get(key), after.get(key)
        if a != b:
            n += 1
            only_changed = only_changed and changed in (a, b)
    return n / len(keys), only_changed


def rebuild_ms(names: list[str]) -> float:
    """CPU ms of one ring build over *names* (thread time: the least disturbed by neighbours)."""
    ring = Ring()
    started = time.thread_time_ns()
    ring.set_nodes(names)
    return (time.thread_time_ns() - started) / 1e6


def derive_ms(ring: Ring, names: list[str]) -> float:
    """CPU ms of deriving the ring over *names* from *ring* (``Ring.with_nodes``: what a pool does)."""
    started = time.thread_time_ns()
    ring.with_nodes(names)
    return (time.thread_time_ns() - started) / 1e6


def get_us(ring: Ring, keys: list[str]) -> float:
    started = time.thread_time_ns()
    for key in keys:
        ring.get(key)
    return (time.thread_time_ns() - started) / 1e3 / len(keys)


def watch_event_bytes(advertise: str, delete: bool) -> int:
    """Bytes of the etcd WatchResponse one watcher receives for a host's PUT or DELETE."""
    from aetcd.rpc import kv_pb2, rpc_pb2  # grpc's messages: imported here, in this process only

    key = (REGISTRY_PREFIX + advertise).encode()
    if delete:
        kv = kv_pb2.KeyValue(key=key, mod_revision=1 << 40)
        kind = kv_pb2.Event.DELETE
    else:
        kv = kv_pb2.KeyValue(key=key, value=advertise.encode(), create_revision=1 << 40,
                             mod_revision=1 << 40, version=1, lease=1 << 62)
        kind = kv_pb2.Event.PUT
    response = rpc_pb2.WatchResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=1 << 63, member_id=1 << 63, revision=1 << 40, raft_term=1 << 10),
        watch_id=1, events=[kv_pb2.Event(type=kind, kv=kv)])
    return response.ByteSize()


def invalidation_fanout(names: list[str]) -> int:
    """Members the owner's HTTPPool.invalidate sends one write's invalidation to (counted)."""
    pool = HTTPPool(names[0], StaticMembers(names))
    pool._refresh()  # what invalidate() does first; it then sends to every peer in the table
    return len(pool._peers)


def max_idle_per_peer() -> int:
    return inspect.signature(ConnectionPool).parameters["max_idle"].default


def run(quick: bool = False, sizes=SIZES) -> dict:
    samples = 20_000 if quick else 100_000
    keys = _keys(samples)
    idle = max_idle_per_peer()
    rows, cost_rows, traffic_rows = [], [], []
    summary: dict[str, float] = {}
    for n in sizes:
        progress(f"scale: {n} hosts")
        names = member_names(n + 1)
        ring = Ring()
        ring.set_nodes(names[:n])
        hi, lo = balance(ring)
        joined = Ring()
        joined.set_nodes(names)
        join_share, join_clean = moved(ring, joined, keys, names[n])
        left = Ring()
        left.set_nodes(names[1:n])
        leave_share, leave_clean = moved(ring, left, keys, names[0])
        rows.append([n, DEFAULT_REPLICAS, round(hi, 3), round(lo, 3), round(join_share, 4),
                     round(leave_share, 4), round(1 / n, 4), "yes" if join_clean and leave_clean else "NO"])
        build = rebuild_ms(names[:n])
        derive = derive_ms(ring, names)
        lookup = get_us(ring, keys[:20_000])
        cost_rows.append([n, n * DEFAULT_REPLICAS, round(build, 1), round(derive, 2),
                          round(derive * WORKERS * n / 1000, 2), round(lookup, 2)])
        put, delete = watch_event_bytes(names[n], False), watch_event_bytes(names[0], True)
        fanout = invalidation_fanout(names[:n])
        traffic_rows.append([n, n, put * n, delete * n, round(n * 3 / LEASE_TTL, 1),
                             WORKERS * (n - 1), WORKERS * (n - 1) * idle, fanout])
        summary.update({f"{n}.balance_max": hi, f"{n}.moved_join": join_share, f"{n}.moved_leave": leave_share,
                        f"{n}.rebuild_ms": build, f"{n}.derive_ms": derive,
                        f"{n}.invalidations_per_write": fanout,
                        f"{n}.watch_bytes_per_join": put * n})
    tables = [
        table(f"Key balance and movement ({samples:,} sampled keys; ideal moved share 1/N)",
              ["hosts", "vnodes each", "max/mean share", "min/mean share", "moved on a join",
               "moved on a leave", "1/N", "moved only to/from the changed host"], rows),
        table(f"Ring cost per membership change ({WORKERS} workers a host)",
              ["hosts", "vnodes in ring", "whole build ms (one worker)", "one join derived ms (one worker)",
               "cluster CPU s per join", "get µs"], cost_rows),
        table(f"etcd and peer traffic (lease_ttl {LEASE_TTL} s, {WORKERS} workers a host, max_idle {idle})",
              ["hosts", "watch events per host change", "etcd bytes sent per join", "etcd bytes sent per leave",
               "lease keepalives/s into etcd", "peer connections a host holds (min)",
               "peer connections a host may hold (bound)", "invalidation requests per write"], traffic_rows),
    ]
    return result("scale", tables, summary)


if __name__ == "__main__":
    print_result(run(quick="--quick" in sys.argv))
