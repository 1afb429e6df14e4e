"""Versioned writes between real aiohttp peers in one loop: deadlines, refusals, re-stamping,
older peers, and invalidations to a peer that hangs."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp

from geecache import hlc
from geecache.geecachepb import DeleteRequest, SetRequest, WriteResponse
from geecache.group import Group
from geecache.cluster.httppeer import PROTOBUF, peer_path
from geecache.cluster.pool import HTTPPool, StaticMembers
from geecache.storage import MemoryStorage
from tests.support.net import free_port
from tests.support.loop_hosts import TOKEN, cluster, owned_by

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": PROTOBUF}


async def _peer_call(member, method, path, body):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://{member}{path}", headers=HEADERS, data=body) as r:
            return r.status, await r.read()


def test_the_owner_never_applies_a_forwarded_write_after_its_deadline():
    async def go():
        async with cluster(2, {"k": b"old"}) as (hosts, storage):
            (g0, pool0, m0), (g1, _, m1) = hosts
            key = owned_by(pool0, m1, prefix="k")[0]
            await storage.set(key, b"old")
            late = SetRequest(group="g", key=key, value=b"late", version=hlc.clock.now(),
                              deadline=time.time() - 0.001)
            status, body = await _peer_call(m1, "PUT", peer_path("g", key), late.SerializeToString())
            assert status == 200
            answer = WriteResponse.FromString(body)
            assert (answer.applied, answer.late) == (False, True)
            late_delete = DeleteRequest(version=hlc.clock.now(), deadline=time.time() - 0.001)
            status, body = await _peer_call(m1, "DELETE", peer_path("g", key), late_delete.SerializeToString())
            assert WriteResponse.FromString(body).late
            assert await storage.get(key) == b"old"
            assert g1.stats.snapshot()["writes_refused"] == 2
            # In time, it applies, and the answer carries the version it stored.
            v = hlc.clock.now()
            ok = SetRequest(group="g", key=key, value=b"new", version=v, deadline=time.time() + 5)
            status, body = await _peer_call(m1, "PUT", peer_path("g", key), ok.SerializeToString())
            assert WriteResponse.FromString(body) == WriteResponse(applied=True, existed=True, version=v)
            # The same write delivered again (a retry, a late copy) is refused as not newer.
            status, body = await _peer_call(m1, "PUT", peer_path("g", key), ok.SerializeToString())
            assert WriteResponse.FromString(body) == WriteResponse(applied=False, existed=True, version=v)
            assert await g0.get(key) == b"new"

    asyncio.run(go())


def test_an_older_peers_requests_are_unversioned_writes():
    async def go():
        async with cluster(2, {}) as (hosts, storage):
            (_, pool0, _), (_, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            old_put = SetRequest(group="g", key=key, value=b"v")  # no version, no deadline
            status, body = await _peer_call(m1, "PUT", peer_path("g", key), old_put.SerializeToString())
            assert WriteResponse.FromString(body).applied
            status, body = await _peer_call(m1, "DELETE", peer_path("g", key), b"")  # no body at all
            assert WriteResponse.FromString(body) == WriteResponse(
                applied=True, existed=True, version=WriteResponse.FromString(body).version)
            assert await storage.get(key) is None
            for bad in (SetRequest(group="g", key=key, value=b"v", version=1 << 63),
                        SetRequest(group="g", key=key, value=b"v", deadline=float("nan"))):
                status, _ = await _peer_call(m1, "PUT", peer_path("g", key), bad.SerializeToString())
                assert status == 400

    asyncio.run(go())


def test_a_write_refused_by_a_newer_stored_version_is_restamped_above_it():
    """A host whose clock is behind (here: a version 5 s ahead already stored) still gets its
    acknowledged write applied: the refusal reports the stored version, the originator's
    clock takes it in, and the write goes again with a version above it."""

    async def go():
        async with cluster(2, {}) as (hosts, storage):
            (g0, pool0, _), (g1, _, m1) = hosts
            key = owned_by(pool0, m1)[0]
            ahead = hlc.pack(hlc.wall_us() + 5_000_000)
            assert await storage.set(key, b"from a clock ahead", version=ahead)
            await g0.set(key, b"mine")  # routed to host 1, refused once, re-stamped, applied
            assert await storage.get(key) == b"mine"
            assert (await storage.read(key)).version > ahead
            assert g1.stats.snapshot()["writes_refused"] == 1
            assert await g1.get(key) == b"mine" and await g0.get(key) == b"mine"
            # The same through the local path (the owner is this host).
            own = owned_by(pool0, pool0.self_address)[0]
            await storage.set(own, b"x", version=hlc.pack(hlc.wall_us() + 5_000_000))
            assert await g0.delete(own) is True
            assert await storage.get(own) is None

    asyncio.run(go())


def test_invalidations_to_a_hung_peer_do_not_cost_every_write_a_timeout():
    """A member that accepts connections and never answers: the first write's invalidation
    waits out its timeout and opens the breaker; later writes put theirs in its mailbox,
    which holds one delivery at a time, instead of each sending (and waiting) again."""

    async def go():
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(128)
        blackhole.setblocking(False)
        silent = f"127.0.0.1:{blackhole.getsockname()[1]}"
        me = f"127.0.0.1:{free_port()}"
        pool = HTTPPool(me, StaticMembers([me, silent]), connect_timeout=0.3, read_timeout=0.3)
        group = Group("g", MemoryStorage({}), peers=pool)
        try:
            mine = [k for k in owned_by(pool, me, count=20)]
            for key in mine:
                await group.set(key, b"v")
            s = group.stats.snapshot()
            assert s["peer_trips"] == 1
            accepted = 0
            while True:
                try:
                    conn, _ = blackhole.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1
            # One for the first write, at most a retry or two of the mailbox since; not 20.
            assert 1 <= accepted <= 4, accepted
            assert silent in pool._mail  # still owed to it, retried after each cooldown
        finally:
            await pool.close()
            blackhole.close()

    asyncio.run(go())


class _Members:
    """A member list that changes: version 2 (StaticMembers is version 1)."""

    def __init__(self, members):
        self.members = members

    def ring_version(self):
        return 2

    def read_ring(self):
        return 2, list(self.members)


def test_a_member_added_to_the_ring_is_sent_the_keys_written_just_before():
    """Host 1 serves (and keeps a copy) before host 0 knows it: host 0's write cannot
    invalidate it then.  When host 0's ring adds host 1, it sends the keys it wrote in
    the replay window, so that copy does not outlive the write."""

    async def go():
        async with cluster(2, {"k": b"old"}, views=[[0], [0, 1]]) as (hosts, storage):
            (g0, pool0, m0), (g1, pool1, m1) = hosts
            key = next(k for k in (f"k{i}" for i in range(1000)) if pool1.owner(k) == m1)
            await storage.set(key, b"old")
            assert await g1.get(key) == b"old"  # host 1 owns it by its ring: its own copy
            await g0.set(key, b"new")  # host 0 owns everything by its ring: host 1 is not told
            assert g1._cache.get("g", key) == b"old"
            pool0._members = _Members([m0, m1])
            assert pool0.owner(key) == m1  # the ring grows, and host 1 is sent the key
            for _ in range(200):  # bounded: the delivery is a task of this loop
                if g1._cache.get("g", key) is None:
                    break
                await asyncio.sleep(0.01)
            assert g1._cache.get("g", key) is None
            assert await g1.get(key) == b"new"

    asyncio.run(go())
