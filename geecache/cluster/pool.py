"""HTTPPool: the PeerPicker of a cluster, over HTTP with protobuf bodies.

groupcache's HTTPPool.  The member list comes from a ``MemberSource`` (the
arena's ring region, written by the host's registrar from etcd, or a static
``--peers`` list); ``pick`` rebuilds the consistent-hash ring only when the
member list's version changes, so the request path reads one integer.

Peer paths (served by ``workers.dataplane.routes``):

    GET    /_geecache/<group>/<key>   -> GetResponse (value packed with the group's codec)
    PUT    /_geecache/<group>/<key>   <- SetRequest -> WriteResponse (the owner writes through)
    DELETE /_geecache/<group>/<key>   <- DeleteRequest -> WriteResponse (from source and cache)
    POST   /_geecache/<group>         <- InvalidateRequest (drop hot copies)
    POST   /_geecache/<group>/_batch  <- BatchRequest -> BatchResponse (the owner's keys of a batch get)
    GET    /_geecache/:writes?within=S -> RecentWrites (the keys it wrote in the last S seconds)
    POST   /_geecache/<group>/_writes <- WriteBatch -> WriteBatchResponse (the owner's keys of a batch write)
    POST   /_geecache/<group>/_warm   <- WarmRequest -> WarmResponse (a joining host's warm-up)

A write carries its version (the originator's HLC timestamp) and a deadline
(when the originator gives up and writes it itself); the owner's
WriteResponse says whether it applied, and the key's version if not.  Every
call goes through the pool's per-peer circuit breaker (``geecache.cluster.breaker``):
after a timeout or refusal the peer is not called for a cooldown, and the
caller serves its keys as if it were down.

This module is the picker: the ring, its previous version (the handoff), the cold
marks, and the questions to the members' logs of recent writes.  One peer's calls
are ``geecache.cluster.httppeer``; the invalidations sent, owed and replayed are
``geecache.cluster.invalidations``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import logging
import ssl
import time
from array import array
from typing import Callable, Protocol
from urllib.parse import urlsplit

from geecache.auth import bearer
from geecache.cluster.breaker import Breaker
from geecache.cluster.consistenthash import Ring
from geecache.cluster.httppeer import PROTOBUF, RECENT_WRITES_PATH, HTTPPeer, peer_url
from geecache.cluster.invalidations import Invalidations
from geecache.defaults import DEFAULT_PEER_CONNECT_TIMEOUT, DEFAULT_PEER_READ_TIMEOUT
from geecache.errors import PeerError
from geecache.geecachepb import RecentWrites

log = logging.getLogger(__name__)

#: How long a previous owner's word that it holds nothing of a group stands: its handoff asks
#: are skipped meanwhile (it gains no entry of the keys that left it, except by loading them
#: itself while its ring still names it their owner, and that costs only a load here).
COLD_FOR = 10.0


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


class HTTPPool:
    """Picks owners over the member list and holds the pooled peer connections.

    Use it inside one event loop (the worker's, after fork): its idle
    connections belong to that loop.
    """

    #: A pool has (or may come to have) other members: writes are announced to them.
    alone = False

    def __init__(
        self,
        self_address: str,
        members: MemberSource,
        *,
        token: str | None = None,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = DEFAULT_PEER_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_PEER_READ_TIMEOUT,
        codecs: dict[str, str] | None = None,
        replicas: int | None = None,
        breaker: Breaker | None = None,
        replay_window: float = 10.0,
        handoff_window: float = 0.0,
        write_log=None,
    ) -> None:
        self.self_address = self_address
        #: The host's shared log of the writes it applied (``geecache.writelog``), or None.
        self.write_log = write_log
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
        #: Per-peer circuit breakers; their state and counters are in ``snapshot()``.
        self.breaker = breaker or Breaker()
        self._codecs = codecs or {}
        self._ring_args = {} if replicas is None else {"replicas": replicas}
        # Rebuilt (and rebound whole) when the member version moves; the event
        # loop's single thread is the guard.
        self._version = -1
        self._ring = Ring(**self._ring_args)
        # The ring before the last change, kept handoff_window seconds: a key that
        # moved here is asked of its previous owner's cache before the source.
        self.handoff_window = float(handoff_window)
        #: Called (no arguments) when this host's ring first holds other members after holding
        #: none but itself, inside the refresh, before any key is routed by the new ring: the
        #: pause guard drops the copies kept while serving alone there (``PauseGuard.joined``).
        self.on_joined: Callable[[], None] | None = None
        #: Called (previous ring, new ring) when this host enters a ring with others that it was
        #: not in (a join, or a re-join), inside the refresh: the warm-up starts there.
        self.on_moved_here: Callable[[Ring, Ring], None] | None = None
        # (address, group) -> monotonic time until which that previous owner's word that it holds
        # nothing of the group stands (``note_cold``); the event loop's thread guards it.
        self._cold: dict[tuple[str, str], float] = {}
        #: () -> the names of the groups this host caches nothing of (set by the worker), read at
        #: every ring change: such a group's entries were all stored by a ring naming every member
        #: of it, so none of them is a key that left this host for one of those (``holds_nothing_for``).
        self.empty_groups: Callable[[], set[str]] | None = None
        self._empty_at_change: frozenset[str] = frozenset()
        self._previous: Ring | None = None
        self._changed_at = 0.0
        self._peers: dict[str, HTTPPeer] = {}
        #: (ring, peers, hashes, owned) of the last ``owned_vnodes`` (the loop's thread guards it).
        self._owned_seen: tuple = (None, None, b"", b"")
        #: The invalidations sent to the other members, those owed to them, and the recent
        #: ones replayed to members the ring adds (``geecache.cluster.invalidations``).
        self._mail = Invalidations(self.breaker, replay_window)

    def codec_for(self, group: str) -> str:
        """The codec name peers use for *group*'s values."""
        return self._codecs.get(group, "none")

    def _refresh(self) -> None:
        version = self._members.ring_version()
        if version == self._version:
            return
        version, members = self._members.read_ring()
        # Derived from the ring in use: only the members that changed are hashed.
        ring = self._ring.with_nodes(members)
        old_peers = self._peers
        self._peers = {m: old_peers.get(m) or HTTPPeer(self, m) for m in members if m != self.self_address}
        for gone in old_peers.keys() - self._peers.keys():
            old_peers[gone].close()
            self.breaker.forget(gone)  # if it comes back, it starts closed
            self._mail.drop(gone)
        added = self._peers.keys() - old_peers.keys()
        previous = self._ring
        joined = False
        if not previous.nodes or tuple(previous.nodes) == (self.self_address,):
            joined = bool(self._peers)
            # This host's first ring, or the [self] the supervisor writes before the
            # registrar has heard from etcd (seen in CI: a request reached the new host
            # first): before it joined, the others owned its keys.
            previous = Ring(**self._ring_args)
            if self._peers:
                previous.add(*self._peers)
        self._previous, self._changed_at = previous, time.monotonic()
        if self.empty_groups is not None:  # before any key is routed by the new ring in this process
            self._empty_at_change = frozenset(self.empty_groups())
        self._ring, self._version = ring, version
        log.debug("ring v%d read: %d members, %d added, %d gone", version, len(members), len(added),
                  len(old_peers.keys() - self._peers.keys()))
        if added:
            self._mail.replay([self._peers[address] for address in added])
        if joined and self.on_joined is not None:
            self.on_joined()
        if (self.on_moved_here is not None and self._peers and self.self_address in ring
                and self.self_address not in previous and previous.nodes):
            self.on_moved_here(previous, ring)

    def members(self) -> tuple[str, ...]:
        """The current member list (including this host when registered)."""
        self._refresh()
        return self._ring.nodes

    def ring(self) -> tuple[int, Ring]:
        """(member list version, the ring built from it) this host routes by now."""
        self._refresh()
        return self._version, self._ring

    def peer_for(self, address: str) -> HTTPPeer | None:
        """The peer of ring member *address* (None for this host or a non-member)."""
        self._refresh()
        return self._peers.get(address)

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

    def owns(self, keys: list[str]) -> list[bool]:
        """For each of *keys*, whether ``pick`` would name no peer (this host owns it), by one
        look at the member list: an owner's batch of keys is routed per key otherwise."""
        self._refresh()
        owner_of, me, peers = self._ring.get, self.self_address, self._peers
        out = []
        for key in keys:
            owner = owner_of(key)
            out.append(owner is None or owner == me or owner not in peers)
        return out

    def owned_vnodes(self) -> tuple[bytes, bytes]:
        """``owns`` as a table (``PeerPicker.owned_vnodes``), made once per ring and peer set."""
        self._refresh()
        seen = self._owned_seen
        if seen[0] is not self._ring or seen[1] is not self._peers:
            hashes, owners = self._ring.vnodes()
            me, peers = self.self_address, self._peers
            seen = self._owned_seen = (self._ring, peers, array("Q", hashes).tobytes(),
                                       bytes(owner == me or owner not in peers for owner in owners))
        return seen[2], seen[3]

    def handoff_peer(self, key: str) -> HTTPPeer | None:
        """For a key this host owns now: its owner by the ring before the last change, when
        that was within ``handoff_window`` seconds, is another host and is still a member; else None."""
        self._refresh()
        if self._previous is None or time.monotonic() - self._changed_at > self.handoff_window:
            return None
        if self._ring.get(key) != self.self_address:
            return None
        owner = self._previous.get(key)
        if owner is None or owner == self.self_address:
            return None
        return self._peers.get(owner)

    def holds_nothing_for(self, group: str, asker: str) -> bool:
        """True when this host holds no entry of *group* that moved from it to member *asker*:
        *asker* is in its ring, and it cached nothing of *group* when its ring last changed, so
        what it holds now was stored by a ring that gives *asker* its own keys (a host or a
        cluster that started cold).  A handoff or warm-up ask of it then costs a hop for nothing."""
        self._refresh()
        return asker in self._ring and group in self._empty_at_change

    def note_cold(self, address: str, group: str) -> None:
        """Previous owner *address* said it holds nothing of *group*: skip its handoff asks for COLD_FOR s."""
        self._cold[(address, group)] = time.monotonic() + COLD_FOR

    def is_cold(self, address: str, group: str) -> bool:
        """True while *address*'s word that it holds nothing of *group* stands (``note_cold``)."""
        until = self._cold.get((address, group))
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._cold[(address, group)]
        return False

    async def writes_since(self, within: float, members_before=(), timeout: float = 2.0
                           ) -> tuple[dict[str, set[str]] | None, str]:
        """``writes_elsewhere`` on the event loop, this host's own log included: (group -> keys
        every member, this one too, wrote in the last *within* seconds, "") or (None, why) when
        one cannot say.  This host's log counts as covering the time before it was created:
        nothing of this host wrote then."""
        self._refresh()
        gone = [m for m in members_before if m != self.self_address and m not in self._peers]
        if gone:
            return None, f"{gone[0]} left the ring meanwhile"
        out: dict[str, set[str]] = {}
        if self.write_log is not None:
            covered, mine = self.write_log.since(max(0.0, min(within, self.write_log.age() - 0.01)))
            if not covered:
                return None, "this host's own log does not reach back (wrapped, or a write went unlogged)"
            out.update(mine)
        peers = list(self._peers.values())
        answers = await asyncio.gather(*(asyncio.wait_for(p.recent_writes(within), timeout) for p in peers),
                                       return_exceptions=True)
        for peer, msg in zip(peers, answers):
            if isinstance(msg, BaseException):
                if not isinstance(msg, (PeerError, asyncio.TimeoutError)):
                    raise msg
                return None, f"{peer.address}: {type(msg).__name__}: {msg}"
            if not msg.covered:
                return None, f"the log of {peer.address} does not reach back {within:.1f}s"
            for written in msg.groups:
                out.setdefault(written.group, set()).update(written.keys)
        return out, ""

    async def invalidate(self, group: str, keys: list[str], timeout: float = 1.0) -> int:
        """Ask every other member to drop its copies of *keys*; bounded by *timeout*.

        Through ``Invalidations.send``: a member that does not answer is owed
        them until it does, and members the ring adds within ``replay_window``
        seconds are sent them too.  Returns how many breakers this opened.
        """
        self._refresh()
        if self.write_log is not None:  # every applied write passes here: hosts that were away ask it
            self.write_log.append(group, keys)
        return await self._mail.send(self._peers.values(), group, keys, timeout)

    def writes_elsewhere(self, within: float, members_before=(), timeout: float = 2.0
                         ) -> tuple[dict[str, set[str]] | None, str]:
        """(group -> keys, "") the other members wrote in the last *within* seconds; (None, why) when
        one of them cannot say (unreachable, or its log does not reach back that far), or a member
        of *members_before* has left the ring since (nobody can say what it wrote).

        Blocking, on purpose: the pause guard calls it on the worker's loop
        right after a pause, so no request is served from a copy it is about
        to drop; every member is asked at once, bounded by *timeout*.
        """
        self._refresh()
        peers = list(self._peers)
        gone = [m for m in members_before if m != self.self_address and m not in self._peers]
        if gone:
            return None, f"{gone[0]} left the ring meanwhile"
        if not peers:
            return {}, ""
        pool = concurrent.futures.ThreadPoolExecutor(len(peers), thread_name_prefix="geecache-recent")
        try:
            calls = {pool.submit(self._ask_recent, address, within, timeout): address for address in peers}
            done, _ = concurrent.futures.wait(calls, timeout=timeout + 0.5)
        finally:
            pool.shutdown(wait=False)
        out: dict[str, set[str]] = {}
        for future, address in calls.items():
            if future not in done:
                return None, f"{address} did not answer within {timeout:g}s"
            error = future.exception()
            if error is not None:
                return None, f"{address}: {type(error).__name__}: {error}"
            msg = future.result()
            if not msg.covered:
                return None, f"the log of {address} does not reach back {within:.1f}s"
            for written in msg.groups:
                out.setdefault(written.group, set()).update(written.keys)
        return out, ""

    def _ask_recent(self, address: str, within: float, timeout: float) -> RecentWrites:
        url = urlsplit(peer_url(address, self.tls))
        host = url.hostname or ""  # (a member's address always names a host)
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(host, url.port, timeout=timeout,
                                               context=self.ssl_context or ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, url.port, timeout=timeout)
        try:
            conn.request("GET", f"{url.path}{RECENT_WRITES_PATH}?within={within:.3f}", headers=self.headers)
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        if answer.status != 200:
            raise PeerError(f"answered {answer.status}: {body[:200]!r}")
        msg = RecentWrites()
        msg.ParseFromString(body)
        return msg

    async def close(self) -> None:
        """Close the pooled connections; undelivered invalidations are given up."""
        self._mail.close()
        for peer in self._peers.values():
            peer.close()
