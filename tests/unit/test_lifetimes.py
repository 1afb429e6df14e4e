"""Lifetimes between hosts: seconds left on the wire, an expiry by the receiver's clock."""

import asyncio
import time

from geecache.cache import LocalCache
from geecache.geecachepb import GetResponse
from geecache.group import Group
from geecache.cluster.pool import HTTPPool, StaticMembers
from geecache.lifetimes import local_expiry, seconds_left
from geecache.storage import MemoryStorage


def test_seconds_left_and_back_by_another_clock():
    assert seconds_left(0.0, 100.0) == 0.0  # never expires
    assert seconds_left(106.0, 100.0) == 6.0
    assert 0 < seconds_left(99.0, 100.0) < 0.01  # a sender never claims an entry dead
    # A receiver an hour behind the sender: the copy lives the same 6 s by its clock.
    assert local_expiry(106.0, 6.0, 100.0 - 3600) == 100.0 - 3600 + 6
    assert local_expiry(0.0, 0.0, 5.0) == 0.0
    assert local_expiry(106.0, 0.0, 5.0) == 106.0  # a sender from before ttl_left


async def _older_owner(expire_at: float):
    """A real HTTP server on loopback answering every peer GET as a host from before
    ``ttl_left`` would: an absolute expiry (here already past) and nothing else."""
    body = GetResponse(value=b"stale", codec=0, expire_at=expire_at).SerializeToString()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    asked = []

    async def serve(reader, writer):
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                asked.append(request.split(b" ", 2)[1])
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}", asked


def test_a_handoff_answer_past_its_expiry_is_neither_served_nor_kept():
    async def main():
        server, address, asked = await _older_owner(expire_at=time.time() - 5)
        me = "127.0.0.1:1"  # never called: only the ring needs it
        pool = HTTPPool(me, StaticMembers([me, address]), handoff_window=30)
        cache = LocalCache()
        group = Group("g", MemoryStorage({}), cache=cache, peers=pool)
        keys = [f"k{i}" for i in range(200) if pool.owner(f"k{i}") == me][:3]
        try:
            for key in keys:
                await group.source.write(key, b"fresh")
                assert pool.handoff_peer(key) is not None  # its previous owner is the older host
                assert await group.get(key) == b"fresh"
                assert cache.get("g", key) == b"fresh"
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()
        return asked, group.stats.snapshot()

    asked, stats = asyncio.run(main())
    assert all(b"handoff=1" in path for path in asked) and len(asked) == 3  # asked, answered, refused
    assert stats["handoff_misses"] == 3 and stats["handoff_hits"] == 0
