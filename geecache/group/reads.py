"""Routed and batch reads: a client's get, through the owner.

A miss asks the ring who owns the key: another host's value comes over the peer
protocol (by callbacks where it can, one batch per owner for ``get_many``) and is
kept as a bounded hot copy; a key this host owns is loaded once per host
(``HostLoads``); a peer down loads here (invariant 4).  ``_calls`` is the in-process
single flight of a client's misses and ``_fallbacks`` the local loads after a failed
peer fetch; the event loop's thread guards both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from ..errors import CodecError, GeeCacheError, LoadError, NotFoundError, PeerError
from ..compression import unpack
from ..limits import check_key
from ..singleflight import Group as SingleFlight
from geecache.cluster.peers import Peer
from .loads import HostLoads
from .probes import CachedProbes

log = logging.getLogger("geecache.group")


class RoutedReads(CachedProbes, HostLoads):
    """A client's reads: one key (``get``, ``load_started``) or many (``get_many``)."""

    #: A client's misses in flight here, one per key (the event loop's thread guards it).
    _calls: SingleFlight
    #: Local loads after a failed peer fetch (``_fetch_soon``), held until they end: the loop
    #: keeps only weak references to tasks.  The event loop's thread guards it.
    _fallbacks: set[asyncio.Task]

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


    def load_started(self, key: str, settled: Callable[[asyncio.Future], object] | None = None
                     ) -> asyncio.Future | None:
        """The miss path of ``get`` without a task, where it needs none: a Future of *key*'s value.

        For a caller whose ``get_cached`` just missed (the data plane).  When
        a load of *key* runs already it is joined; when another host owns
        *key* the value is asked of it by callbacks (``_fetch_soon``).  None
        when this host would load it: then ``load``, which counts it.
        Counted as ``load`` counts (``gets``, and ``loads_deduped`` for a join).

        *settled*, if given, is called once with the Future when it is done
        (never before this returns): a join adds it as a done callback; a fetch
        this call starts calls it from the callback that settles the Future,
        which saves the loop a turn and two handles per remote hit.
        """
        call = self._calls.current(key)
        if call is None:
            check_key(key)
            peer = self.peers.pick(key)
            if peer is None:
                return None
            claimed = self._calls.claim(key)
            if claimed is None:  # (not after ``current`` said none runs; then ``load`` joins it)
                return None
            self.stats.add("gets")
            self._fetch_soon(peer, key, claimed, settled)
            return claimed
        self.stats.add("gets")
        self.stats.add("loads_deduped")
        if settled is not None:
            call.add_done_callback(settled)
        return call


    def _fetch_soon(self, peer, key: str, future: asyncio.Future,
                    settled: Callable[[asyncio.Future], object] | None = None) -> None:
        """Ask *key*'s owner *peer* for it and settle the claimed *future*; keep the hot copy.

        ``_load``'s remote half, by callbacks: a peer down or a bad answer
        loads here instead (invariant 4), in a task; that slow path is the only one.
        *settled* (``load_started``'s) is called once the Future is settled.
        """

        def fetched(answer) -> None:
            if future.done():  # cancelled (a worker's shutdown past its grace), or settled by a bug
                self._calls.release(key, future)
            else:
                try:
                    if type(answer) is tuple:
                        payload, codec, expire_at = answer
                        value = unpack(codec, payload, self.item_limit) if codec else payload
                        self._kept_hot(key, value, payload, codec, expire_at)
                        self._calls.release(key, future)
                        future.set_result(value)
                    elif isinstance(answer, NotFoundError):
                        self._calls.release(key, future)
                        future.set_exception(answer)
                        future.exception()  # retrieved: every waiter may have gone, and that is no error
                    elif not isinstance(answer, PeerError):
                        raise answer
                    else:
                        log.debug("group %s: %r from its owner %r failed (%s); loading locally", self.name,
                                  key, peer, answer)
                        self._peer_failed(answer)  # invariant 4: a peer down is a slow path
                        self._fall_back(key, future, settled)
                        return
                except CodecError as exc:
                    self._peer_failed(PeerError(f"peer {peer!r}: bad response: {exc}"))
                    self._fall_back(key, future, settled)
                    return
                except BaseException as exc:  # a bug: the joiners must not wait forever
                    self._calls.release(key, future)
                    future.set_exception(exc)
                    future.exception()
            if settled is not None:
                try:  # (as _call_settled, inline: this runs once per remote hit)
                    settled(future)
                except Exception:
                    log.exception("group %s: the callback of %r's settled fetch failed", self.name, key)

        peer.fetch_packed_soon(self.name, key, fetched)


    def _fall_back(self, key: str, future: asyncio.Future,
                   settled: Callable[[asyncio.Future], object] | None) -> None:
        """Load *key* here after its peer fetch failed, in a task that settles the claimed *future*."""
        fallback = asyncio.ensure_future(self._load_local(key, self._hot, self._hot_ttl))
        self._fallbacks.add(fallback)
        fallback.add_done_callback(lambda task: self._fell_back(key, future, task, settled))


    def _fell_back(self, key: str, future: asyncio.Future, task: asyncio.Task,
                   settled: Callable[[asyncio.Future], object] | None = None) -> None:
        """The local load after a failed peer fetch ended: settle the claimed *future* with it."""
        self._fallbacks.discard(task)
        self._calls.release(key, future)
        if future.done():  # cancelled meanwhile: nobody to tell
            if not task.cancelled():
                task.exception()  # retrieved: that is no error
        elif task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
            future.exception()
        else:
            future.set_result(task.result()[0])  # (value, expire_at)
        if settled is not None:
            _call_settled(settled, future)


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
        calls: list[tuple[str, Awaitable[bytes]]] = []
        remote: dict[Peer, list[tuple[str, asyncio.Future]]] = {}
        for key in dict.fromkeys(misses):  # a key asked twice is loaded once
            peer = self.peers.pick(key)
            claimed = None if peer is None else self._calls.claim(key)
            if peer is None or claimed is None:  # ours to load, or a get of the key already runs: join it
                calls.append((key, self._miss(key)))
            else:
                remote.setdefault(peer, []).append((key, claimed))
        # One task per owner, not one per key: the keys' Futures are settled by it.
        batches = [self._fetch_batch(owner, owned) for owner, owned in remote.items()]
        results = await asyncio.gather(*(call for _, call in calls), *batches, return_exceptions=True)
        errors: dict[str, GeeCacheError] = {}
        settled = [(key, r) for (key, _), r in zip(calls, results)]
        for owned in remote.values():
            settled.extend((key, future.exception() or future.result()) for key, future in owned)
        for key, result in settled:
            if isinstance(result, bytes):
                found[key] = result
            elif isinstance(result, NotFoundError):
                pass
            elif isinstance(result, GeeCacheError):
                errors[key] = result
            elif isinstance(result, BaseException):
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


    async def _load(self, key: str) -> bytes:
        peer = self.peers.pick(key)
        if peer is None:
            return (await self._load_local(key, self.name, self.ttl))[0]
        codec = None
        try:
            if self.packs:  # the hot copy kept as received
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


def _call_settled(settled: Callable[[asyncio.Future], object], future: asyncio.Future) -> None:
    """Call ``load_started``'s *settled* with the done *future*, as the loop calls a done callback:
    a failure is logged, and the other keys of the same peer answer are still settled."""
    try:
        settled(future)
    except Exception:
        log.exception("group: the callback of a settled fetch failed")
