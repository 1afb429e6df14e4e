"""Batch gets between real data planes on loopback (one event loop, three hosts).

The public batch API and the clients are tested against real supervisors in
``tests/cluster/test_batch_hosts.py``; here the Group's grouping by owner and the peer
batch message are checked where every host's counters can be read directly.
"""

from __future__ import annotations

import asyncio

from geecache.errors import InvalidKeyError
from tests.support.loop_hosts import cluster, owned_by


def test_one_peer_request_per_owner_and_values_right():
    async def go():
        data = {f"k{i}": f"value-{i}".encode() * 20 for i in range(1000)}
        async with cluster(3, data) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1), (g2, _, m2) = hosts
            keys = owned_by(pool0, m0, 5) + owned_by(pool0, m1, 5) + owned_by(pool0, m2, 5)
            keys += owned_by(pool0, m0, 1, prefix="missing")   # host 0's: asked again, it loads here
            found, errors = await g0.get_many(keys)
            assert errors == {}
            assert found == {k: data[k] for k in keys if k in data}
            assert g1.stats.snapshot()["peer_requests"] == 1
            assert g2.stats.snapshot()["peer_requests"] == 1
            assert g0.stats.snapshot()["peer_hits"] == 10
            assert storage.loads == 16   # every key once, the missing one included
            found, _ = await g0.get_many(keys)   # the second fetch of the remote keys keeps hot copies
            assert len(found) == 15
            assert g1.stats.snapshot()["peer_requests"] == 2 and storage.loads == 16 + 1  # the missing one again
            found, _ = await g0.get_many(keys)   # now all cached here (owned or hot): no peer request
            assert len(found) == 15
            assert g1.stats.snapshot()["peer_requests"] == 2 and storage.loads == 16 + 2

    asyncio.run(go())


def test_a_batch_and_a_get_of_one_key_load_it_once():
    async def go():
        data = {f"k{i}": b"v" for i in range(1000)}
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1) = hosts
            keys = owned_by(pool0, m0, 3) + owned_by(pool0, m1, 3)
            single = [asyncio.ensure_future(g0.get(k)) for k in keys]
            found, _ = await g0.get_many(keys)
            assert await asyncio.gather(*single) == [b"v"] * 6 and len(found) == 6
            assert storage.loads == 6

    asyncio.run(go())


def test_an_owner_down_falls_back_to_local_loads():
    async def go():
        data = {f"k{i}": b"v%d" % i for i in range(1000)}
        async with cluster(2, data, down=(1,)) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            keys = owned_by(pool0, m1, 4)
            found, errors = await g0.get_many(keys)
            assert errors == {} and found == {k: data[k] for k in keys}
            s = g0.stats.snapshot()
            assert s["peer_errors"] == 1 and s["loads"] == 4   # one failed batch, each key loaded here

    asyncio.run(go())


def test_a_peer_batch_is_served_locally_never_forwarded():
    async def go():
        data = {f"k{i}": b"v" for i in range(1000)}
        # Host 1 believes it is alone, host 0 sees both: host 1 must not send host 0's keys back.
        async with cluster(2, data, views=[(0, 1), (1,)]) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1) = hosts
            keys = owned_by(pool0, m1, 3)
            answers = await g1.get_local_many(keys + ["missing"])
            assert [a[0] for a in answers] == [200, 200, 200, 404]
            assert g0.stats.snapshot()["peer_requests"] == 0

    asyncio.run(go())


def test_an_invalid_key_is_refused_before_any_load():
    async def go():
        async with cluster(1, {}) as (hosts, storage):
            g0 = hosts[0][0]
            try:
                await g0.get_many(["ok", ""])
            except InvalidKeyError:
                pass
            else:
                raise AssertionError("an empty key was accepted")
            assert storage.loads == 0

    asyncio.run(go())
