"""Batch writes between real data planes on loopback: ``set_many``/``delete_many`` send one
peer request per owner, each owner applies its keys in one ``write_many``, and a key the
first try did not settle goes on as a single write would."""

from __future__ import annotations

import asyncio

import aiohttp

from geecache.geecachepb import WriteBatch, WriteBatchResponse
from geecache.hlc import clock
from geecache.cluster.httppeer import peer_path
from tests.support.loop_hosts import TOKEN, cluster, owned_by


def count_write_many(storage) -> list[int]:
    """Record the size of every ``write_many`` call *storage* gets (the owners' transactions)."""
    calls: list[int] = []
    real = storage.write_many

    async def counted(ops):
        calls.append(len(ops))
        return await real(ops)

    storage.write_many = counted
    return calls


def test_set_many_sends_one_request_per_owner_and_each_owner_commits_once():
    async def go():
        async with cluster(3) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1), (g2, _, m2) = hosts
            keys = owned_by(pool0, m0, 30) + owned_by(pool0, m1, 30) + owned_by(pool0, m2, 40)
            calls = count_write_many(storage)
            answers = await g0.set_many({k: (k.encode() * 2, 0) for k in keys})
            assert all(a.applied for a in answers)
            # One write_many per owner: host 0's own keys here, one peer request each to 1 and 2.
            assert sorted(calls) == [30, 30, 40]
            for g in (g0, g1, g2):
                assert await g.get_many(keys) == ({k: k.encode() * 2 for k in keys}, {})
            calls.clear()
            gone = keys[:10] + keys[30:40] + ["never-written"]
            answers = await g0.delete_many(gone)
            assert [a.existed for a in answers] == [True] * 20 + [False]
            assert sum(calls) == 21 and len(calls) == len({pool0.owner(k) for k in gone})
            assert (await g1.get_many(keys))[0].keys() == set(keys[10:30] + keys[40:])
            assert g0.stats.snapshot()["peer_errors"] == 0

    asyncio.run(go())


def test_a_stale_key_of_a_batch_is_restamped_as_a_single_set_is_and_the_others_apply():
    async def go():
        async with cluster(2) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            keys = owned_by(pool0, m1, 5)
            # Another writer with a clock ahead stored a newer version of one key.
            ahead = clock.now() + (10 << 20)
            assert (await storage.write(keys[2], b"from the future", version=ahead)).applied
            answers = await g0.set_many({k: (b"mine", 0) for k in keys})
            assert all(a.applied for a in answers)
            assert answers[2].version > ahead  # ordered after it, as a single set would be
            assert [await storage.get(k) for k in keys] == [b"mine"] * 5

    asyncio.run(go())


def test_an_owner_down_means_its_keys_are_written_here():
    async def go():
        async with cluster(3, down=(1,)) as (hosts, storage):
            (g0, pool0, _), (_, _, m1), (_, _, m2) = hosts
            down, up = owned_by(pool0, m1, 6), owned_by(pool0, m2, 6)
            calls = count_write_many(storage)
            answers = await g0.set_many({k: (b"v", 0) for k in down + up})
            assert all(a.applied for a in answers)
            assert [await storage.get(k) for k in down + up] == [b"v"] * 12
            assert 6 in calls  # the live owner's keys in one transaction
            assert g0.stats.snapshot()["peer_errors"] >= 1

    asyncio.run(go())


def test_the_peer_batch_answers_each_item_and_refuses_bad_ones_alone():
    async def go():
        async with cluster(2) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            good = owned_by(pool0, m1, 2)
            assert (await storage.write(good[1], b"newer", version=clock.now() + (10 << 20))).applied
            msg = WriteBatch(group="g")
            msg.items.add(key=good[0], value=b"a", version=clock.now())
            msg.items.add(key="", value=b"b", version=clock.now())            # a bad key
            msg.items.add(key=good[1], value=b"old", version=clock.now())     # older than stored
            msg.items.add(key=good[0] + "x", value=b"c", version=clock.now(), deadline=1.0)  # long past
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://{m1}{peer_path('g', '_writes')}", data=msg.SerializeToString(),
                                  headers=headers) as r:
                    assert r.status == 200
                    answer = WriteBatchResponse.FromString(await r.read())
                big = WriteBatch(group="g")
                for i in range(1001):
                    big.items.add(key=f"k{i}", value=b"v")
                async with s.post(f"http://{m1}{peer_path('g', '_writes')}", data=big.SerializeToString(),
                                  headers=headers) as r:
                    assert r.status == 413
                async with s.post(f"http://{m1}{peer_path('g', '_writes')}", data=b"\xff\xff",
                                  headers=headers) as r:
                    assert r.status == 400
                async with s.post(f"http://{m1}{peer_path('g', '_writes')}", data=msg.SerializeToString()) as r:
                    assert r.status == 401
            a, bad, stale, late = answer.items
            assert a.status == 200 and a.result.applied
            assert bad.status == 400 and bad.error == "InvalidKeyError"  # named, the key not echoed
            assert stale.status == 200 and not stale.result.applied and not stale.result.late
            assert late.status == 200 and late.result.late and not late.result.applied
            assert await storage.get(good[0]) == b"a" and await storage.get(good[1]) == b"newer"
            assert await storage.get(good[0] + "x") is None

    asyncio.run(go())


def test_single_writes_to_one_owner_share_requests_while_one_is_in_flight():
    async def go():
        async with cluster(2) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            keys = owned_by(pool0, m1, 40)
            calls = count_write_many(storage)
            await asyncio.gather(*(g0.set(k, b"v-" + k.encode()) for k in keys))
            # All 40 were waiting before the first request left: at most two requests.
            assert sum(calls) == 40 and len(calls) <= 2, calls
            assert [await storage.get(k) for k in keys] == [b"v-" + k.encode() for k in keys]
            assert [(await g1.get_local(k))[0] for k in keys] == [b"v-" + k.encode() for k in keys]

    asyncio.run(go())


def test_an_owner_from_before_batch_writes_gets_one_request_per_write(monkeypatch):
    from workers.dataplane import routes

    def refused(self, req):
        raise routes.RouteError(405, "method POST not allowed", ("GET", "HEAD", "PUT", "DELETE"))

    monkeypatch.setattr(routes.Router, "peer_writes", refused)

    async def go():
        async with cluster(2) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            keys = owned_by(pool0, m1, 6)
            calls = count_write_many(storage)
            answers = await g0.set_many({k: (b"old-owner", 0) for k in keys})
            assert all(a.applied for a in answers)
            await asyncio.gather(*(g0.set(k, b"again") for k in keys))
            assert [await storage.get(k) for k in keys] == [b"again"] * 6
            assert calls == [1] * 12  # each write its own PUT on the owner, none here
            assert g0.stats.snapshot()["peer_errors"] == 0

    asyncio.run(go())
