"""Writes: a set or delete routed to its owner, and the owner's half of it.

Every write carries a version, this process's HLC timestamp (``geecache.hlc``)
taken when the write is originated, and the source refuses a version not above
the key's stored one (``geecache.storage.base``).  A write forwarded to the owner
also carries a deadline: the owner never applies it after that, because by then
the originator has given up and written it itself.  So an owner that was paused
(SIGSTOP, swap, a long SQLite lock wait) while its writes were done elsewhere
cannot undo them when it resumes (invariant 7).  Writes keep no state of their
own: the source orders them, the write fence (the event loop's thread) and the
host-wide flight (the arena) tell them which loads race them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from .. import hlc
from ..backoff import wait_while
from ..errors import GeeCacheError, LockTimeoutError, PeerError, ReadOnlySourceError, VersionAheadError
from ..limits import check_key, check_ttl, check_value
from ..storage.base import WriteOp, WriteResult, batch_writer, write_queue
from geecache.cluster.peers import PEER_WRITE_BATCH
from .core import GroupCore

#: How many times a write the source refused as older than its stored version
#: is re-stamped above that version and tried again (see ``_route_write``).
WRITE_ATTEMPTS = 3


class Writes(GroupCore):
    """Route a client's writes to their owners; apply the writes this host owns."""

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
                try:
                    got = await peer.write_many(self.name, [(*writes[i], versions[i]) for i in chunk])
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
        settled = await asyncio.gather(*(self._settle_write(writes[i][0], writes[i][1], writes[i][2], versions[i],
                                                            first) for i, first in unsettled),
                                       return_exceptions=True)
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
        stored: list[tuple[str, bytes | None, str | None, float | None]] = []
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


    def start_set(self, key: str, value: bytes, done: Callable) -> tuple[object, int] | None:
        """``set(key, value)`` without a coroutine, when this host owns *key* and the source
        queues writes (``queue_write``): (the queued write, the write's version), to hand to
        ``finish_set`` once *done(write)* is called (on the loop thread, when its commit is
        answered).  None when the write must take ``set``'s path (another owner, another
        source); then nothing has been done and *done* is never called.

        Measured: the coroutines of ``set`` and the Task that ran them cost more of a PUT's
        CPU than the commit; this is ``set``'s path for the common case, and ``finish_set``
        goes back to it for the rest (a refusal to re-stamp, a racing load, members to tell).
        """
        check_key(key)
        return self._start_write(key, check_value(value, self.item_limit), "sets", done)


    def start_delete(self, key: str, done: Callable) -> tuple[object, int] | None:
        """``delete(key)`` without a coroutine, as ``start_set`` is ``set``'s: hand the result
        to ``finish_delete``; None when the delete must take ``delete``'s path."""
        check_key(key)
        return self._start_write(key, None, "deletes", done)


    def _start_write(self, key: str, value: bytes | None, stat: str, done: Callable
                     ) -> tuple[object, int] | None:
        self._check_writable()
        queue_write = write_queue(self.source)
        if queue_write is None or self.peers.pick(key) is not None:
            return None
        self.stats.add(stat)
        version = hlc.clock.now()
        return queue_write(key, value, version, done), version


    def finish_set(self, key: str, value: bytes, version: int, write):
        """The rest of ``start_set(key, value)`` once its *write* is answered: None when the
        write is acknowledged, else the coroutine that settles it (await it before
        acknowledging).  Raises the write's error."""
        result = self._committed(write)
        if not result.applied:
            self.invalidate([key])
            self.stats.add("writes_refused")
            _observe(result.version)
            return self._settle_write(key, value, 0.0, version, result)
        # As _keep, but the value replaces the copy in its partition: a cache's set drops the
        # old copy whatever it stores, so only the other partition's is deleted (one shard
        # lock fewer than invalidate's two deletes before the set).
        partition, ttl = self._partition(key)  # (the ring may have moved the key meanwhile)
        self._fence.wrote(key)
        try:
            self._cache.delete(self._hot if partition == self.name else self.name, key)
            self._cache_set(partition, key, value, ttl)
        except LockTimeoutError:
            # The old value may still be served: the write must not be acknowledged.
            self.stats.add("lock_timeouts")
            raise
        racing = self._flight.loading(self.name, key)
        if racing or not self.peers.alone:
            entry = (key, value, partition, ttl)
            return self._publish([entry], [entry] if racing else [])
        return None


    def finish_delete(self, key: str, version: int, write):
        """The rest of ``start_delete(key)`` once its *write* is answered: whether the source
        had the key (acknowledged), else the coroutine that settles the delete and answers that
        (await it before acknowledging).  Raises the delete's error."""
        result = self._committed(write)
        entry = self._keep(key, None, 0.0, result)
        if entry is None:
            return self._settled_existed(self._settle_write(key, None, 0.0, version, result))
        racing = self._racing([entry])
        if racing or not self.peers.alone:
            return self._published_existed(self._publish([entry], racing), result.existed)
        return result.existed


    @staticmethod
    def _committed(write) -> WriteResult:
        answer = write.answer
        if isinstance(answer, Exception):
            raise answer
        return answer


    @staticmethod
    async def _settled_existed(settle) -> bool:
        return (await settle).existed


    @staticmethod
    async def _published_existed(publish, existed: bool) -> bool:
        await publish
        return existed


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
