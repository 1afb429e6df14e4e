"""Group: groupcache's named namespace over one source.

``get`` checks this host's cache, then asks the ring who owns the key: the
owner's copy comes over the peer protocol (kept as a bounded "hot" copy
here), a key this host owns is loaded from the source once per host (an
in-process single flight in front of the arena's host-wide one) and cached.
``set``/``delete`` go to the owner, which writes through to the source first:
the source is the truth and the cache may lose anything at any time.

``Group`` is a small facade over its parts, one module and one job each:

- ``probes``: is a key cached here (the hit path);
- ``reads``: a client's reads, routed to the owner, one key or a batch;
- ``serving``: the owner's side, what other hosts are answered;
- ``loads``: the host-wide load machinery (one loader per host, handoff, source);
- ``writes``: a client's writes routed to their owners, and the owner's half;
- ``core``: the state and helpers they share; ``fence``: the write fence.
"""

from __future__ import annotations

import asyncio

from ..cache import Cache, HostFlight, LocalCache, NoHostFlight
from ..compression import get_codec
from ..defaults import DEFAULT_LOAD_TIMEOUT
from ..limits import DEFAULT_ITEM_LIMIT, check_group_name, hot_group_name
from geecache.cluster.peers import NoPeers, PeerPicker
from ..singleflight import Group as SingleFlight
from ..doorkeeper import Doorkeeper
from .core import DEFAULT_FLIGHT_WAIT, DEFAULT_HOT_AFTER, DEFAULT_HOT_TTL, HOT_FRACTION, declare_partitions
from .fence import WriteFence
from .reads import RoutedReads
from .serving import PeerServing
from .writes import WRITE_ATTEMPTS, Writes

__all__ = ["Group", "declare_partitions", "DEFAULT_HOT_TTL", "HOT_FRACTION", "DEFAULT_FLIGHT_WAIT",
           "DEFAULT_HOT_AFTER", "WRITE_ATTEMPTS"]


class Group(RoutedReads, PeerServing, Writes):
    """A cache namespace: name, source, budget, policy, TTL, wire codec, peers."""

    def __init__(
        self,
        name: str,
        source,
        *,
        max_bytes: int = 64 << 20,
        policy: str = "lru",
        ttl: float = 0,
        codec: str = "none",
        cache: Cache | None = None,
        flight: HostFlight | None = None,
        peers: PeerPicker | None = None,
        item_limit: int = DEFAULT_ITEM_LIMIT,
        hot_ttl: float = DEFAULT_HOT_TTL,
        flight_wait: float = DEFAULT_FLIGHT_WAIT,
        hot_share: float = 1 / HOT_FRACTION,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        hot_after: int = DEFAULT_HOT_AFTER,
    ) -> None:
        self.name = check_group_name(name)
        self.source = source
        self.max_bytes = int(max_bytes)
        #: The hot copies' budget, as ``declare_partitions`` carves it.
        self.hot_bytes = max(int(self.max_bytes * hot_share), 1)
        self.policy = policy
        self.ttl = float(ttl)
        self.codec = get_codec(codec)
        self.item_limit = int(item_limit)
        self.peers: PeerPicker = peers or NoPeers()
        self._cache: Cache = cache if cache is not None else LocalCache()
        self._flight: HostFlight = flight if flight is not None else NoHostFlight()
        self._calls = SingleFlight()
        # Peer-served loads get their own flight: joining a client get that is
        # itself forwarding to a peer would let two hosts wait on each other.
        self._local_calls = SingleFlight()
        # Local loads after a failed peer fetch (``_fetch_soon``), held until they end: the loop
        # keeps only weak references to tasks.  The event loop's thread guards it.
        self._fallbacks: set[asyncio.Task] = set()
        self._fence = WriteFence()
        self._hot = hot_group_name(name)
        self._hot_ttl = float(min(hot_ttl, ttl) if ttl else hot_ttl)
        self._doorkeeper = Doorkeeper(hot_after)
        self._flight_wait = flight_wait
        self.load_timeout = float(load_timeout)
        declare_partitions(self._cache, self.name, self.max_bytes, policy, hot_share)
        self.stats = self._cache.stats_sink(self.name)
        # getattr: the source is the user's object, and a loader function has no attach_stats.
        attach = getattr(source, "attach_stats", None)
        if attach is not None:  # a source that commits counts its commits in the group's row
            attach(self.stats)
        # Values kept compressed: only in a cache whose entries carry a codec id.  Whether
        # this group packs decides only how new values are stored; reads decode every
        # entry by its own codec id, since the entries cached before a codec change (a
        # SIGHUP, a warm restart) keep the codec they were stored with.
        self.packs = bool(self.codec.id and self._cache.keeps_codec)
