"""A ring change is not a load storm: a key's new owner asks its previous owner's cache first.

The cluster test runs a real etcd and real hosts and counts source loads with
the ``counting`` loader's own file; the pool tests drive ``HTTPPool`` over a
member list whose version moves, as the arena's ring region does.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading

import pytest

from geecache.group import Group
from geecache.storage import FunctionSource
from geecache.cluster.pool import HTTPPool
from tests.support.cluster import AUTH, Cluster, member
from tests.support.loaders import count_loads
from tests.support.proc import REAL_PAUSES, wait_until

KEYS = [f"k{i}" for i in range(300)]


class MovingMembers:
    """A member list whose version moves on ``set`` (the arena ring region's contract)."""

    def __init__(self, members: list[str]) -> None:
        self.version, self.list = 1, list(members)

    def set(self, members: list[str]) -> None:
        """Replace the member list, as the registrar does when etcd changes."""
        self.version, self.list = self.version + 1, list(members)

    def ring_version(self) -> int:
        """The current version."""
        return self.version

    def read_ring(self) -> tuple[int, list[str]]:
        """(version, members)."""
        return self.version, list(self.list)


def test_pool_names_the_previous_owner_within_the_window():
    a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    members = MovingMembers([a, b])
    pool = HTTPPool(c, members, handoff_window=30)
    pool.members()  # c's first ring: before c joined, a and b owned everything
    assert all(pool.handoff_peer(k) is None for k in KEYS)
    members.set([a, b, c])
    moved = [k for k in KEYS if pool.owner(k) == c]
    assert moved  # about a third of the keys
    for k in moved:
        assert pool.handoff_peer(k).address in (a, b)
    # Keys another host owns are never handed off here (pick routes them).
    assert all(pool.handoff_peer(k) is None or pool.owner(k) == c for k in KEYS)


def test_pool_first_ring_that_includes_this_host_hands_off_from_the_others():
    a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    pool = HTTPPool(c, MovingMembers([a, b, c]), handoff_window=30)
    moved = [k for k in KEYS if pool.owner(k) == c]
    assert moved and all(pool.handoff_peer(k).address in (a, b) for k in moved)


def test_pool_whose_first_ring_is_itself_alone_hands_off_from_the_others():
    # The supervisor writes [self] before the registrar hears from etcd; a request that
    # reaches the new host in between builds that ring first (seen in CI: no handoffs).
    a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    members = MovingMembers([c])
    pool = HTTPPool(c, members, handoff_window=30)
    pool.members()
    members.set([a, b, c])
    moved = [k for k in KEYS if pool.owner(k) == c]
    assert moved and all(pool.handoff_peer(k).address in (a, b) for k in moved)


def test_pool_without_a_window_never_hands_off():
    a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    members = MovingMembers([a, b])
    pool = HTTPPool(c, members)  # handoff_window 0: the library default
    pool.members()
    members.set([a, b, c])
    assert all(pool.handoff_peer(k) is None for k in KEYS)


def test_handoff_answer_comes_from_the_cache_only():
    loads = []

    async def source(key):
        loads.append(key)
        return f"v-{key}".encode()

    g = Group("g", FunctionSource(source))
    assert g.get_handoff_cached("absent") is None
    assert loads == []  # a handoff ask never loads
    asyncio.run(g.get("here"))
    assert loads == ["here"]
    assert g.get_handoff_cached("here")[0] == b"v-here"
    assert loads == ["here"]


@pytest.mark.procs
@pytest.mark.etcd
def test_a_host_joining_a_warm_cluster_reloads_almost_nothing(tmp_path):
    # Generous peer timeouts: on a loaded machine a timed-out peer call falls back to a
    # source load by design, and this test counts the loads the ring change causes.  (No
    # CPU-starved loop counts as a pause either: tests.support.proc.TEST_PAUSE_THRESHOLD.)
    cluster = Cluster(tmp_path, 3, args=("--peer-read-timeout", "10", "--peer-connect-timeout", "5"))
    count_file = str(tmp_path / "loads.txt")
    rng = random.Random(13)
    try:
        def read_all():
            for k in KEYS:
                host = rng.choice(cluster.hosts)
                status, body = host.get(f"/api?group=counted&key={k}")
                assert (status, body) == (200, f"value-{k}".encode()), (host.port, k, status)

        read_all()
        warm = count_loads(count_file)
        assert warm == len(KEYS)  # each key loaded once, on its owner

        # A handoff ask for a key nobody cached: 404, and no host loads it.
        status, _h, _b = cluster.hosts[0].request("GET", "/_geecache/counted/never-read?handoff=1", None, AUTH)
        assert status == 404
        assert count_loads(count_file, "never-read") == 0

        joined = cluster.add_host()
        cluster.wait_members(cluster.hosts)
        moved = sum(1 for k in KEYS if cluster.owner(joined, k) == member(joined))
        assert moved > len(KEYS) // 10  # the join moved keys (about a quarter)

        read_all()
        reloads = count_loads(count_file) - warm
        print(f"keys moved to the new host: {moved}; reloaded from the source: {reloads} of {len(KEYS)}")
        fields = ("loads", "peer_errors", "peer_skipped", "handoff_hits", "handoff_misses")
        totals = {f: sum(h.admin_json("/stats")["counted"][f] for h in cluster.hosts) for f in fields}
        print("summed over the hosts:", totals)
        assert reloads <= len(KEYS) * 2 // 100, (moved, reloads, totals)
        assert totals["handoff_hits"] > 0
    finally:
        cluster.close()


def _stats(host, group: str) -> dict:
    return host.admin_json("/stats")[group]


def _read_moved(cluster, host, keys) -> None:
    for k in keys:
        status, body = host.get(f"/api?group=counted&key={k}")
        assert (status, body) == (200, f"value-{k}".encode()), (host.port, k, status)


@pytest.mark.procs
@pytest.mark.etcd
def test_a_host_joining_with_warm_up_serves_moved_hot_keys_without_loading(tmp_path):
    # Two joins into one warm cluster: the first as today (the lazy handoff: a moved key's first
    # read asks its previous owner), the second with the warm-up and no handoff at all, so only
    # the warm-up can keep its moved keys from loading.  Generous peer timeouts, as above.
    cluster = Cluster(tmp_path, 3, args=("--peer-read-timeout", "10", "--peer-connect-timeout", "5"))
    count_file = str(tmp_path / "loads.txt")
    rng = random.Random(17)
    try:
        for k in KEYS:
            assert rng.choice(cluster.hosts).get(f"/api?group=counted&key={k}")[0] == 200
        for k in KEYS[::3]:  # a hotter third: read again through their owners
            assert rng.choice(cluster.hosts).get(f"/api?group=counted&key={k}")[0] == 200
        assert count_loads(count_file) == len(KEYS)

        lazy = cluster.add_host()
        cluster.wait_members(cluster.hosts)
        moved = [k for k in KEYS if cluster.owner(lazy, k) == member(lazy)]
        loads = count_loads(count_file)
        _read_moved(cluster, lazy, moved)  # the first seconds after the join
        without = _stats(lazy, "counted")
        without_loads = count_loads(count_file) - loads

        # The warm-up asks every member which keys it wrote since it began: their logs must
        # reach back that far (a younger one cannot say, and the warmed entries are dropped).
        wait_until(lambda: all(cluster.log_reaches_back(h, 5) for h in cluster.hosts), 15,
                   what="write logs that reach back 5 s")
        warm = cluster.add_host(env={"GEECACHE_WARMUP_BYTES": "1MiB", "GEECACHE_HANDOFF_WINDOW": "0"})
        cluster.wait_members(cluster.hosts)
        wait_until(lambda: _stats(warm, "counted")["warmups"] >= 1, 20, what="the warm-up")
        moved = [k for k in KEYS if cluster.owner(warm, k) == member(warm)]
        assert len(moved) > len(KEYS) // 10
        loads = count_loads(count_file)
        _read_moved(cluster, warm, moved)  # every value right
        with_warm = _stats(warm, "counted")
        with_loads = count_loads(count_file) - loads
        print(f"first reads of moved keys through the joined host: without warm-up {without['local_hits']} "
              f"local hits, {without['handoff_hits']} handoff hops, {without_loads} loads; with warm-up "
              f"{with_warm['local_hits']} local hits of {len(moved)}, {with_warm['warm_keys']} entries "
              f"warmed, {with_loads} loads")
        assert with_loads == 0, with_warm
        assert with_warm["loads"] == 0 and with_warm["handoff_hits"] == 0 and with_warm["warm_drops"] == 0
        assert with_warm["local_hits"] == len(moved)
        assert without["local_hits"] == 0  # today's join: every first read is a miss here
    finally:
        cluster.close()


@pytest.mark.procs
@pytest.mark.etcd
def test_a_write_racing_the_warm_up_wins(tmp_path):
    # Writes to every key go on through the hosts while a host joins and warms up; once they
    # stop, every host answers every key with what the source holds: the last acknowledged
    # write, never a value the warm-up brought from before it.  One previous owner (C) is
    # stopped while the joining host asks, so the others' answers wait at the joining host
    # while writes land: the race, held open.  Real pauses: C, back, is unsure and sends nothing.
    # The writes are of keys C does not own, so C, stopped, holds no lock of the shared source.
    cluster = Cluster(tmp_path, 3, env=REAL_PAUSES, args=("--peer-read-timeout", "5"))
    keys = [f"w{i}" for i in range(400)]
    try:
        a, b, c = cluster.hosts
        for i, k in enumerate(keys):
            assert cluster.put(cluster.hosts[i % 3], k, b"v0-" + k.encode()) == 204
        for i, k in enumerate(keys * 2):  # owners cached, and hot copies elsewhere (at the second fetch)
            assert cluster.read(cluster.hosts[(i % len(keys) + 1) % 3], k) == b"v0-" + k.encode()
        # The warm-up asks every member which keys it wrote since it began: their logs must
        # reach back that far, C's stop included.
        wait_until(lambda: all(cluster.log_reaches_back(h, 20) for h in cluster.hosts), 40,
                   what="write logs that reach back 20 s")

        written = [k for k in keys if cluster.owner(a, k) != member(c)]
        stop = threading.Event()
        failures: list = []
        done = itertools.count()
        targets = [a, b]  # and the joining host, once it serves (C is stopped meanwhile)

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            for n in range(20_000):
                if stop.is_set():
                    return
                k = rng.choice(written)
                host = rng.choice(targets)
                try:
                    status = cluster.put(host, k, f"v{seed}-{n}-{k}".encode())
                except OSError as exc:
                    status = exc
                if status != 204:
                    failures.append((host.port, k, status))
                next(done)

        threads = [threading.Thread(target=writer, args=(seed,), daemon=True) for seed in range(1, 5)]
        cluster.pause(c)  # idle: no write of the source in flight
        for t in threads:
            t.start()
        try:
            try:
                warm = cluster.add_host(env={"GEECACHE_WARMUP_BYTES": "1MiB"})
                targets.append(warm)
                cluster.wait_members(cluster.hosts, on=[warm])  # its ring named C: it asked C too
                mark = next(done)
                wait_until(lambda: next(done) > mark + 40, 30, what="writes while the answers wait")
            finally:
                cluster.resume(c)
            wait_until(lambda: _stats(warm, "kv")["warmups"] >= 1, 30, what="the warm-up")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not failures, failures[:5]
        stats = _stats(warm, "kv")
        print("joined host:", {f: stats[f] for f in ("warm_keys", "warm_drops", "warmups")},
              "writes:", next(done))
        assert stats["warm_keys"] > 0
        cluster.wait_members(cluster.hosts)

        def stale(hosts):
            return [(h.port, k) for k in keys for h in hosts if cluster.read(h, k) != cluster.source_value(k)]

        assert not stale([a, b, warm]), stale([a, b, warm])[:10]
        # C was stopped while the joined host took writes it had no ring to ask about: its hot
        # copies of those keys go when the joined host's undelivered invalidations reach it.
        wait_until(lambda: not stale([c]), 40, what="C's copies dropped")
    finally:
        cluster.close()


@pytest.mark.procs
@pytest.mark.etcd
def test_a_cluster_starting_cold_does_not_ask_for_handoffs_per_miss(tmp_path):
    # Three hosts booting together: each new ring hands the keys of the host it adds over from
    # the others, who hold nothing.  Their first answer says so, and the asks stop.
    cluster = Cluster(tmp_path, 3, args=("--peer-read-timeout", "10", "--peer-connect-timeout", "5"))
    rng = random.Random(5)
    try:
        for k in KEYS:
            host = rng.choice(cluster.hosts)
            status, body = host.get(f"/api?group=counted&key={k}")
            assert (status, body) == (200, f"value-{k}".encode())
        totals = {f: sum(_stats(h, "counted")[f] for h in cluster.hosts)
                  for f in ("handoff_hits", "handoff_misses", "handoff_cold", "loads")}
        print("summed over the hosts:", totals)
        assert totals["loads"] == len(KEYS)
        # At most one ask per (asker, previous owner); the rest are skipped.
        assert totals["handoff_misses"] <= 3 * 2, totals
        assert totals["handoff_cold"] > 0
    finally:
        cluster.close()
