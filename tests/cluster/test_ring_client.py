"""A client that follows the ring sends every key to its owner: no peer hop, every value right.

Three real hosts and a real etcd (``tests.support.cluster``).  The client
learns the members from any host's data port (``GET /_geecache/_ring``, behind
the token) and routes each key with the servers' own hash; the hosts count the
requests they served for other hosts (``peer_requests``) and each one's
fetches from its peers (``peer_hits``): both stay 0.  A stale ring only costs a
peer hop: a host that loads a key answers with its ring version, and an
owner that fails sends the client to the others and to a fresh member list.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from geecache.client import AsyncClient, Client
from geecache.errors import RefusedError
from tests.support.cluster import TOKEN, Cluster, member
from tests.support.proc import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.procs]


def _peer_traffic(cluster) -> dict:
    out = {}
    for h in cluster.hosts:
        stats = h.admin_json("/stats")
        out[member(h)] = sum(stats[g].get("peer_requests", 0) + stats[g].get("peer_hits", 0)
                             for g in ("counted", "kv"))
    return out


def test_a_ring_following_client_causes_no_peer_request(tmp_path):
    cluster = Cluster(tmp_path, 3)
    try:
        a = cluster.hosts[0]
        urls = [f"http://127.0.0.1:{a.port}"]  # one host given: the others come from the ring
        with Client(urls, token=TOKEN, ring=True) as c:
            for i in range(3000):
                key = f"k{i % 1000}"
                assert c.get(key, group="counted") == f"value-{key}".encode()
            keys = [f"batch{i}" for i in range(300)]
            assert c.get_many(keys, group="counted") == {k: f"value-{k}".encode() for k in keys}
            c.set_many({f"w{i}": b"v%d" % i for i in range(30)}, group="kv")
            assert c.get_many([f"w{i}" for i in range(30)], group="kv") == {
                f"w{i}": b"v%d" % i for i in range(30)}
            # Every host was used: the keys went to their owners, not all to the one URL given.
            served = {h.port: h.admin_json("/stats")["counted"]["gets"] for h in cluster.hosts}
            assert all(n > 0 for n in served.values()), served
        assert _peer_traffic(cluster) == {member(h): 0 for h in cluster.hosts}

        async def run():
            async with AsyncClient(urls, token=TOKEN, ring=True) as ac:
                for i in range(300):
                    assert await ac.get(f"k{i}", group="counted") == f"value-k{i}".encode()
                assert len(await ac.get_many(keys, group="counted")) == 300
        asyncio.run(run())
        assert _peer_traffic(cluster) == {member(h): 0 for h in cluster.hosts}
    finally:
        cluster.close()


def test_a_stale_ring_costs_a_hop_never_a_wrong_value(tmp_path):
    cluster = Cluster(tmp_path, 2)
    try:
        a, b = cluster.hosts
        with Client(f"http://127.0.0.1:{a.port}", token=TOKEN, ring=True, ring_refresh=3600) as c:
            assert c.get("first", group="counted") == b"value-first"
            assert sorted(c._view.hosts) == sorted(member(h) for h in (a, b))
            old_digest = c._view.digest
            c3 = cluster.add_host()
            cluster.wait_members(cluster.hosts)
            # The client still routes by two members; a key the new host owns goes to its old
            # owner, which fetches it from the new host (a hop) and says its newer ring version.
            moved = next(k for k in (f"m{i}" for i in range(10_000))
                         if cluster.owner(a, k) == member(c3) and c._owner(k) != member(c3))
            assert c.get(moved, group="counted") == f"value-{moved}".encode()
            # That answer named another member list: a later request reads it again (at most
            # once a second), and every answer meanwhile is right.
            fresh = (f"again{i}" for i in itertools.count())

            def refreshed():
                key = next(fresh)
                assert c.get(key, group="counted") == f"value-{key}".encode()
                return member(c3) in c._view.hosts

            wait_until(refreshed, 10, interval=0.1, what="the client to read the new member list")
            assert c._view.digest != old_digest
            # The owner gone: the client fails over to the others and asks for the members again.
            assert c3.stop() == 0
            cluster.hosts.remove(c3)
            assert c.get(moved, group="counted") == f"value-{moved}".encode()
    finally:
        cluster.close()


def test_the_ring_endpoint_is_behind_the_token(tmp_path):
    cluster = Cluster(tmp_path, 1)
    try:
        a = cluster.hosts[0]
        status, _h, body = a.request("GET", "/_geecache/_ring")
        assert status == 401 and b"error" in body
        with Client(f"http://127.0.0.1:{a.port}", ring=True) as c:  # no token: a plain client
            assert c.get("x", group="counted") == b"value-x"
            assert c._view.ring is None
        with pytest.raises(RefusedError):
            with Client(f"http://127.0.0.1:{a.port}") as plain:
                plain._request("GET", "/_geecache/_ring")
    finally:
        cluster.close()
