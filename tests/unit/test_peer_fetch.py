"""The remote read path between real data planes on loopback: the owner's inline peer GET,
fetches of one loop turn sharing one peer batch, and their failures."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from geecache.compression import unpack
from geecache.geecachepb import GetResponse
from geecache.cluster.httppeer import peer_path
from tests.support.dataplane import HIT_PATHS, hit_path_env
from tests.support.loop_hosts import TOKEN, cluster, owned_by

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _data(n=1000):
    return {f"k{i}": (f"value-{i}-" * 20).encode() for i in range(n)}


def test_fetches_of_one_loop_turn_share_one_peer_batch():
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            keys = owned_by(pool0, m1, 20)
            for key in keys:
                await g1.get(key)  # cached on their owner
            loads = storage.loads
            values = await asyncio.gather(*(g0.get(key) for key in keys))
            assert values == [data[key] for key in keys]
            assert g0.stats.snapshot()["peer_hits"] == len(keys)
            # One peer request for the twenty keys, and the owner loaded none of them.
            assert g1.stats.snapshot()["peer_requests"] == 1
            assert storage.loads == loads
            # Fetched again, in one batch again: each is kept as a hot copy at this second fetch
            # (geecache.doorkeeper), then served at host 0 with no peer call.
            assert await asyncio.gather(*(g0.get(key) for key in keys)) == values
            assert g1.stats.snapshot()["peer_requests"] == 2
            assert await asyncio.gather(*(g0.get(key) for key in keys)) == values
            assert g0.stats.snapshot()["hot_hits"] == len(keys)
            assert g1.stats.snapshot()["peer_requests"] == 2

    asyncio.run(go())


@pytest.mark.parametrize("hit_path", HIT_PATHS)
def test_an_owner_answers_a_batch_of_cached_keys_alike_on_either_hit_path(hit_path):
    # Arena-backed, no codec: the owner's compiled hit path answers the batch (HitPath.peer_hits).
    async def go():
        data = _data()
        data.update({f"e{i}": b"" for i in range(5)})  # empty values: an item of no value field
        with hit_path_env(hit_path):
            async with cluster(2, data, codec="none", arena_bytes=8 << 20) as (hosts, storage):
                (g0, pool0, _), (g1, _, m1) = hosts
                assert (hosts.planes[1]._plane.hit_path is not None) == (hit_path == "compiled")
                keys = owned_by(pool0, m1, 20) + [k for k in data if k[0] == "e" and pool0.owner(k) == m1]
                for key in keys:
                    await g1.get(key)  # cached on their owner
                loads = storage.loads
                values = await asyncio.gather(*(g0.get(key) for key in keys))
                assert values == [data[key] for key in keys]
                assert g1.stats.snapshot()["peer_requests"] == 1
                assert storage.loads == loads

    asyncio.run(go())


def test_a_batch_with_keys_the_owner_must_load_answers_each():
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            keys = owned_by(pool0, m1, 10)
            missing = [key + "-absent" for key in owned_by(pool0, m1, 300)
                       if pool0.owner(key + "-absent") == m1][:3]
            for key in keys[:5]:
                await g1.get(key)  # half cached on the owner, half not
            loads = storage.loads
            results = await asyncio.gather(*(g0.get(key) for key in keys + missing), return_exceptions=True)
            assert results[:len(keys)] == [data[key] for key in keys]
            assert all(type(r).__name__ == "NotFoundError" for r in results[len(keys):])
            assert storage.loads - loads == 5 + len(missing)  # the owner loaded what it lacked, once each
            s0 = g0.stats.snapshot()
            assert (s0["peer_hits"], s0["loads"], s0["peer_errors"]) == (len(keys), 0, 0)

    asyncio.run(go())


def test_an_owner_down_fails_a_batch_over_to_local_loads_and_one_trip():
    async def go():
        data = _data()
        async with cluster(2, data, down=(1,)) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            keys = owned_by(pool0, m1, 8)
            assert await asyncio.gather(*(g0.get(key) for key in keys)) == [data[key] for key in keys]
            s0 = g0.stats.snapshot()
            assert s0["peer_errors"] == len(keys) and s0["peer_trips"] == 1
            assert s0["loads"] == len(keys) and s0["peer_hits"] == 0
            # The breaker is open: the next turn's keys skip the peer.
            more = owned_by(pool0, m1, 12)[8:]
            assert await asyncio.gather(*(g0.get(key) for key in more)) == [data[key] for key in more]
            assert g0.stats.snapshot()["peer_skipped"] == len(more)

    asyncio.run(go())


def test_the_owner_answers_a_peer_get_inline_and_counts_it_once():
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, storage):
            (_, pool0, _), (g1, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            url = f"http://{m1}{peer_path('g', key)}"
            async with aiohttp.ClientSession() as s:
                async with s.get(url, headers=AUTH) as r:  # a miss: loaded by the owner
                    assert r.status == 200 and r.headers["Content-Type"] == "application/x-protobuf"
                    first = GetResponse.FromString(await r.read())
                for _ in range(3):  # hits, answered in the parser's callback
                    async with s.get(url, headers=AUTH) as r:
                        assert r.status == 200 and "Date" in r.headers
                        assert GetResponse.FromString(await r.read()) == first
                async with s.get(url, headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401 and "error" in await r.json()
                async with s.get(f"http://{m1}/_geecache/nosuch/{key}", headers=AUTH) as r:
                    assert r.status == 400 and "unknown group" in (await r.json())["error"]
                async with s.get(url + "?handoff=1", headers=AUTH) as r:  # the route table's path
                    assert GetResponse.FromString(await r.read()) == first
            assert g1.stats.snapshot()["peer_requests"] == 4  # the handoff ask is not one
            assert storage.loads == 1
            assert first.codec and unpack(first.codec, first.value) == data[key]  # zstd, as stored

    asyncio.run(go())


def test_a_cancelled_fetch_frees_its_key_for_the_next_miss():
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            started = g0.load_started(key)  # as the data plane's miss; shutdown cancels it
            started.cancel()
            for _ in range(200):  # the owner's answer arrives and finds the Future cancelled
                if not g0._calls.in_flight(key):
                    break
                await asyncio.sleep(0.01)
            assert not g0._calls.in_flight(key)
            assert await g0.get(key) == data[key]  # a fresh fetch, not the cancelled one

    asyncio.run(go())


async def _until(calls: list, turns: int = 3000) -> None:
    """Wait until *calls* has an item (bounded, generously for a busy machine: *turns* sleeps of 10 ms)."""
    for _ in range(turns):
        if calls:
            return
        await asyncio.sleep(0.01)


async def _settled_calls(g, key):
    """``g.load_started(key, settled)``'s Future and the Futures *settled* got, once it is done."""
    seen = []
    started = g.load_started(key, seen.append)
    assert not seen  # never before load_started returns
    await asyncio.wait([started], timeout=30)
    await _until(seen)
    return started, seen


def test_load_started_calls_settled_once_with_the_done_future_whatever_the_outcome():
    # The data plane answers a miss from *settled* (no done callback of its own): every
    # outcome of the fetch must reach it, and only once.
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, _):
            (g0, pool0, _), (_, _, m1) = hosts
            keys = owned_by(pool0, m1, 4)
            started, seen = await _settled_calls(g0, keys[0])  # a remote hit
            assert seen == [started] and started.result() == data[keys[0]]
            absent = next(k for k in (f"{key}-absent" for key in owned_by(pool0, m1, 300))
                          if pool0.owner(k) == m1)
            started, seen = await _settled_calls(g0, absent)  # the owner has no such key
            assert seen == [started] and type(started.exception()).__name__ == "NotFoundError"
            claimer, joiner = [], []
            claimed = g0.load_started(keys[1], claimer.append)
            joined = g0.load_started(keys[1], joiner.append)  # a concurrent miss joins the fetch
            assert joined is claimed
            await asyncio.wait([claimed], timeout=30)
            await _until(joiner)  # (a join's settled is a done callback: a turn after the Future settles)
            assert claimer == [claimed] and joiner == [claimed] and claimed.result() == data[keys[1]]
            seen = []
            started = g0.load_started(keys[2], seen.append)
            started.cancel()  # the worker's shutdown past its grace: the answer finds it done
            await _until(seen)
            # Called once, by the answer's callback, which has released the key by then.
            assert seen == [started] and started.cancelled() and not g0._calls.in_flight(keys[2])
        async with cluster(2, data, down=(1,)) as (hosts, _):
            (g0, pool0, _), (_, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            started, seen = await _settled_calls(g0, key)  # the owner down: loaded here
            assert seen == [started] and started.result() == data[key]
            assert g0.stats.snapshot()["peer_errors"] == 1

    asyncio.run(go())


def _raw_get(member: str, target: str) -> bytes:
    """One keep-alive request's whole answer, read by its Content-Length."""
    host, port = member.rsplit(":", 1)

    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length: "))[16:])
        body = await reader.readexactly(length)
        writer.close()
        return head + body

    return go()


def test_a_remote_hit_is_answered_with_the_bytes_of_a_loaded_reply():
    # The remote hit's answer is written from a prebuilt head (Router.loaded_head), a local
    # load's is rendered from its reply tuple: the same head, ring line included, but the Date.
    async def go():
        data = _data()
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1) = hosts
            remote, local = owned_by(pool0, m1)[0], owned_by(pool0, m0)[0]
            await g1.get(remote)  # cached on its owner
            answers = [await _raw_get(m0, f"/api?key={key}") for key in (remote, local)]
            heads = [[line for line in a.split(b"\r\n\r\n")[0].split(b"\r\n") if not line.startswith(b"Date: ")]
                     for a in answers]
            assert heads[0][0] == b"HTTP/1.1 200 OK" and any(h.startswith(b"X-Geecache-Ring: ") for h in heads[0])
            lengths = [[h for h in head if h.startswith(b"Content-Length: ")] for head in heads]
            assert [h for h in heads[0] if h not in lengths[0]] == [h for h in heads[1] if h not in lengths[1]]
            assert answers[0].endswith(b"\r\n\r\n" + data[remote]) and answers[1].endswith(b"\r\n\r\n" + data[local])
            assert g0.stats.snapshot()["peer_hits"] == 1

    asyncio.run(go())
