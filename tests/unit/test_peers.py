"""The peer protocol between real data planes on loopback (one event loop, two hosts)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from geecache.geecachepb import GetResponse
from geecache.group import Group
from geecache.cluster.peers import NoPeers
from geecache.cluster.httppeer import peer_path, peer_url
from geecache.cluster.pool import HTTPPool, StaticMembers
from tests.support.loop_hosts import TOKEN, CountingStorage, cluster, owned_by
from tests.support.net import free_port


def test_remote_key_loaded_once_by_owner_then_hot():
    async def go():
        data = {f"k{i}": (f"value-{i}" * 50).encode() for i in range(1000)}
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, m0), (g1, pool1, m1) = hosts
            key = owned_by(pool0, m1)[0]
            assert await g0.get(key) == data[key]          # fetched from host 1 (kept nowhere here)
            assert await g1.get(key) == data[key]          # host 1's own cache
            assert await g0.get(key) == data[key]          # fetched again: kept as a hot copy now
            assert await g0.get(key) == data[key]          # host 0's hot copy
            assert storage.loads == 1
            s0 = g0.stats.snapshot()
            assert (s0["peer_hits"], s0["hot_hits"], s0["loads"]) == (2, 1, 0)
            assert g1.stats.snapshot()["peer_requests"] == 2
            async with aiohttp.ClientSession() as s:   # the owner's answer: the value, no expiry
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with s.get(f"http://{m1}{peer_path('g', key)}", headers=headers) as r:
                    msg = GetResponse.FromString(await r.read())
            assert msg.value and msg.expire_at == 0

    asyncio.run(go())


def test_a_hot_copy_is_kept_from_the_doorkeepers_nth_fetch():
    async def go():
        data = {f"k{i}": b"v%d" % i for i in range(1000)}
        for hot_after, peer_calls in ((1, 1), (2, 2), (3, 3)):
            async with cluster(2, data, hot_after=hot_after) as (hosts, storage):
                (g0, pool0, _), (g1, _, m1) = hosts
                key = owned_by(pool0, m1)[0]
                for _ in range(5):
                    assert await g0.get(key) == data[key]
                s0 = g0.stats.snapshot()
                # The first hot_after reads ask the owner; the last of them keeps the copy.
                assert (s0["peer_hits"], s0["hot_hits"]) == (peer_calls, 5 - peer_calls), hot_after
                assert g1.stats.snapshot()["peer_requests"] == peer_calls
                assert storage.loads == 1

    asyncio.run(go())


def test_ttl_of_a_routed_set_reaches_the_owner():
    async def go():
        async with cluster(2, {f"k{i}": b"old" for i in range(1000)}) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            await g0.set(key, b"new", ttl=30)               # routed to host 1
            value, expire_at = await g1.get_local(key)      # host 1's own cached entry
            assert value == b"new" and 0 < expire_at - time.time() <= 30

    asyncio.run(go())


def test_rings_agree_on_owners():
    async def go():
        async with cluster(3) as (hosts, _):
            pools = [p for _, p, _ in hosts]
            for i in range(500):
                owners = {p.owner(f"key{i}") for p in pools}
                assert len(owners) == 1

    asyncio.run(go())


def test_owns_answers_for_each_key_what_pick_answers():
    members = [f"127.0.0.1:{9000 + i}" for i in range(3)]
    for view in (members, members[1:], [members[0]], []):  # this host in the ring, or not
        pool = HTTPPool(members[0], StaticMembers(view))
        keys = [f"key-{i}" for i in range(500)]
        assert pool.owns(keys) == [pool.pick(key) is None for key in keys]
    assert NoPeers().owns(["a", "b"]) == [True, True]


def test_peer_down_falls_back_to_local_load():
    async def go():
        data = {f"k{i}": b"v%d" % i for i in range(1000)}
        async with cluster(2, data, down=(1,)) as (hosts, storage):
            g0, pool0, _ = hosts[0]
            key = owned_by(pool0, hosts[1][2])[0]
            assert await g0.get(key) == data[key]
            assert g0.stats.snapshot()["peer_errors"] == 1
            assert storage.loads == 1

    asyncio.run(go())


def test_set_routes_to_owner_and_invalidates_hot_copies():
    async def go():
        data = {f"k{i}": b"old" for i in range(1000)}
        async with cluster(2, data) as (hosts, storage):
            (g0, pool0, m0), (g1, pool1, m1) = hosts
            key = owned_by(pool0, m1)[0]
            assert await g0.get(key) == b"old"          # host 0 now holds a hot copy
            await g1.set(key, b"new")                   # the owner writes and invalidates
            assert await storage.get(key) == b"new"
            assert await g0.get(key) == b"new"
            await g0.set(key, b"newer")                 # routed to the owner
            assert await g1.get(key) == b"newer"
            assert await g0.delete(key) is True
            assert await storage.get(key) is None

    asyncio.run(go())


def test_writes_while_the_owner_is_down_go_through_the_source_here():
    async def go():
        data = {f"k{i}": b"old" for i in range(1000)}
        async with cluster(2, data, down=(1,)) as (hosts, storage):
            g0, pool0, _ = hosts[0]
            key = owned_by(pool0, hosts[1][2])[0]
            await g0.set(key, b"new")
            assert await storage.get(key) == b"new"
            assert await g0.delete(key) is True
            assert await g0.delete(key) is False
            assert await storage.get(key) is None
            s0 = g0.stats.snapshot()
            # The first refusal opened the owner's breaker: the next two writes did not call it.
            assert (s0["sets"], s0["deletes"], s0["peer_errors"], s0["peer_trips"], s0["peer_skipped"]) \
                == (1, 2, 1, 1, 2)

    asyncio.run(go())


def test_disagreeing_rings_never_forward_a_peer_request():
    """Host 0 thinks host 1 owns everything, host 1 thinks host 0 does (invariant 3)."""

    async def go():
        async with cluster(2, {"k": b"v"}, views=[[1], [0]]) as (hosts, storage):
            (g0, _, _), (g1, _, _) = hosts
            assert await g0.get("k") == b"v"
            assert storage.loads == 1
            s1 = g1.stats.snapshot()
            assert (s1["peer_requests"], s1["peer_hits"]) == (1, 0)  # served, not sent back
            assert await g1.get("k") == b"v"   # host 1 kept it as a hot copy and asks host 0... once
            assert storage.loads == 1

    asyncio.run(go())


def test_copy_loaded_while_owner_was_down_is_invalidated_by_its_write():
    async def go():
        data = {f"k{i}": b"old" for i in range(1000)}
        async with cluster(2, data, down=(1,)) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            assert await g0.get(key) == b"old"      # owner down: host 0 loads it itself
            await hosts.start(1)
            await g1.set(key, b"new")               # the owner is back and writes
            assert await g0.get(key) == b"new"      # host 0's copy was dropped, not served stale
            await g0.set(key, b"newer")             # and a write through host 0 reaches the owner
            assert await g1.get(key) == b"newer"
            assert await g0.get(key) == b"newer"

    asyncio.run(go())


def test_not_found_travels_as_not_found():
    from geecache.errors import NotFoundError

    async def go():
        async with cluster(2, {}) as (hosts, storage):
            (g0, pool0, _), (_, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            with pytest.raises(NotFoundError):
                await g0.get(key)
            assert g0.stats.snapshot()["peer_errors"] == 0

    asyncio.run(go())


@pytest.mark.parametrize(
    "method,path_kind,headers,body,status",
    [
        ("GET", "key", {}, None, 401),                                    # no token
        ("GET", "key", {"Authorization": "Bearer wrong"}, None, 401),     # wrong token
        ("GET", "unknown-group", {"Authorization": f"Bearer {TOKEN}"}, None, 400),
        ("PUT", "key", {"Authorization": f"Bearer {TOKEN}"}, b"\xff\xff\xff garbage", 400),
        ("POST", "group", {"Authorization": f"Bearer {TOKEN}"}, b"\x0a\xff", 400),
        ("GET", "bad-key", {"Authorization": f"Bearer {TOKEN}"}, None, 400),
    ],
)
def test_bad_peer_requests_get_4xx(method, path_kind, headers, body, status):
    async def go():
        async with cluster(1, {"a": b"1"}) as (hosts, _):
            _, _, member = hosts[0]
            path = {
                "key": peer_path("g", "a"),
                "unknown-group": peer_path("nope", "a"),
                "group": peer_path("g"),
                "bad-key": peer_path("g", "x" * 300),
            }[path_kind]
            async with aiohttp.ClientSession() as s:
                async with s.request(method, f"http://{member}{path}", headers=headers, data=body) as r:
                    assert r.status == status
                    assert "error" in await r.json()

    asyncio.run(go())


def test_token_that_is_not_utf8_is_a_401_not_a_500():
    async def go():
        async with cluster(1, {"a": b"1"}) as (hosts, _):
            host, port = hosts[0][2].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET " + peer_path("g", "a").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert b'"error"' in answer

    asyncio.run(go())


def test_peer_that_never_answers_times_out_into_a_local_load():
    async def go():
        blackhole = socket.socket()          # accepts connections (backlog), never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        silent = f"127.0.0.1:{blackhole.getsockname()[1]}"
        me = f"127.0.0.1:{free_port()}"
        pool = HTTPPool(me, StaticMembers([me, silent]), connect_timeout=0.3, read_timeout=0.3)
        data = {f"k{i}": b"v%d" % i for i in range(1000)}
        group = Group("g", CountingStorage(data), peers=pool)
        try:
            key = owned_by(pool, silent)[0]
            assert await group.get(key) == data[key]
            s = group.stats.snapshot()
            assert (s["peer_errors"], s["loads"]) == (1, 1)
        finally:
            await pool.close()
            blackhole.close()

    asyncio.run(go())


def test_peer_url_defaults_the_scheme_and_keeps_a_given_one():
    assert peer_url("127.0.0.1:8001") == "http://127.0.0.1:8001"
    assert peer_url("http://h:1") == "http://h:1"
    assert peer_url("127.0.0.1:8001", tls=True) == "https://127.0.0.1:8001"
    assert peer_url("https://h:1/", tls=False) == "https://h:1"
