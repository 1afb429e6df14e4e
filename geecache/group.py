"""Group: groupcache's named namespace over one source.

``get`` checks this host's cache, then asks the ring who owns the key: the
owner's copy comes over the peer protocol (kept as a bounded "hot" copy
here), a key this host owns is loaded from the source once per host (an
in-process single flight in front of the arena's host-wide one) and cached.
``set``/``delete`` go to the owner, which writes through to the source first:
the source is the truth and the cache may lose anything at any time.

Every write carries a version, this process's HLC timestamp (``geecache.hlc``)
taken when the write is originated, and the source refuses a version not
above the key's stored one (``geecache.storage.base``).  A write forwarded to
the owner also carries a deadline: the owner never applies it after that,
because by then the originator has given up and written it itself.  So an
owner that was paused (SIGSTOP, swap, a long SQLite lock wait) while its
writes were done elsewhere cannot undo them when it resumes (invariant 7).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from . import hlc
from .backoff import wait_while
from .cache import Cache, HostFlight, LocalCache, NoHostFlight
from .compression import get_codec, pack, unpack
from .defaults import DEFAULT_LOAD_TIMEOUT
from .doorkeeper import Doorkeeper
from geecache.observability.latency import SOURCE_LOADS
from .errors import (
    CodecError,
    GeeCacheError,
    LoadError,
    LockTimeoutError,
    LoadTimeoutError,
    NotFoundError,
    PeerError,
    PeerUnavailableError,
    ReadOnlySourceError,
    VersionAheadError,
    public_reason,
)
from .limits import (
    DEFAULT_ITEM_LIMIT, check_group_name, check_key, check_ttl, check_value, hot_group_name,
)
from geecache.cluster.peers import PEER_WRITE_BATCH, NoPeers, PeerPicker
from .singleflight import Group as SingleFlight
from .storage.base import WriteOp, WriteResult, batch_writer, row_reader, write_queue

log = logging.getLogger("geecache.group")

#: Hot copies (values another host owns) live at most this long, so a lost
#: invalidation is healed by time (groupcache keeps them until evicted).
DEFAULT_HOT_TTL = 60.0
#: The hot region's share of a group's budget (groupcache: 1/8).
HOT_FRACTION = 8
#: A peer's value is kept as a hot copy from the key's second fetch in the doorkeeper's window
#: (``geecache.doorkeeper``): a key read once here costs no arena write.
DEFAULT_HOT_AFTER = 2
#: How long a miss waits for another process's load before loading itself.
DEFAULT_FLIGHT_WAIT = 10.0
#: How many times a write the source refused as older than its stored version
#: is re-stamped above that version and tried again (see ``_route_write``).
WRITE_ATTEMPTS = 3


def declare_partitions(cache: Cache, name: str, max_bytes: int, policy: str = "lru",
                       hot_share: float = 1 / HOT_FRACTION) -> None:
    """Declare group *name*'s partition and its hot partition in *cache* (idempotent).

    ``Group`` does it in each worker; the supervisor does it once before
    forking, so a budget the arena cannot hold is a config error there.
    """
    check_group_name(name)
    cache.configure_group(name, max_bytes, policy)
    cache.configure_group(hot_group_name(name), max(int(max_bytes * hot_share), 1), "lru")


class Group:
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
        self._fence = _WriteFence()
        self._hot = hot_group_name(name)
        self._hot_ttl = float(min(hot_ttl, ttl) if ttl else hot_ttl)
        # Which fetched keys have earned a hot copy (*hot_after*: from which fetch; 1: every one).
        self._doorkeeper = Doorkeeper(hot_after)
        self._flight_wait = flight_wait
        self.load_timeout = float(load_timeout)
        declare_partitions(self._cache, self.name, self.max_bytes, policy, hot_share)
        self.stats = self._cache.stats_sink(self.name)
        attach = getattr(source, "attach_stats", None)
        if attach is not None:  # a source that commits counts its commits in the group's row
            attach(self.stats)
        # Values kept compressed: only in a cache whose entries carry a codec id.  Whether
        # this group packs decides only how new values are stored; reads decode every
        # entry by its own codec id, since the entries cached before a codec change (a
        # SIGHUP, a warm restart) keep the codec they were stored with.
        self.packs = bool(self.codec.id and getattr(self._cache, "keeps_codec", False))

    @property
    def readonly(self) -> bool:
        """True when the source cannot be written (a loader function)."""
        return bool(getattr(self.source, "readonly", False))

    # -- reads -----------------------------------------------------------------

    def get_cached(self, key: str) -> bytes | None:
        """The value when this host has it cached (owned or hot), else None.

        The synchronous hot path: the HTTP handler tries it before ``get``.
        Counts the get and the hit only on a hit, so a miss followed by
        ``get`` is counted once.
        """
        # get_entry, not get: an entry stored under any codec (this group's, or the one it
        # had before a change) is decoded by its own id.  A raw entry costs one test.
        entry = self._cache.get_entry(self.name, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("local_hits")
            return entry[0] if not entry[1] else self.value_of(entry)
        entry = self._cache.get_entry(self._hot, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("hot_hits")
            return entry[0] if not entry[1] else self.value_of(entry)
        return None

    def get_packed(self, key: str) -> tuple[bytes, int, float] | None:
        """(stored bytes, codec id, expire_at) when cached here (owned or hot), else None.

        ``get_cached`` without the decompress: the data plane passes a gzip or
        zstd entry to a client that accepts it.  Counts as ``get_cached`` does.
        """
        entry = self._cache.get_entry(self.name, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("local_hits")
            return entry
        entry = self._cache.get_entry(self._hot, key)
        if entry is not None:
            self.stats.add("gets")
            self.stats.add("hot_hits")
        return entry

    def value_of(self, entry) -> bytes:
        """The value of a cache entry (bytes, codec id, ...): decompressed, bounded by the item limit."""
        return entry[0] if not entry[1] else unpack(entry[1], entry[0], self.item_limit)

    async def get(self, key: str) -> bytes:
        """The value of *key*: cache, else owner peer, else source (once per host)."""
        check_key(key)
        cached = self.get_cached(key)
        if cached is not None:
            return cached
        return await self._miss(key)

    async def load(self, key: str) -> bytes:
        """The miss path of ``get``, for a caller whose ``get_cached`` just missed."""
        check_key(key)
        return await self._miss(key)

    async def _miss(self, key: str) -> bytes:
        started = self.load_started(key)
        if started is not None:
            # Shielded: a caller that stops waiting does not cancel the others' load.
            return await asyncio.shield(started)
        self.stats.add("gets")
        value, shared = await self._calls.do_ex(key, lambda: self._load(key))
        if shared:
            self.stats.add("loads_deduped")
        return value

    def load_started(self, key: str) -> asyncio.Future | None:
        """The miss path of ``get`` without a task, where it needs none: a Future of *key*'s value.

        For a caller whose ``get_cached`` just missed (the data plane).  When
        a load of *key* runs already it is joined; when another host owns
        *key* the value is asked of it by callbacks (``_fetch_soon``).  None
        when this host would load it: then ``load``, which counts it.
        Counted as ``load`` counts (``gets``, and ``loads_deduped`` for a join).
        """
        call = self._calls.current(key)
        if call is None:
            check_key(key)
            peer = self.peers.pick(key)
            if peer is None or not hasattr(peer, "fetch_packed_soon"):
                return None
            self.stats.add("gets")
            call = self._calls.claim(key)
            self._fetch_soon(peer, key, call)
            return call
        self.stats.add("gets")
        self.stats.add("loads_deduped")
        return call

    def _fetch_soon(self, peer, key: str, future: asyncio.Future) -> None:
        """Ask *key*'s owner *peer* for it and settle the claimed *future*; keep the hot copy.

        ``_load``'s remote half, by callbacks: a peer down or a bad answer
        loads here instead (invariant 4), in a task; that slow path is the only one.
        """

        def fetched(answer) -> None:
            if future.done():  # cancelled (a worker's shutdown past its grace), or settled by a bug
                self._calls.release(key, future)
                return
            try:
                if type(answer) is tuple:
                    payload, codec, expire_at = answer
                    value = unpack(codec, payload, self.item_limit) if codec else payload
                    self._kept_hot(key, value, payload, codec, expire_at)
                    self._calls.release(key, future)
                    future.set_result(value)
                    return
                if isinstance(answer, NotFoundError):
                    self._calls.release(key, future)
                    future.set_exception(answer)
                    future.exception()  # retrieved: every waiter may have gone, and that is no error
                    return
                if not isinstance(answer, PeerError):
                    raise answer
                log.debug("group %s: %r from its owner %r failed (%s); loading locally", self.name, key, peer,
                          answer)
                self._peer_failed(answer)  # invariant 4: a peer down is a slow path
            except CodecError as exc:
                self._peer_failed(PeerError(f"peer {peer!r}: bad response: {exc}"))
            except BaseException as exc:  # a bug: the joiners must not wait forever
                self._calls.release(key, future)
                future.set_exception(exc)
                future.exception()
                return
            fallback = asyncio.ensure_future(self._load_local(key, self._hot, self._hot_ttl))
            self._fallbacks.add(fallback)
            fallback.add_done_callback(lambda task: self._fell_back(key, future, task))

        peer.fetch_packed_soon(self.name, key, fetched)

    def _fell_back(self, key: str, future: asyncio.Future, task: asyncio.Task) -> None:
        """The local load after a failed peer fetch ended: settle the claimed *future* with it."""
        self._fallbacks.discard(task)
        self._calls.release(key, future)
        if future.done():  # cancelled meanwhile: nobody to tell
            if not task.cancelled():
                task.exception()  # retrieved: that is no error
            return
        if task.cancelled():
            future.cancel()
        elif task.exception() is not None:
            future.set_exception(task.exception())
            future.exception()
        else:
            future.set_result(task.result()[0])  # (value, expire_at)

    def _kept_hot(self, key: str, value: bytes, payload: bytes, codec: int | None, expire_at: float) -> None:
        """Count a peer hit and keep its value as a hot copy, never past the owner's entry,
        once the doorkeeper admits it (the key's ``hot_after``-th fetch lately).

        A group that packs keeps the bytes as they came (*payload* under
        *codec*; None: only the value came, packed here); another keeps the value.
        """
        self.stats.add("peer_hits")
        if not self._doorkeeper.admits(key):
            return  # fetched once lately: not hot yet (geecache.doorkeeper)
        ttl = self._hot_ttl
        if expire_at:  # a hot copy must not outlive the owner's entry
            ttl = min(ttl, expire_at - time.time())
        if ttl > 0:
            if self.packs and codec is not None:
                self._store(self._hot, key, payload, ttl, codec)
            else:
                self._store(self._hot, key, value, ttl)

    async def get_local(self, key: str) -> tuple[bytes, float]:
        """(value, expire_at or 0) for a peer: served from this host, never forwarded.

        A request from a peer must not hop again, so hosts whose rings briefly
        disagree cannot loop (mailgun/groupcache#72).
        """
        hit = self.get_local_cached(key)
        return hit if hit is not None else await self.load_local(key)

    def get_local_cached(self, key: str) -> tuple[bytes, float] | None:
        """The synchronous half of ``get_local``: (value, expire_at or 0) when cached here, else None.

        Counts the peer request; after a None, ``load_local`` is the rest.  The
        data plane answers a peer's hit from it without starting a task.
        """
        entry = self.get_local_packed(key)
        return None if entry is None else (self.value_of(entry), entry[2])

    def get_local_packed(self, key: str) -> tuple[bytes, int, float] | None:
        """``get_local_cached`` as stored: (bytes, codec id, expire_at), for a peer's GET.

        The owner sends what it keeps, so it never compresses on a peer GET.
        """
        check_key(key)
        self.stats.add("peer_requests")
        return self._cache.get_entry(self._partition(key)[0], key)

    def stored_entry(self, key: str) -> tuple[bytes, int, float] | None:
        """The entry a load just stored for a peer's *key* (uncounted), else None."""
        return self._cache.get_entry(self._partition(key)[0], key)

    async def load_local(self, key: str) -> tuple[bytes, float]:
        """The miss path of ``get_local``, for a caller whose ``get_local_cached`` just missed."""
        partition, ttl = self._partition(key)
        return await self._local_calls.do(key, lambda: self._load_local(key, partition, ttl))

    async def get_many(self, keys: list[str]) -> tuple[dict[str, bytes], dict[str, GeeCacheError]]:
        """(values found, errors) of *keys*; a key the source has not is in neither.

        What this host has cached is served at once; the rest is grouped by
        owner: one peer batch request per owner (``peer.fetch_many``), loads
        here for the keys this host owns.  Every key still goes through the
        per-key single flight, so a batch and a single get of one key load it
        once.  A peer down (or one failing key of its answer) is loaded here,
        as a single get falls back (invariant 4).
        """
        found: dict[str, bytes] = {}
        misses: list[str] = []
        for key in keys:
            check_key(key)
            value = self.get_cached(key)
            if value is None:
                misses.append(key)
            else:
                found[key] = value
        if not misses:
            return found, {}
        calls, remote = [], {}
        for key in dict.fromkeys(misses):  # a key asked twice is loaded once
            peer = self.peers.pick(key)
            claimed = None if peer is None else self._calls.claim(key)
            if claimed is None:  # ours to load, or a get of the key already runs: join it
                calls.append((key, self._miss(key)))
            else:
                remote.setdefault(peer, []).append((key, claimed))
        # One task per owner, not one per key: the keys' Futures are settled by it.
        batches = [self._fetch_batch(peer, claimed) for peer, claimed in remote.items()]
        results = await asyncio.gather(*(call for _, call in calls), *batches, return_exceptions=True)
        errors: dict[str, GeeCacheError] = {}
        settled = [(key, r) for (key, _), r in zip(calls, results)]
        for claimed in remote.values():
            settled.extend((key, future.exception() or future.result()) for key, future in claimed)
        for key, result in settled:
            if isinstance(result, bytes):
                found[key] = result
            elif isinstance(result, NotFoundError):
                pass
            elif isinstance(result, GeeCacheError):
                errors[key] = result
            else:
                raise result  # a bug or a cancellation: not an answer about this key
        return found, errors

    async def _fetch_batch(self, peer, claimed: list[tuple[str, asyncio.Future]]) -> None:
        """Ask *peer* for the *claimed* keys at once and settle each key's Future.

        The owner's value becomes a hot copy, as a single get's does; a key
        the owner could not serve, or every key when it is unreachable, is
        loaded here (invariant 4).
        """
        keys = [key for key, _ in claimed]
        self.stats.add("gets", len(keys))
        try:
            try:
                answers = await peer.fetch_many(self.name, keys, self.item_limit)
            except PeerError:
                self.stats.add("peer_errors")  # once per failed batch; its keys load here
                answers = {}
            fallback = []
            now = time.time()
            for key, future in claimed:
                status, value, expire_at = answers.get(key, (0, b"", 0.0))
                if status == 200:
                    self.stats.add("peer_hits")
                    ttl = self._hot_ttl
                    if expire_at:  # a hot copy must not outlive the owner's entry
                        ttl = min(ttl, expire_at - now)
                    if ttl > 0 and self._doorkeeper.admits(key):
                        self._store(self._hot, key, value, ttl)
                    future.set_result(value)
                elif status == 404:
                    future.set_exception(NotFoundError(f"group {self.name!r} has no key {key!r}"))
                else:
                    fallback.append((key, future))
            if fallback:
                loaded = await asyncio.gather(*(self._load_local(key, self._hot, self._hot_ttl)
                                                for key, _ in fallback), return_exceptions=True)
                for (key, future), result in zip(fallback, loaded):
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result[0])  # (value, expire_at)
        finally:
            for key, future in claimed:
                if not future.done():  # cancelled or a bug: joiners must not wait forever
                    future.set_exception(LoadError(f"group {self.name!r}: the batch for {key!r} ended"))
                    future.exception()  # retrieved: nobody may be waiting, and that is no error
                self._calls.release(key, future)

    async def get_local_many(self, keys: list[str]) -> list[tuple[int, bytes, float, str]]:
        """A peer's batch: ``(status, value, expire_at, error)`` per key, in order; never forwarded.

        Counted as one peer request.  Hits come from this host's cache, the
        rest is loaded here (``load_local``: single flight per key, never a
        peer: invariant 3); 404 for a key the source has not, else the
        error's HTTP status and text.
        """
        for key in keys:
            check_key(key)
        self.stats.add("peer_requests")
        out: list = [None] * len(keys)
        misses = []
        for i, key in enumerate(keys):
            entry = self._cache.get_entry(self._partition(key)[0], key)
            if entry is None:
                misses.append(i)
            else:
                out[i] = (200, self.value_of(entry), entry[2], "")
        results = await asyncio.gather(*(self.load_local(keys[i]) for i in misses), return_exceptions=True)
        for i, result in zip(misses, results):
            if isinstance(result, tuple):
                out[i] = (200, result[0], result[1], "")
            elif isinstance(result, NotFoundError):
                out[i] = (404, b"", 0.0, "")
            elif isinstance(result, GeeCacheError):
                out[i] = (result.http_status, b"", 0.0, public_reason(result))
            else:
                raise result
        return out

    def cached_for_peer(self, keys: list[str]) -> list[tuple[bytes, int, float]] | None:
        """The entries (as stored) of a peer's batch of checked *keys* when every one is cached
        here, counted as one peer request (as ``get_local_many``); None, uncounted, when one is not."""
        get_entry = self._cache.get_entry
        out = []
        for key in keys:
            entry = get_entry(self._partition(key)[0], key)
            if entry is None:
                return None
            out.append(entry)
        self.stats.add("peer_requests")
        return out

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

    async def _load(self, key: str) -> bytes:
        peer = self.peers.pick(key)
        if peer is None:
            return (await self._load_local(key, self.name, self.ttl))[0]
        codec = None
        try:
            if self.packs and hasattr(peer, "fetch_packed"):  # the hot copy kept as received
                payload, codec, expire_at = await peer.fetch_packed(self.name, key, self.item_limit)
                value = unpack(codec, payload, self.item_limit) if codec else payload
            else:
                value, expire_at = await peer.fetch(self.name, key, self.item_limit)
        except PeerError as exc:
            log.debug("group %s: %r from its owner %r failed (%s); loading locally", self.name, key, peer, exc)
            self._peer_failed(exc)  # invariant 4: a peer down is a slow path
            return (await self._load_local(key, self._hot, self._hot_ttl))[0]
        except CodecError as exc:
            self._peer_failed(PeerError(f"peer {peer!r}: bad response: {exc}"))
            return (await self._load_local(key, self._hot, self._hot_ttl))[0]
        self._kept_hot(key, value, value if codec is None else payload, codec, expire_at)
        return value

    async def _load_local(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        """Load through the host-wide flight: one process per host runs the source.

        (value, expire_at or 0): when the value is gone, the sooner of the
        cache entry's TTL and the source row's own expiry (a per-item TTL).
        """
        deadline = time.monotonic() + self._flight_wait
        while True:
            if self._flight.try_begin(self.name, key):
                try:
                    # Another process may have finished loading between our miss and now.
                    entry = self._cache.get_entry(partition, key)
                    if entry is not None:
                        self.stats.add("loads_deduped")
                        return self.value_of(entry), entry[2]
                    return await self._handoff_or_load(key, partition, ttl)
                finally:
                    self._flight.end(self.name, key)
            log.debug("group %s: %r is being loaded by another process of this host; waiting", self.name, key)
            entry = await self._wait_for_other_loader(key, partition, deadline)
            if entry is not None:
                self.stats.add("loads_deduped")
                return self.value_of(entry), entry[2]
            if time.monotonic() >= deadline:
                # The other loader is stuck: serving beats waiting forever.
                log.debug("group %s: the other load of %r outlasted flight_wait; loading it too", self.name, key)
                return await self._load_source(key, partition, ttl)
            # The loader ended without a value (not found, failed) or died: try to take over.

    async def _handoff_or_load(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        # A key that moved here in a ring change is likely in its previous owner's
        # cache: ask that cache (never its source) before loading, so a host joining
        # is not a load storm.  Any failure or miss falls back to the source.
        handoff = getattr(self.peers, "handoff_peer", None)
        peer = handoff(key) if handoff is not None and partition == self.name else None
        if peer is None:
            return await self._load_source(key, partition, ttl)
        is_cold = getattr(self.peers, "is_cold", None)
        if is_cold is not None and is_cold(peer.address, self.name):
            # It said lately that it holds nothing of this group (a cluster starting cold):
            # asking costs a peer hop per miss for nothing.
            self.stats.add("handoff_cold")
            return await self._load_source(key, partition, ttl)
        writes = self._fence.enter(key)
        try:
            value, expire_at = await peer.fetch(self.name, key, self.item_limit, handoff=True)
        except (PeerError, NotFoundError) as exc:  # NotFoundError: not cached there
            self.stats.add("handoff_misses")
            if not isinstance(exc, NotFoundError):
                self._peer_failed(exc)
            elif getattr(exc, "cold", False) and hasattr(self.peers, "note_cold"):
                self.peers.note_cold(peer.address, self.name)
            return await self._load_source(key, partition, ttl)
        finally:
            raced = self._fence.leave(key, writes)
        now = time.time()
        if expire_at and expire_at <= now:  # dead by this host's clock: never served, never kept
            self.stats.add("handoff_misses")
            return await self._load_source(key, partition, ttl)
        self.stats.add("handoff_hits")
        if not expire_at and ttl:
            expire_at = now + ttl
        if not raced and (not expire_at or expire_at > now):  # (a write meanwhile: serve, don't keep)
            self._store(partition, key, value, expire_at - now if expire_at else 0)
        return value, expire_at

    def get_handoff_cached(self, key: str) -> tuple[bytes, float] | None:
        """(value, expire_at or 0) for a new owner's handoff ask: this host's cached
        copy, owned or hot, whoever owns the key now; None when not cached (never loads).

        Not counted in ``peer_requests``: the asker counts the ask (``handoff_hits``/``_misses``)."""
        check_key(key)
        for partition in (self.name, self._hot):
            entry = self._cache.get_entry(partition, key)
            if entry is not None:
                return self.value_of(entry), entry[2]
        return None

    def holds_nothing(self) -> bool:
        """True when this host caches no entry of the group, owned or hot (it is cold)."""
        usage = getattr(self._cache, "usage", None)
        return usage is not None and not usage(self.name)[1] and not usage(self._hot)[1]

    def hottest(self, want, max_bytes: int, deadline: float):
        """(entries, truncated) of the owned partition, hottest first (``Arena.hottest``): a warm-up's answer."""
        return self._cache.hottest(self.name, want, max_bytes, deadline)

    def claim_flight(self, key: str, partition: str | None = None) -> bool:
        """Become the host-wide loader of *key* (of *partition*'s flight, default the group's):
        True when the caller holds it now and must ``release_flight``.  A write applied here
        meanwhile waits for it and stores its value again (``apply_writes``)."""
        return self._flight.try_begin(partition or self.name, key)

    def release_flight(self, key: str, partition: str | None = None) -> None:
        """Give up what ``claim_flight`` took."""
        self._flight.end(partition or self.name, key)

    def keep_warmed(self, key: str, payload: bytes, codec: int, expire_at: float) -> bool:
        """Store a previous owner's entry of *key* as owned (its bytes as sent, its expiry, by this
        host's clock), unless this host has one already (loaded or written here: as new or newer)
        or it is dead; True when stored.  The caller holds the key's flight (``claim_flight``)."""
        if self._cache.get_entry(self.name, key) is not None:
            return False
        now = time.time()
        if expire_at and expire_at <= now:
            return False
        if not self.packs and codec:
            payload, codec = unpack(codec, payload, self.item_limit), None
        self._store(self.name, key, payload, expire_at - now if expire_at else self.ttl,
                    codec if self.packs else None)
        return True

    async def _wait_for_other_loader(self, key: str, partition: str, deadline: float):
        def waiting() -> bool:  # the other process still loads and has stored nothing yet
            return self._flight.loading(self.name, key) and self._cache.get(partition, key) is None

        await wait_while(waiting, deadline)
        return self._cache.get_entry(partition, key)

    async def _load_source(self, key: str, partition: str, ttl: float) -> tuple[bytes, float]:
        self.stats.add("loads")
        writes = self._fence.enter(key)
        started = time.perf_counter()
        try:
            # Bounded (invariant 8): on timeout the flights above are released, so a
            # later request loads again; a loader's thread runs on in its own pool.
            row = await asyncio.wait_for(row_reader(self.source)(key), self.load_timeout)
        except asyncio.TimeoutError:
            self.stats.add("load_errors")
            raise LoadTimeoutError(f"group {self.name!r}: loading {key!r} took longer than "
                                   f"load_timeout ({self.load_timeout:g}s)") from None
        except GeeCacheError:
            self.stats.add("load_errors")
            raise
        except Exception as exc:
            self.stats.add("load_errors")
            raise LoadError(f"group {self.name!r}: loading {key!r} failed: {exc!r}") from exc
        finally:
            raced = self._fence.leave(key, writes)
            SOURCE_LOADS.observe(self.name, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("group %s: loaded %r from the source in %.1fms: %s", self.name, key,
                      (time.perf_counter() - started) * 1000,
                      "not found" if row is None else f"{len(row.value)} bytes")
        if row is None:
            raise NotFoundError(f"group {self.name!r} has no key {key!r}")
        value = check_value(row.value, sys.maxsize)
        now = time.time()
        expire_at = now + ttl if ttl else 0.0
        if row.expire_at and (not expire_at or row.expire_at < expire_at):
            expire_at = row.expire_at  # a per-item TTL: the copy must not outlive the row
        if not raced and (not expire_at or expire_at > now):
            # (A write during the load made this value stale: serve it, don't keep it.)
            self._store(partition, key, value, expire_at - now if expire_at else 0)
        return value, expire_at

    def _store(self, partition: str, key: str, value: bytes, ttl: float, codec: int | None = None) -> None:
        # Over the item limit: the source's value is served, just never cached.
        if len(value) <= self.item_limit:
            try:
                if self.packs:  # compressed once, here, when it pays; a peer's bytes as received
                    if codec is None:
                        codec, value = pack(value, self.codec)
                    self._cache.set(partition, key, value, ttl, codec=codec)
                else:
                    self._cache.set(partition, key, value, ttl)
            except LockTimeoutError:
                # A stalled process holds the shard: answer with the value, keep nothing.
                self.stats.add("lock_timeouts")

    # -- writes ----------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlySourceError(f"group {self.name!r} has a read-only source")

    async def set(self, key: str, value: bytes, ttl: float = 0) -> None:
        """Write *value* through to the owner's source, then cache it there.

        *ttl* (seconds) is this value's lifetime, as memcached's exptime and
        Redis's ``SET EX``: the source row expires then, and a get after it
        is a NotFoundError on every host.  0 keeps the value until it is
        overwritten (the group's ``ttl`` still bounds how long a cached copy
        is served before it is loaded again).
        """
        check_key(key)
        value = check_value(value, self.item_limit)
        ttl = check_ttl(ttl)
        await self._route_write(key, value, ttl, "sets")

    async def delete(self, key: str) -> bool:
        """Delete *key* from the owner's source and cache; True when the source had it."""
        check_key(key)
        return (await self._route_write(key, None, 0, "deletes")).existed

    async def _route_write(self, key: str, value: bytes | None, ttl: float, stat: str) -> WriteResult:
        """Run a write of *key* (*value* None: a delete) on its owner, else here.

        Also here when the owner is down or answers too late: the source is
        the truth, so writing through it from any host is correct (invariant
        4), and the write's version keeps the owner from applying it again
        later.  If the source holds a newer version (another write, or a
        clock behind another host's), the write is re-stamped above it and
        tried again: its client has not been answered, so ordering it after
        that one is allowed.  After WRITE_ATTEMPTS refusals in a row (writes
        keep landing concurrently) it is ordered before them and answered.
        """
        self._check_writable()
        self.stats.add(stat)
        return await self._settle_write(key, value, ttl, hlc.clock.now())

    async def _settle_write(self, key: str, value: bytes | None, ttl: float, version: int,
                            result: WriteResult | None = None) -> WriteResult:
        """``_route_write``'s attempts from *version* on; *result* is a first attempt's answer, if made."""
        for _ in range(WRITE_ATTEMPTS):
            if result is None:
                result = await self._write_once(key, value, ttl, version)
            if result.applied or result.version == version:  # ours landed (maybe on an earlier try)
                return result
            if not _observe(result.version):
                return result  # refused by a version from too far ahead: it cannot be ordered after it
            version = hlc.clock.now()
            refused, result = result, None
        return refused

    async def set_many(self, items: dict[str, tuple[bytes, float]]) -> list[WriteResult | GeeCacheError]:
        """``set`` of every ``key -> (value, ttl)`` of *items*; one answer per key, in order.

        The keys are grouped by owner: one peer request per owner
        (``peer.write_many``), and this host's own keys in one call of its
        source's ``write_many`` (one transaction for SQLite).  A key whose
        first try did not settle it (owner down or late, a newer version
        stored) goes on as a single ``set`` would.  A key that fails answers
        its error; the others are still written.
        """
        writes: list[tuple[str, bytes | None, float] | GeeCacheError] = []
        for key, (value, ttl) in items.items():
            try:
                check_key(key)
                writes.append((key, check_value(value, self.item_limit), check_ttl(ttl)))
            except GeeCacheError as exc:
                writes.append(exc)
        return await self._route_writes(writes, "sets")

    async def delete_many(self, keys: list[str]) -> list[WriteResult | GeeCacheError]:
        """``delete`` of every key of *keys*, batched as ``set_many``; one answer per key, in order.

        A key's ``existed`` says whether the source had it."""
        writes: list[tuple[str, bytes | None, float] | GeeCacheError] = []
        for key in keys:
            try:
                check_key(key)
                writes.append((key, None, 0.0))
            except GeeCacheError as exc:
                writes.append(exc)
        return await self._route_writes(writes, "deletes")

    async def _route_writes(self, writes: list, stat: str) -> list[WriteResult | GeeCacheError]:
        self._check_writable()
        answers: list = [w if isinstance(w, GeeCacheError) else None for w in writes]
        todo = [i for i, w in enumerate(writes) if not isinstance(w, GeeCacheError)]
        self.stats.add(stat, len(todo))
        versions = {i: hlc.clock.now() for i in todo}
        local: list[int] = []
        remote: dict = {}
        for i in todo:
            peer = self.peers.pick(writes[i][0])
            if peer is None:
                local.append(i)
            else:
                remote.setdefault(peer, []).append(i)
        firsts: dict[int, WriteResult | Exception | None] = {}

        async def here(idx: list[int]) -> None:
            got = await self.apply_writes([(*writes[i], versions[i], 0.0) for i in idx])
            firsts.update(zip(idx, got))

        async def there(peer, idx: list[int]) -> None:
            for i in idx:
                try:
                    self.invalidate([writes[i][0]])  # our copy is stale whatever the owner answers
                except LockTimeoutError as exc:
                    answers[i] = exc
            idx = [i for i in idx if answers[i] is None]
            for at in range(0, len(idx), PEER_WRITE_BATCH):
                chunk = idx[at:at + PEER_WRITE_BATCH]
                write_many = getattr(peer, "write_many", None)
                if write_many is None:  # a peer of the older interface: one write at a time
                    firsts.update(dict.fromkeys(chunk))
                    continue
                try:
                    got = await write_many(self.name, [(*writes[i], versions[i]) for i in chunk])
                except PeerError as exc:
                    self._peer_failed(exc)
                    got = [None] * len(chunk)  # each goes the single write's way
                for i, result in zip(chunk, got):
                    if result is not None and result.late:
                        # The owner got it after the deadline: written here, as a single write is.
                        result = await self._apply_or_error(writes[i], versions[i])
                    firsts[i] = result

        await asyncio.gather(*([here(local)] if local else []), *(there(p, idx) for p, idx in remote.items()))
        unsettled = []
        for i in todo:
            if answers[i] is not None:
                continue
            first = firsts.get(i)
            if isinstance(first, GeeCacheError):
                answers[i] = first
            elif isinstance(first, Exception):
                raise first  # a bug, not an answer about this key
            elif first is not None and (first.applied or first.version == versions[i]):
                answers[i] = first
            else:
                unsettled.append((i, first))
        # Concurrently, so that those written here (an owner down) still share commits.
        settled = await asyncio.gather(*(self._settle_write(*writes[i], versions[i], first)
                                         for i, first in unsettled), return_exceptions=True)
        for (i, _), answer in zip(unsettled, settled):
            if isinstance(answer, BaseException) and not isinstance(answer, GeeCacheError):
                raise answer
            answers[i] = answer
        return answers

    async def _apply_or_error(self, write: tuple, version: int) -> WriteResult | GeeCacheError:
        try:
            return await self.apply_write(*write, version=version)
        except GeeCacheError as exc:
            return exc

    async def _write_once(self, key: str, value: bytes | None, ttl: float, version: int) -> WriteResult:
        peer = self.peers.pick(key)
        if peer is not None:
            self.invalidate([key])  # our copy is stale whatever the owner answers
            try:
                result = await peer.write(self.name, key, value, ttl, version=version)
            except PeerError as exc:
                self._peer_failed(exc)
            else:
                if not result.late:
                    return result
                # The owner got it after the deadline and did not apply it: write it here.
        return await self.apply_write(key, value, ttl, version=version)

    def _peer_failed(self, exc: PeerError) -> None:
        """Count a failed (or skipped) peer call."""
        if isinstance(exc, PeerUnavailableError):
            self.stats.add("peer_skipped")  # its breaker is open: no call, no timeout
            return
        self.stats.add("peer_errors")
        if exc.tripped:
            self.stats.add("peer_trips")

    async def apply_write(self, key: str, value: bytes | None, ttl: float = 0, *, version: int = 0,
                          deadline: float = 0.0) -> WriteResult:
        """The owner's half of a write: source first, then cache, then drop copies elsewhere.

        *value* None is a delete.  *version* 0 is an unversioned write (an
        older peer's), which the source orders after every stored version.
        At or after *deadline* (Unix seconds, 0 = none) nothing is applied:
        the originator has given up on this call and written it itself.  A
        write the source refuses changes nothing but drops this host's copies
        of the key, so the next read loads the newer value.
        """
        (answer,) = await self.apply_writes([(key, value, ttl, version, deadline)])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def apply_writes(self, writes: list[tuple[str, bytes | None, float, int, float]]
                           ) -> list[WriteResult | Exception]:
        """``apply_write`` of each ``(key, value, ttl, version, deadline)``, the source's part in one
        ``write_many`` (one transaction for SQLite); one answer per write, in order.

        Each is judged alone: one refused (version, deadline) answers so, one
        that fails (a value over the item limit, a bad ttl, the source, a
        timed-out cache lock) answers its exception; the others apply.  The
        other members are told of the applied keys in one invalidation.
        """
        self._check_writable()
        answers: list = [None] * len(writes)
        ops: list[WriteOp] = []
        where: list[tuple[int, float]] = []  # (index in writes, the value's lifetime)
        now = time.time()
        for i, (key, value, ttl, version, deadline) in enumerate(writes):
            wanted = 0.0
            try:
                if value is not None:
                    value = check_value(value, self.item_limit)
                    wanted = check_ttl(ttl)
            except GeeCacheError as exc:
                answers[i] = exc
                continue
            if deadline and now >= deadline:
                self.stats.add("writes_refused")
                answers[i] = WriteResult(False, False, 0, late=True)
                continue
            if version:
                if version > hlc.clock.ceiling():
                    # Stored, it would refuse every later write of the key and drag this
                    # host's clock towards the end of its range (invariant 10).
                    self.stats.add("writes_refused")
                    ahead = hlc.to_unix(version) - time.time()
                    answers[i] = VersionAheadError(
                        f"the write's version is {ahead:.0f} s ahead of this host's clock, over "
                        f"max_clock_drift ({hlc.clock.max_drift:g} s); not stored")
                    continue
                hlc.clock.update(version)  # never issue a version below one this host has seen
            ops.append(WriteOp(key, value, version, now + wanted if wanted else 0.0, deadline))
            where.append((i, wanted))
        if not ops:
            return answers
        results = await batch_writer(self.source)(ops)
        stored: list[tuple[str, bytes | None, str, float]] = []
        for (i, wanted), op, result in zip(where, ops, results):
            if isinstance(result, BaseException):
                answers[i] = result
                continue
            try:
                entry = self._keep(op.key, op.value, wanted, result)
            except LockTimeoutError as exc:
                answers[i] = exc  # the old value may still be served: not acknowledged
                continue
            answers[i] = result
            if entry is not None:
                stored.append(entry)
        if stored:
            await self._publish(stored)
        return answers

    def _keep(self, key: str, value: bytes | None, wanted: float, result: WriteResult
              ) -> tuple[str, bytes | None, str | None, float | None] | None:
        """After the source answered *result* for a write: drop this host's copies, keep the new
        value.  None when the source refused it (a newer version, late), else the ``(key, value,
        partition, ttl)`` stored, for ``_publish``.  LockTimeoutError: a stalled process holds
        the shard, the old value may still be served (not to be acknowledged).
        """
        self.invalidate([key])
        if not result.applied:
            self.stats.add("writes_refused")
            _observe(result.version)
            return None
        partition = ttl = None
        if value is not None:
            partition, ttl = self._partition(key)
            if wanted:
                ttl = min(ttl, wanted) if partition == self._hot else wanted
            self._store(partition, key, value, ttl)
        return key, value, partition, ttl

    def _racing(self, stored: list) -> list:
        """Those of *stored* a load in another process of this host may have read before."""
        loading = self._flight.loading
        return [entry for entry in stored if loading(self.name, entry[0])]

    async def _publish(self, stored: list, racing: list | None = None) -> None:
        """The rest of applied writes: outlast the loads racing them, tell the other members."""
        # A load another process of this host runs may have read the source before these
        # writes: wait it out (bounded), then store (or drop) again.
        racing = self._racing(stored) if racing is None else racing
        if racing:
            await asyncio.gather(*(self._outlast_loads(key) for key, *_ in racing))
        for key, value, partition, ttl in racing:
            if value is not None:
                self._store(partition, key, value, ttl)
            else:
                self.invalidate([key])
        trips = await self.peers.invalidate(self.name, [key for key, *_ in stored])
        if trips:
            self.stats.add("peer_trips", trips)

    def start_set(self, key: str, value: bytes) -> tuple[asyncio.Future, int] | None:
        """``set(key, value)`` without a coroutine, when this host owns *key* and the source
        queues writes (``queue_write``): (the Future of its commit, the write's version), to
        hand to ``finish_set``.  None when the write must take ``set``'s path (another owner,
        another source); then nothing has been done.

        Measured: the coroutines of ``set`` and the Task that ran them cost more of a PUT's
        CPU than the commit; this is ``set``'s path for the common case, and ``finish_set``
        goes back to it for the rest (a refusal to re-stamp, a racing load, members to tell).
        """
        check_key(key)
        value = check_value(value, self.item_limit)
        self._check_writable()
        queue_write = write_queue(self.source)
        if queue_write is None or self.peers.pick(key) is not None:
            return None
        self.stats.add("sets")
        version = hlc.clock.now()
        return queue_write(key, value, version), version

    def finish_set(self, key: str, value: bytes, version: int, future: asyncio.Future):
        """The rest of ``start_set(key, value)`` once its commit's *future* is done: None when
        the write is acknowledged, else the coroutine that settles it (await it before
        acknowledging).  Raises the write's error."""
        if future.cancelled():
            raise LoadError(f"group {self.name!r}: the write of {key!r} was cancelled")
        error = future.exception()
        if error is not None:
            raise error
        result = future.result()
        entry = self._keep(key, value, 0.0, result)
        if entry is None:
            return self._settle_write(key, value, 0.0, version, result)
        racing = self._racing([entry])
        if racing or not self.peers.alone:
            return self._publish([entry], racing)
        return None

    async def _outlast_loads(self, key: str) -> bool:
        """Wait (bounded) for a load of *key* another process of this host is running.

        That load may have read the source before our write and would store
        the old value after we stored the new one; the caller re-applies its
        write once the load is over.  True when there was such a load.
        """
        if not self._flight.loading(self.name, key):
            return False
        await wait_while(lambda: self._flight.loading(self.name, key), time.monotonic() + self._flight_wait)
        return True

    def drop_copies(self) -> None:
        """Drop every copy of this group on the host, owned and hot (see ``geecache.cluster.pauseguard``).

        A load running now may have read the source before writes this host
        missed, so it serves its value but does not keep it.
        """
        self._fence.wrote_all()
        self._cache.clear(self.name)
        self._cache.clear(self._hot)

    def invalidate(self, keys: list[str]) -> None:
        """Drop this host's copies of *keys*, owned or hot (their owner changed them)."""
        for key in keys:
            self._fence.wrote(key)
            try:
                self._cache.delete(self.name, key)
                self._cache.delete(self._hot, key)
            except LockTimeoutError:
                # The old value may still be served: the write must not be acknowledged.
                self.stats.add("lock_timeouts")
                raise


def _observe(version: int) -> bool:
    """Feed a stored *version* to this process's clock; False when it is too far ahead to take.

    Such a version was stored by a clock (or a forger) past ``max_clock_drift``;
    the source lets the next write replace it (``HLC.ceiling``), so this clock
    need not, and must not, follow it.
    """
    if not version:
        return True
    if version > hlc.clock.ceiling():
        return False
    hlc.clock.update(version)
    return True


class _WriteFence:
    """Tells a load whether its key was written while it ran (its value is then stale).

    Only keys with a load in flight are tracked, so it stays as small as the
    number of concurrent loads; the event loop's single thread guards it.
    """

    def __init__(self) -> None:
        self._keys: dict[str, list[int]] = {}  # key -> [loads in flight, writes seen]

    def enter(self, key: str) -> int:
        """A load of *key* starts; returns the write count to hand back to ``leave``."""
        entry = self._keys.setdefault(key, [0, 0])
        entry[0] += 1
        return entry[1]

    def leave(self, key: str, writes: int) -> bool:
        """A load of *key* ended; True when *key* was written since ``enter``."""
        entry = self._keys[key]
        entry[0] -= 1
        if not entry[0]:
            del self._keys[key]
        return entry[1] != writes

    def wrote(self, key: str) -> None:
        """*key* was written or invalidated."""
        entry = self._keys.get(key)
        if entry is not None:
            entry[1] += 1

    def wrote_all(self) -> None:
        """Every key may have been written (the host missed invalidations)."""
        for entry in self._keys.values():
            entry[1] += 1
