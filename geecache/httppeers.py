"""HTTPPool: the PeerPicker of a cluster, over HTTP with protobuf bodies.

groupcache's HTTPPool.  The member list comes from a ``MemberSource`` (the
arena's ring region, written by the host's registrar from etcd, or a static
``--peers`` list); ``pick`` rebuilds the consistent-hash ring only when the
member list's version changes, so the request path reads one integer.

Peer paths (served by ``workers.peer_api``):

    GET    /_geecache/<group>/<key>   -> GetResponse (value packed with the group's codec)
    PUT    /_geecache/<group>/<key>   <- SetRequest  (the owner writes through)
    DELETE /_geecache/<group>/<key>   (the owner deletes from source and cache)
    POST   /_geecache/<group>         <- InvalidateRequest (drop hot copies)
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol
from urllib.parse import quote

import aiohttp
from google.protobuf.message import DecodeError

from .compression import pack, unpack
from .consistenthash import Ring
from .errors import CodecError, NotFoundError, PeerError
from .geecachepb import DeleteRequest, GetResponse, InvalidateRequest, SetRequest

PEER_PREFIX = "/_geecache/"
PROTOBUF = "application/x-protobuf"


class MemberSource(Protocol):
    """Where the current member list comes from (the arena's ring region)."""

    def ring_version(self) -> int:
        """A number that changes whenever the member list does; cheap."""

    def read_ring(self) -> tuple[int, list[str]]:
        """(version, members) read consistently."""


class StaticMembers:
    """A fixed member list: ``--peers`` without etcd, and tests."""

    def __init__(self, members: list[str]) -> None:
        self._members = list(members)

    def ring_version(self) -> int:
        return 1

    def read_ring(self) -> tuple[int, list[str]]:
        return 1, list(self._members)


def base_url(member: str, tls: bool = False) -> str:
    """``http(s)://host:port`` for a member advertised as ``host:port`` or a URL."""
    if "://" in member:
        return member.rstrip("/")
    return ("https://" if tls else "http://") + member


def peer_path(group: str, key: str | None = None) -> str:
    """The peer endpoint path of *group* (and *key*)."""
    path = PEER_PREFIX + quote(group, safe="")
    return path if key is None else path + "/" + quote(key, safe="")


class HTTPPeer:
    """One other host, reached through the pool's shared ClientSession."""

    def __init__(self, pool: "HTTPPool", address: str) -> None:
        self.address = address
        self._pool = pool
        self._base = base_url(address, pool.tls)

    def __repr__(self) -> str:
        return f"HTTPPeer({self.address!r})"

    async def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            async with self._pool.session.request(
                method, self._base + path, data=body, headers=self._pool.headers, ssl=self._pool.ssl
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise PeerError(f"peer {self.address}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _fail(address: str, status: int, body: bytes) -> PeerError:
        return PeerError(f"peer {address} answered {status}: {body[:200]!r}")

    async def fetch(self, group: str, key: str) -> tuple[bytes, float]:
        status, body = await self._call("GET", peer_path(group, key))
        if status == 404:
            raise NotFoundError(f"group {group!r} has no key {key!r}")
        if status != 200:
            raise self._fail(self.address, status, body)
        msg = GetResponse()
        try:
            msg.ParseFromString(body)
            value = unpack(msg.codec, msg.value)
        except (DecodeError, CodecError) as exc:
            raise PeerError(f"peer {self.address}: bad response: {exc}") from exc
        return value, msg.expire_at

    async def set(self, group: str, key: str, value: bytes) -> None:
        codec_id, payload = pack(value, self._pool.codec_for(group))
        msg = SetRequest(group=group, key=key, value=payload, codec=codec_id)
        status, body = await self._call("PUT", peer_path(group, key), msg.SerializeToString())
        if status != 204 and status != 200:
            raise self._fail(self.address, status, body)

    async def delete(self, group: str, key: str) -> bool:
        status, body = await self._call("DELETE", peer_path(group, key))
        if status == 404:
            return False
        if status != 204 and status != 200:
            raise self._fail(self.address, status, body)
        return True

    async def invalidate(self, group: str, keys: list[str]) -> None:
        body = InvalidateRequest(group=group, keys=keys).SerializeToString()
        status, answer = await self._call("POST", peer_path(group), body)
        if status != 204 and status != 200:
            raise self._fail(self.address, status, answer)


class HTTPPool:
    """Picks owners over the member list and holds the pooled peer connections.

    Create it inside the worker's event loop (after fork): the ClientSession
    and its connector belong to that loop.
    """

    def __init__(
        self,
        self_address: str,
        members: MemberSource,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 0.5,
        read_timeout: float = 2.0,
        codecs: dict[str, str] | None = None,
        replicas: int | None = None,
    ) -> None:
        self.self_address = self_address
        self.tls = ssl_context is not None
        self.ssl = ssl_context if ssl_context is not None else False
        self.headers = {"Content-Type": PROTOBUF}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        self._members = members
        self._codecs = codecs or {}
        self._ring_args = {} if replicas is None else {"replicas": replicas}
        # Rebuilt (and rebound whole) when the member version moves; the event
        # loop's single thread is the guard.
        self._version = -1
        self._ring = Ring(**self._ring_args)
        self._peers: dict[str, HTTPPeer] = {}
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=connect_timeout + read_timeout, sock_connect=connect_timeout,
                                          sock_read=read_timeout),
            connector=aiohttp.TCPConnector(limit_per_host=64, keepalive_timeout=30),
        )

    def codec_for(self, group: str) -> str:
        """The codec name peers use for *group*'s values."""
        return self._codecs.get(group, "none")

    def _refresh(self) -> None:
        version = self._members.ring_version()
        if version == self._version:
            return
        version, members = self._members.read_ring()
        ring = Ring(**self._ring_args)
        if members:
            ring.add(*members)
        self._peers = {m: HTTPPeer(self, m) for m in members if m != self.self_address}
        self._ring, self._version = ring, version

    def members(self) -> tuple[str, ...]:
        """The current member list (including this host when registered)."""
        self._refresh()
        return self._ring.nodes

    def owner(self, key: str) -> str | None:
        """The owning member of *key*, or None while the ring is empty."""
        self._refresh()
        return self._ring.get(key)

    def pick(self, key: str) -> HTTPPeer | None:
        """The peer owning *key*, or None when this host owns it (or is alone)."""
        owner = self.owner(key)
        if owner is None or owner == self.self_address:
            return None
        return self._peers.get(owner)

    async def invalidate(self, group: str, keys: list[str], timeout: float = 1.0) -> None:
        """Ask every other member to drop hot copies; best effort, bounded by *timeout*."""
        self._refresh()
        peers = list(self._peers.values())
        if not peers:
            return
        calls = [asyncio.ensure_future(p.invalidate(group, keys)) for p in peers]
        done, pending = await asyncio.wait(calls, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # retrieved: a down peer's hot copy expires by TTL

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.session.close()
