"""HTTPPool: the PeerPicker of a cluster, over HTTP with protobuf bodies.

groupcache's HTTPPool.  The member list comes from a ``MemberSource`` (the
arena's ring region, written by the host's registrar from etcd, or a static
``--peers`` list); ``pick`` rebuilds the consistent-hash ring only when the
member list's version changes, so the request path reads one integer.

Peer paths (served by ``workers.dataplane.routes``):

    GET    /_geecache/<group>/<key>   -> GetResponse (value packed with the group's codec)
    PUT    /_geecache/<group>/<key>   <- SetRequest  (the owner writes through)
    DELETE /_geecache/<group>/<key>   (the owner deletes from source and cache)
    POST   /_geecache/<group>         <- InvalidateRequest (drop hot copies)
    POST   /_geecache/<group>/_batch  <- BatchRequest -> BatchResponse (the owner's keys of a batch get)
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol
from urllib.parse import quote

from google.protobuf.message import DecodeError

from .auth import bearer
from .compression import pack, unpack
from .consistenthash import Ring
from .peerclient import ConnectionPool, PeerProtocolError
from .errors import CodecError, NotFoundError, PeerError
from .geecachepb import BatchItem, BatchRequest, BatchResponse, GetResponse, InvalidateRequest, SetRequest

PEER_PREFIX = "/_geecache/"
PROTOBUF = "application/x-protobuf"
#: The key part of the peer batch path: POST there is a batch, never a key (no POST of a key).
BATCH = "_batch"


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


def peer_url(advertise: str, tls: bool = False) -> str:
    """The base URL peers use for a member: ``http(s)://<advertise>`` unless it has a scheme."""
    if "://" in advertise:
        return advertise.rstrip("/")
    return ("https://" if tls else "http://") + advertise


def peer_path(group: str, key: str | None = None) -> str:
    """The peer endpoint path of *group* (and *key*)."""
    path = PEER_PREFIX + quote(group, safe="")
    return path if key is None else path + "/" + quote(key, safe="")


class HTTPPeer:
    """One other host, reached over its own pool of keep-alive connections."""

    def __init__(self, pool: "HTTPPool", address: str) -> None:
        self.address = address
        self._pool = pool
        self._conns = ConnectionPool(peer_url(address, pool.tls), ssl_context=pool.ssl_context,
                                     connect_timeout=pool.connect_timeout, read_timeout=pool.read_timeout)

    def __repr__(self) -> str:
        return f"HTTPPeer({self.address!r})"

    async def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            return await self._conns.request(method, path, self._pool.headers, body)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, PeerProtocolError) as exc:
            raise PeerError(f"peer {self.address}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _fail(address: str, status: int, body: bytes) -> PeerError:
        return PeerError(f"peer {address} answered {status}: {body[:200]!r}")

    def close(self) -> None:
        """Close this peer's idle connections."""
        self._conns.close()

    async def fetch(self, group: str, key: str, max_size: int) -> tuple[bytes, float]:
        """(value, expire_at) from the owner (see ``geecache.peers.Peer``)."""
        status, body = await self._call("GET", peer_path(group, key))
        if status == 404:
            raise NotFoundError(f"group {group!r} has no key {key!r}")
        if status != 200:
            raise self._fail(self.address, status, body)
        msg = GetResponse()
        try:
            msg.ParseFromString(body)
            value = unpack(msg.codec, msg.value, max_size)
        except (DecodeError, CodecError) as exc:
            raise PeerError(f"peer {self.address}: bad response: {exc}") from exc
        return value, msg.expire_at

    async def fetch_many(self, group: str, keys: list[str], max_size: int) -> dict[str, tuple[int, bytes, float]]:
        """key -> (status, value, expire_at) from the owner, in one request; PeerError when unreachable.

        Status 200 (found), 404 (the source has no such key), or the HTTP
        status of the error the owner met loading that key.
        """
        body = BatchRequest(group=group, items=[BatchItem(key=k) for k in keys]).SerializeToString()
        status, answer = await self._call("POST", peer_path(group, BATCH), body)
        if status != 200:
            raise self._fail(self.address, status, answer)
        msg = BatchResponse()
        try:
            msg.ParseFromString(answer)
        except DecodeError as exc:
            raise PeerError(f"peer {self.address}: bad batch response: {exc}") from exc
        if len(msg.items) != len(keys):
            raise PeerError(f"peer {self.address}: {len(msg.items)} answers to a batch of {len(keys)}")
        out = {}
        for key, item in zip(keys, msg.items):
            if item.status == 200:
                try:
                    out[key] = (200, unpack(item.codec, item.value, max_size), item.expire_at)
                except CodecError:
                    out[key] = (502, b"", 0.0)  # this key loads locally
            else:
                out[key] = (item.status, b"", 0.0)
        return out

    async def set(self, group: str, key: str, value: bytes, ttl: float = 0) -> None:
        """Ask the owner to write through (see ``geecache.peers.Peer``)."""
        codec_id, payload = pack(value, self._pool.codec_for(group))
        msg = SetRequest(group=group, key=key, value=payload, codec=codec_id, ttl=ttl)
        status, body = await self._call("PUT", peer_path(group, key), msg.SerializeToString())
        if status != 204 and status != 200:
            raise self._fail(self.address, status, body)

    async def delete(self, group: str, key: str) -> bool:
        """Ask the owner to delete (see ``geecache.peers.Peer``)."""
        status, body = await self._call("DELETE", peer_path(group, key))
        if status == 404:
            return False
        if status != 204 and status != 200:
            raise self._fail(self.address, status, body)
        return True

    async def invalidate(self, group: str, keys: list[str]) -> None:
        """Ask this member to drop its copies of *keys*."""
        body = InvalidateRequest(group=group, keys=keys).SerializeToString()
        status, answer = await self._call("POST", peer_path(group), body)
        if status != 204 and status != 200:
            raise self._fail(self.address, status, answer)


class HTTPPool:
    """Picks owners over the member list and holds the pooled peer connections.

    Use it inside one event loop (the worker's, after fork): its idle
    connections belong to that loop.
    """

    def __init__(
        self,
        self_address: str,
        members: MemberSource,
        *,
        token: str | None = None,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 0.5,
        read_timeout: float = 2.0,
        codecs: dict[str, str] | None = None,
        replicas: int | None = None,
    ) -> None:
        self.self_address = self_address
        # tls: members advertised as bare host:port are reached over https.
        # ssl_context verifies them; None = the system's CA store (never "no checks").
        self.tls = tls
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.headers = {"Content-Type": PROTOBUF}
        if token:
            self.headers["Authorization"] = bearer(token)
        self._members = members
        self._codecs = codecs or {}
        self._ring_args = {} if replicas is None else {"replicas": replicas}
        # Rebuilt (and rebound whole) when the member version moves; the event
        # loop's single thread is the guard.
        self._version = -1
        self._ring = Ring(**self._ring_args)
        self._peers: dict[str, HTTPPeer] = {}

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
        old_peers = self._peers
        self._peers = {m: old_peers.get(m) or HTTPPeer(self, m) for m in members if m != self.self_address}
        for gone in old_peers.keys() - self._peers.keys():
            old_peers[gone].close()
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
        for peer in self._peers.values():
            peer.close()
