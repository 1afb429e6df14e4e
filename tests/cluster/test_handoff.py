"""A ring change is not a load storm: a key's new owner asks its previous owner's cache first.

The cluster test runs a real etcd and real hosts and counts source loads with
the ``counting`` loader's own file; the pool tests drive ``HTTPPool`` over a
member list whose version moves, as the arena's ring region does.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from geecache.group import Group
from geecache.storage import FunctionSource
from geecache.cluster.pool import HTTPPool
from tests.support.cluster import AUTH, Cluster, member
from tests.support.loaders import count_loads

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
