"""What every part of a ``Group`` shares: its settings, its partitions, and the few
helpers each part calls (decode an entry, where a key is kept, keep a value, count a
failed peer call).

``GroupCore`` declares the state the parts read; ``Group.__init__`` sets it and nothing
rebinds it afterwards.  What changes inside it is guarded where it lives: the write fence
(``_fence``) by the event loop's one thread; the cache and the host-wide flight by the
arena's shard locks and flight slots (a ``LocalCache`` by the event loop's thread); the
counters are this process's own stat row.  Each part names its own state in its docstring.
"""

from __future__ import annotations

from ..cache import Cache, HostFlight
from ..compression import pack, unpack
from ..compression.base import Codec
from ..doorkeeper import Doorkeeper
from ..errors import LockTimeoutError, PeerError, PeerUnavailableError
from ..limits import check_group_name, hot_group_name
from ..stats import StatsSink
from geecache.cluster.peers import PeerPicker
from .fence import WriteFence

#: Hot copies (values another host owns) live at most this long, so a lost
#: invalidation is healed by time (groupcache keeps them until evicted).
DEFAULT_HOT_TTL = 60.0
#: The hot region's share of a group's budget (groupcache: 1/8).
HOT_FRACTION = 8
#: How long a miss waits for another process's load before loading itself.
DEFAULT_FLIGHT_WAIT = 10.0
#: A peer's value is kept as a hot copy from the key's second fetch in the doorkeeper's window
#: (``geecache.doorkeeper``): a key read once here costs no arena write.
DEFAULT_HOT_AFTER = 2


def declare_partitions(cache: Cache, name: str, max_bytes: int, policy: str = "lru",
                       hot_share: float = 1 / HOT_FRACTION) -> None:
    """Declare group *name*'s partition and its hot partition in *cache* (idempotent).

    ``Group`` does it in each worker; the supervisor does it once before
    forking, so a budget the arena cannot hold is a config error there.
    """
    check_group_name(name)
    cache.configure_group(name, max_bytes, policy)
    cache.configure_group(hot_group_name(name), max(int(max_bytes * hot_share), 1), "lru")


class GroupCore:
    """The state and helpers every part of a ``Group`` uses (set by ``Group.__init__``)."""

    #: The group's name (its owned partition's name in the cache).
    name: str
    #: The source of truth: a ``Storage`` or a loader (``geecache.storage``).
    source: object
    max_bytes: int
    #: The hot copies' budget, as ``declare_partitions`` carves it.
    hot_bytes: int
    policy: str
    ttl: float
    codec: Codec
    item_limit: int
    #: Who owns a key (``NoPeers`` for a host alone).
    peers: PeerPicker
    load_timeout: float
    #: The group's counters (the arena's stat row for this process).
    stats: StatsSink
    #: True when values are kept compressed (a codec, and a cache whose entries carry its id).
    packs: bool
    _cache: Cache
    _flight: HostFlight
    #: Loads in flight here and the writes seen meanwhile (the event loop's thread guards it).
    _fence: WriteFence
    #: The hot partition's name (``hot:<name>``) and its entries' lifetime.
    _hot: str
    _hot_ttl: float
    #: Which fetched keys have earned a hot copy (``hot_after``: from which fetch; 1: every one).
    _doorkeeper: Doorkeeper
    _flight_wait: float

    @property
    def readonly(self) -> bool:
        """True when the source cannot be written (a loader function)."""
        # The source is the user's object (a Storage or a loader): only a loader says it is read-only.
        return bool(getattr(self.source, "readonly", False))


    def value_of(self, entry) -> bytes:
        """The value of a cache entry (bytes, codec id, ...): decompressed, bounded by the item limit."""
        return entry[0] if not entry[1] else unpack(entry[1], entry[0], self.item_limit)


    def _partition(self, key: str) -> tuple[str, float]:
        """Where a value loaded or written here is kept, and for how long.

        The group's own partition only for keys this host owns: the owner's
        writes invalidate every member, but a copy of a key someone else owns
        (a fallback load while the owner was down, a peer request while rings
        disagree) goes to the hot partition, whose short TTL bounds staleness.
        """
        if self.peers.pick(key) is None:
            return self.name, self.ttl
        return self._hot, self._hot_ttl


    def _store(self, partition: str, key: str, value: bytes, ttl: float, codec: int | None = None) -> None:
        # Over the item limit: the source's value is served, just never cached.
        if len(value) <= self.item_limit:
            try:
                self._cache_set(partition, key, value, ttl, codec)
            except LockTimeoutError:
                # A stalled process holds the shard: answer with the value, keep nothing.
                self.stats.add("lock_timeouts")


    def _cache_set(self, partition: str, key: str, value: bytes, ttl: float, codec: int | None = None) -> None:
        """``Cache.set``, which replaces (or, not storing, drops) the old copy; LockTimeoutError
        when a stalled process holds the shard."""
        if self.packs:  # compressed once, here, when it pays; a peer's bytes as received
            if codec is None:
                codec, value = pack(value, self.codec)
            self._cache.set(partition, key, value, ttl, codec=codec)
        else:
            self._cache.set(partition, key, value, ttl)


    def _peer_failed(self, exc: PeerError) -> None:
        """Count a failed (or skipped) peer call."""
        if isinstance(exc, PeerUnavailableError):
            self.stats.add("peer_skipped")  # its breaker is open: no call, no timeout
            return
        self.stats.add("peer_errors")
        if exc.tripped:
            self.stats.add("peer_trips")
