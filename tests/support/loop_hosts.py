"""Hosts of one event loop on loopback: real data planes and peer pools over free ports.

``cluster`` starts *n* of them over one shared storage, for tests of the peer protocol
that need no process (``tests/support/cluster.py`` has the multi-process ones, with etcd).
"""

from __future__ import annotations

import contextlib
import socket

from geecache.cluster.pool import HTTPPool, StaticMembers
from geecache.group import Group
from geecache.shm import Arena
from geecache.storage import MemoryStorage
from workers.dataplane import serve_data_plane

TOKEN = "s3cret"


class CountingStorage(MemoryStorage):
    """Counts source loads, so a test can tell which host loaded a key."""

    def __init__(self, data):
        super().__init__(data)
        self.loads = 0

    async def get(self, key):
        self.loads += 1
        return await super().get(key)


class LoopHosts(list):
    """The hosts of ``cluster``: (group, pool, member) each; ``start(i)`` brings a down host up."""

    async def start(self, i):
        self.sockets[i].listen(128)
        self.planes[i] = await serve_data_plane(self.sockets[i], self.groups[i], auth_token=self.token,
                                                item_limit=1 << 20)


@contextlib.asynccontextmanager
async def cluster(n=2, data=None, token=TOKEN, down=(), views=None, hot_after=None, codec="zstd",
                  arena_bytes=0):
    """n hosts on free ports, each with its own group over one shared storage, served by the data plane.

    *views* (member indexes per host) gives each host its own member list, to
    make rings disagree; by default every host sees every member.  A host in
    *down* has its port bound but not listening (connections are refused).
    *hot_after*: the groups' (``Group(hot_after=)``); if blank, the default.  *codec*: the
    groups' wire codec.  *arena_bytes*: each host caches in an ``Arena`` of that size (so its
    data plane may take the compiled hit path); if blank, in a ``LocalCache``.
    """
    sockets = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    members = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    storage = CountingStorage(dict(data or {}))
    hosts = LoopHosts()
    hosts.members, hosts.sockets, hosts.token = members, sockets, token
    hosts.groups, hosts.planes = [], [None] * n
    arenas: list[Arena] = []
    try:
        for i in range(n):
            view = members if views is None else [members[j] for j in views[i]]
            pool = HTTPPool(members[i], StaticMembers(view), token=token, codecs={"g": codec})
            extra = {} if hot_after is None else {"hot_after": hot_after}
            if arena_bytes:
                arenas.append(Arena.create(arena_bytes, shards=4))
                extra.update(cache=arenas[-1], max_bytes=arena_bytes // 4)
            group = Group("g", storage, peers=pool, codec=codec, **extra)
            hosts.append((group, pool, members[i]))
            hosts.groups.append({"g": group})
        for i in range(n):
            if i not in down:
                await hosts.start(i)
        yield hosts, storage
    finally:
        for group, pool, _ in hosts:
            await pool.close()
        for plane in hosts.planes:
            if plane is not None:
                await plane.close(1.0)
        for sock in sockets:
            sock.close()
        for arena in arenas:
            arena.close()
            arena.unlink()


def owned_by(pool, member, count=1, prefix="k"):
    """The first *count* keys named *prefix*<i> that *member* owns by *pool*'s ring."""
    keys = [f"{prefix}{i}" for i in range(1000) if pool.owner(f"{prefix}{i}") == member]
    return keys[:count]
