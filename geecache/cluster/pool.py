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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import http.client
import json
import logging
import ssl
import time
from typing import Callable, Protocol
from urllib.parse import quote, urlsplit

from google.protobuf.message import DecodeError

from geecache.cluster import getwire
from geecache.auth import bearer
from geecache.cluster.breaker import CLOSED, Breaker
from geecache.compression import CODECS, codec_by_id, pack, unpack
from geecache.defaults import DEFAULT_PEER_CONNECT_TIMEOUT, DEFAULT_PEER_READ_TIMEOUT
from geecache.cluster.consistenthash import Ring
from geecache.cluster.transport import ConnectionPool, PeerProtocolError
from geecache.errors import CodecError, NotFoundError, PeerError, PeerUnavailableError
from geecache.geecachepb import (
    BatchItem, BatchRequest, BatchResponse, DeleteRequest, InvalidateRequest, RecentWrites,
    SetRequest, WarmRequest, WarmResponse, WriteBatch, WriteBatchResponse, WriteResponse,
)
from geecache.observability.latency import PEER_CALLS
from geecache.lifetimes import local_expiry
from geecache.cluster.peers import PEER_WRITE_BATCH
from geecache.storage import WriteResult

log = logging.getLogger(__name__)

PEER_PREFIX = "/_geecache/"
#: Keys one coalesced fetch asks at most (``HTTPPeer.fetch_packed_soon``); more go in several.
FETCH_BATCH = 64
#: The codec ids this host can decode: an answer under another one is a bad response.
_CODEC_IDS = frozenset(codec.id for codec in CODECS)
#: What a peer call fails with when the peer or the way to it is at fault (the breaker counts these).
_TRANSPORT_ERRORS = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                     ValueError, PeerProtocolError)
#: The share of the read timeout an owner is given to apply a write, counted from when it
#: reads it (the rest covers the request's time on the wire).
WRITE_TIMEOUT_SHARE = 0.75
PROTOBUF = "application/x-protobuf"
#: The key part of the peer batch path: POST there is a batch, never a key (no POST of a key).
BATCH = "_batch"
#: The path of a host's recent writes (``:`` is in no group name, so it is no group's path).
RECENT_WRITES_PATH = PEER_PREFIX + ":writes"
#: The key part of the peer batch write path (a POST, like BATCH).
WRITES = "_writes"
#: The key part of the warm-up path (a POST, like BATCH).
WARM = "_warm"
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
                                     connect_timeout=pool.connect_timeout, read_timeout=pool.read_timeout,
                                     headers=pool.headers)
        # group -> its quoted peer path with the trailing slash, as bytes (a fetch's target prefix),
        # and its peer batch path.  group -> the fetches asked in this turn of the loop (see
        # ``fetch_packed_soon``); False once the peer answered a batch with 404 or 405.  The
        # event loop's thread guards them.
        self._key_prefixes: dict[str, bytes] = {}
        self._batch_paths: dict[str, bytes] = {}
        self._fetches: dict[str, list] = {}
        self._batch_fetches = True
        # group -> writes waiting for the batch in flight to this peer (see ``write``);
        # False once the peer answered a batch with 405.  The event loop's thread guards both.
        self._write_queues: dict[str, _WriteQueue] = {}
        self._batch_writes = True

    def __repr__(self) -> str:
        return f"HTTPPeer({self.address!r})"

    async def _call(self, method: str, path: str, body: bytes | None = None,
                    gated: bool = True) -> tuple[int, bytes]:
        breaker = self._pool.breaker
        if gated and not breaker.allow(self.address):
            raise PeerUnavailableError(f"peer {self.address}: circuit open after a timeout or refusal")
        started = time.perf_counter()
        try:
            answer = await self._conns.request(method, path, None, body)
        except _TRANSPORT_ERRORS as exc:
            error = PeerError(f"peer {self.address}: {type(exc).__name__}: {exc}")
            error.tripped = breaker.failure(self.address)
            log.debug("peer call %s %s %s failed after %.1fms: %s", self.address, method,
                      path.partition("?")[0], (time.perf_counter() - started) * 1000, error)
            raise error from exc
        finally:
            PEER_CALLS.observe(method, time.perf_counter() - started)
        # Any answer, even a 5xx, shows the peer alive: only the transport trips the breaker.
        breaker.success(self.address)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("peer call %s %s %s: %d, %d bytes, %.1fms", self.address, method,
                      path.partition("?")[0], answer[0], len(answer[1]), (time.perf_counter() - started) * 1000)
        return answer

    @staticmethod
    def _fail(address: str, status: int, body: bytes) -> PeerError:
        error = PeerError(f"peer {address} answered {status}: {body[:200]!r}")
        error.status = status
        return error

    async def summary(self) -> dict:
        """The peer's figures for the cluster overview (``GET /_geecache``); PeerError otherwise."""
        status, body = await self._call("GET", "/_geecache")
        if status != 200:
            raise self._fail(self.address, status, body)
        try:
            doc = json.loads(body)
        except ValueError:
            raise PeerError(f"peer {self.address}: its summary is not JSON") from None
        if not isinstance(doc, dict):
            raise PeerError(f"peer {self.address}: its summary is not a JSON object")
        return doc

    def close(self) -> None:
        """Close this peer's idle connections."""
        self._conns.close()

    async def fetch(self, group: str, key: str, max_size: int, *, handoff: bool = False) -> tuple[bytes, float]:
        """(value, expire_at) from the owner (see ``geecache.cluster.peers.Peer``); expire_at by this
        host's clock (the owner sends the seconds left, ``geecache.lifetimes``).

        *handoff*: ask a previous owner, which answers only from its cache (404
        otherwise) and never loads, so a ring change costs no second load.
        """
        payload, codec, expire_at = await self.fetch_packed(group, key, max_size, handoff=handoff)
        try:
            return (unpack(codec, payload, max_size) if codec else payload), expire_at
        except CodecError as exc:
            raise PeerError(f"peer {self.address}: bad response: {exc}") from exc

    async def fetch_packed(self, group: str, key: str, max_size: int, *,
                           handoff: bool = False) -> tuple[bytes, int, float]:
        """(bytes, codec id, expire_at) as the owner sent them: a compressed hot copy is kept so.

        The codec id is checked (an unknown one is a PeerError); the bytes are
        not decompressed here.
        """
        future = asyncio.get_running_loop().create_future()

        def done(answer) -> None:
            if not future.done():  # (the caller may have been cancelled)
                if type(answer) is tuple:
                    future.set_result(answer)
                else:
                    future.set_exception(answer)

        self.fetch_packed_soon(group, key, done, handoff=handoff)
        return await future

    def fetch_packed_soon(self, group: str, key: str, done: Callable[[object], None], *,
                          handoff: bool = False) -> None:
        """``fetch_packed`` without a task, a coroutine or a Future: *done* gets (bytes, codec id,
        expire_at) or the exception (PeerUnavailableError, PeerError, NotFoundError), once.

        Fetches asked in one turn of the event loop share requests: at the end
        of the turn, a lone one is a ``GET`` of its key, several are one peer
        batch (``POST .../_batch``, ``FETCH_BATCH`` keys at most), each key
        still answered alone.  Nothing waits for a timer or for another
        request.  Through the breaker, bounded by the pool's timeouts, timed
        in ``PEER_CALLS``, as every peer call.  *done* runs from a callback of
        the loop and must not raise.
        """
        if handoff:
            # The asker, so that a previous owner can say it holds nothing for it (cold).
            self._get_soon(group, key, done, b"?handoff=1&from=" + quote(self._pool.self_address, safe="").encode())
            return
        queue = self._fetches.get(group)
        if queue is None:
            queue = self._fetches[group] = []
            asyncio.get_running_loop().call_soon(self._send_fetches, group)
        queue.append((key, done))

    def _send_fetches(self, group: str) -> None:
        """End of the loop's turn: send the fetches of *group* asked during it."""
        queue = self._fetches.pop(group)
        try:
            if len(queue) == 1 or not self._batch_fetches:
                for key, done in queue:
                    self._get_soon(group, key, done)
                return
            for at in range(0, len(queue), FETCH_BATCH):
                chunk = queue[at:at + FETCH_BATCH]
                if len(chunk) == 1:
                    self._get_soon(group, *chunk[0])
                else:
                    self._batch_soon(group, chunk)
        except Exception as exc:  # a bug: no fetch may wait forever (a settled one ignores this)
            log.error("peer %s: sending fetches failed", self.address, exc_info=exc)
            for _, done in queue:
                done(exc)

    def _batch_soon(self, group: str, items: list[tuple[str, Callable[[object], None]]]) -> None:
        """Ask the owner for the keys of *items* in one peer batch; settle each key's *done*."""
        if not self._pool.breaker.allow(self.address):
            for _, done in items:
                done(PeerUnavailableError(f"peer {self.address}: circuit open after a timeout or refusal"))
            return
        msg = BatchRequest(group=group)
        add = msg.items.add  # in place: cheaper than BatchItems built and copied in
        for key, _ in items:
            add(key=key)
        body = msg.SerializeToString()
        path = self._batch_paths.get(group)
        if path is None:
            path = self._batch_paths[group] = peer_path(group, BATCH).encode()
        started = time.perf_counter()
        self._conns.post(path, body, lambda answer: self._batch_fetched(group, items, started, answer))

    def _batch_fetched(self, group: str, items: list, started: float, answer) -> None:
        """The owner's answer to ``_batch_soon`` (status, body), or its failure: settle every key."""
        PEER_CALLS.observe("POST", time.perf_counter() - started)
        if type(answer) is not tuple:
            if not isinstance(answer, _TRANSPORT_ERRORS):
                for _, done in items:
                    done(answer)
                return
            error = PeerError(f"peer {self.address}: {type(answer).__name__}: {answer}")
            # One failed call: the first key carries whether it opened the breaker, so the
            # trip is counted once, as for the GETs it stands for.
            error.tripped = self._pool.breaker.failure(self.address)
            log.debug("peer call %s POST %s failed after %.1fms: %s", self.address, peer_path(group, BATCH),
                      (time.perf_counter() - started) * 1000, error)
            items[0][1](error)
            for _, done in items[1:]:
                done(PeerError(str(error)))
            return
        self._pool.breaker.success(self.address)
        status, body = answer
        if status != 200:
            # An owner without batches (405, 404), or whose batch budget is spent (503): each
            # key as its own GET, as before there were batches.
            if status in (404, 405):
                self._batch_fetches = False
            for key, done in items:
                self._get_soon(group, key, done)
            return
        msg = BatchResponse()
        try:
            msg.ParseFromString(body)
            if len(msg.items) != len(items):
                raise DecodeError(f"{len(msg.items)} items for {len(items)} keys")
        except DecodeError as exc:
            for _, done in items:
                done(PeerError(f"peer {self.address}: bad batch response: {exc}"))
            return
        now = time.time()
        for (key, done), item in zip(items, msg.items):
            if item.status == 200:
                if item.codec and item.codec not in _CODEC_IDS:
                    done(PeerError(f"peer {self.address}: bad response: unknown codec id {item.codec}"))
                    continue
                expire_at = local_expiry(item.expire_at, item.ttl_left, now) if item.expire_at else 0.0
                done((item.value, item.codec, expire_at))
            elif item.status == 404:
                done(NotFoundError(f"group {group!r} has no key {key!r}"))
            else:
                done(self._fail(self.address, item.status, item.error.encode()))

    def _get_soon(self, group: str, key: str, done: Callable[[object], None], query: bytes = b"") -> None:
        """One key's ``GET``, as ``fetch_packed_soon`` describes."""
        breaker = self._pool.breaker
        if not breaker.allow(self.address):
            done(PeerUnavailableError(f"peer {self.address}: circuit open after a timeout or refusal"))
            return
        prefix = self._key_prefixes.get(group)
        if prefix is None:
            prefix = self._key_prefixes[group] = (peer_path(group) + "/").encode()
        # quote() leaves letters and digits alone: most keys skip it.
        target = prefix + (key.encode() if key.isascii() and key.isalnum() else quote(key, safe="").encode())
        if query:
            target += query
        started = time.perf_counter()
        self._conns.get(target, lambda answer: self._fetched(group, key, started, answer, done, query))

    def _fetched(self, group: str, key: str, started: float, answer, done: Callable[[object], None],
                 query: bytes = b"") -> None:
        """The answer to ``fetch_packed_soon``'s GET (status, body), or its failure: *done*'s argument."""
        PEER_CALLS.observe("GET", time.perf_counter() - started)
        if type(answer) is not tuple:
            if not isinstance(answer, _TRANSPORT_ERRORS):
                done(answer)  # a bug: not this peer's fault
                return
            error = PeerError(f"peer {self.address}: {type(answer).__name__}: {answer}")
            error.__cause__ = answer
            error.tripped = self._pool.breaker.failure(self.address)
            log.debug("peer call %s GET %s failed after %.1fms: %s", self.address, peer_path(group),
                      (time.perf_counter() - started) * 1000, error)
            done(error)
            return
        # Any answer, even a 5xx, shows the peer alive: only the transport trips the breaker.
        self._pool.breaker.success(self.address)
        status, body = answer
        if log.isEnabledFor(logging.DEBUG):
            log.debug("peer call %s GET %s: %d, %d bytes, %.1fms", self.address, peer_path(group), status,
                      len(body), (time.perf_counter() - started) * 1000)
        if status == 404:
            error = NotFoundError(f"group {group!r} has no key {key!r}")
            # A handoff 404 of a previous owner holding nothing of the group says so.
            error.cold = b"?handoff=1" in query and b'"cold": true' in body
            done(error)
            return
        if status != 200:
            done(self._fail(self.address, status, body))
            return
        try:
            payload, codec, expire_at, ttl_left = getwire.decode(body)
            codec_by_id(codec)
        except (DecodeError, CodecError) as exc:
            error = PeerError(f"peer {self.address}: bad response: {exc}")
            error.__cause__ = exc
            done(error)
            return
        done((payload, codec, local_expiry(expire_at, ttl_left, time.time()) if expire_at else 0.0))

    async def write(self, group: str, key: str, value: bytes | None, ttl: float = 0, *,
                    version: int = 0) -> WriteResult:
        """Ask the owner to apply a write (*value* None: a delete); see ``geecache.cluster.peers.Peer``.

        Writes to one owner share requests: while one batch to it is in
        flight, the writes that come meanwhile queue, and go together in the
        next (``write_many``, one transaction on the owner); nothing waits for
        a timer.  Each keeps its own answer; the request's failure is each
        one's PeerError.  An owner from before batch writes (405) is then sent
        one request per write, as before.
        """
        if not self._batch_writes:
            return await self._write_one(group, key, value, ttl, version)
        queue = self._write_queues.get(group)
        if queue is None:
            queue = self._write_queues[group] = _WriteQueue()
        future = asyncio.get_running_loop().create_future()
        queue.items.append((key, value, ttl, version, future))
        if not queue.sending:
            queue.sending = True
            queue.task = asyncio.ensure_future(self._send_writes(group, queue))
        return await future

    async def _send_writes(self, group: str, queue: "_WriteQueue") -> None:
        try:
            while queue.items:
                batch = [w for w in queue.items[:PEER_WRITE_BATCH] if not w[4].done()]
                del queue.items[:PEER_WRITE_BATCH]
                if not batch:
                    continue
                try:
                    answers = await self.write_many(group, [w[:4] for w in batch])
                except PeerError as exc:
                    # One failed call: the first write carries whether it opened the
                    # breaker, so the trip is counted once.
                    answers = [exc] + [PeerError(str(exc)) for _ in batch[1:]]
                for write, answer in zip(batch, answers):
                    future = write[4]
                    if future.done():  # its writer was cancelled
                        continue
                    if answer is None:
                        answer = PeerError(f"peer {self.address}: the owner failed this write")
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            queue.sending = False
            for write in queue.items:  # cancelled (closing): nobody will send these
                if not write[4].done():
                    write[4].set_exception(PeerError(f"peer {self.address}: closed"))
            queue.items.clear()

    async def _write_one(self, group: str, key: str, value: bytes | None, ttl: float, version: int) -> WriteResult:
        """One write in its own request (``PUT``/``DELETE`` of the key), for an owner without batches.

        Its deadline is now + the read timeout: the owner must not apply it
        once this host may have given up on the answer and written it itself.
        """
        deadline = time.time() + self._pool.read_timeout
        # The same deadline as a duration, for an owner whose clock is not ours: shorter by
        # the time the request may spend getting there, so the owner's is never the later.
        timeout = self._pool.read_timeout * WRITE_TIMEOUT_SHARE
        if value is None:
            method, msg = "DELETE", DeleteRequest(version=version, deadline=deadline, timeout=timeout)
        else:
            codec_id, payload = pack(value, self._pool.codec_for(group))
            method = "PUT"
            msg = SetRequest(group=group, key=key, value=payload, codec=codec_id, ttl=ttl,
                             version=version, deadline=deadline, timeout=timeout)
        status, body = await self._call(method, peer_path(group, key), msg.SerializeToString())
        if status == 200:
            answer = WriteResponse()
            try:
                answer.ParseFromString(body)
            except DecodeError as exc:
                raise PeerError(f"peer {self.address}: bad write response: {exc}") from exc
            return WriteResult(answer.applied, answer.existed, answer.version, answer.late)
        # An owner from before versions: 204 applied, 404 "delete found nothing".
        if status == 204:
            return WriteResult(True, value is None, 0)
        if status == 404 and value is None:
            return WriteResult(True, False, 0)
        raise self._fail(self.address, status, body)

    async def _one_request_each(self, group: str, writes: list[tuple]) -> list[WriteResult | None]:
        """``write_many`` as single writes (concurrently); None for one that failed."""
        answers = await asyncio.gather(*(self._write_one(group, *w) for w in writes), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, PeerError):
                raise answer  # a bug or a cancellation, not an answer about this write
        return [None if isinstance(a, BaseException) else a for a in answers]

    async def _post_batch(self, group: str, path_key: str, body: bytes, answer, count: int, what: str):
        """POST a batch *body* to the owner and parse its answer (*count* items) into *answer*.

        PeerError when the owner is unreachable, answers another status, or
        the answer is malformed or has another number of items.
        """
        status, raw = await self._call("POST", peer_path(group, path_key), body)
        if status != 200:
            raise self._fail(self.address, status, raw)
        try:
            answer.ParseFromString(raw)
        except DecodeError as exc:
            raise PeerError(f"peer {self.address}: bad {what} response: {exc}") from exc
        if len(answer.items) != count:
            raise PeerError(f"peer {self.address}: {len(answer.items)} answers to a {what} of {count}")
        return answer

    async def write_many(self, group: str, writes: list[tuple[str, bytes | None, float, int]]
                         ) -> list[WriteResult | None]:
        """Ask the owner to apply every ``(key, value or None, ttl, version)`` of *writes* in one
        request (and one transaction); one answer per write, in order.

        None for a write the owner failed (the caller writes it itself, as
        after a failed single write); PeerError when the owner is unreachable
        or answers otherwise (an owner from before batch writes: 405).  The
        deadline is the single write's: now + the read timeout.
        """
        if not self._batch_writes:
            return await self._one_request_each(group, writes)
        deadline = time.time() + self._pool.read_timeout
        timeout = self._pool.read_timeout * WRITE_TIMEOUT_SHARE  # as _write_one's, for the owner's clock
        codec = self._pool.codec_for(group)
        msg = WriteBatch(group=group)
        add = msg.items.add
        for key, value, ttl, version in writes:
            if value is None:
                add(key=key, delete=True, version=version, deadline=deadline, timeout=timeout)
            else:
                codec_id, payload = pack(value, codec)
                add(key=key, value=payload, codec=codec_id, ttl=ttl, version=version, deadline=deadline,
                    timeout=timeout)
        try:
            answer = await self._post_batch(group, WRITES, msg.SerializeToString(), WriteBatchResponse(),
                                            len(writes), "batch write")
        except PeerError as exc:
            if exc.status != 405:
                raise
            self._batch_writes = False  # an owner from before batch writes: one request each
            return await self._one_request_each(group, writes)
        return [WriteResult(i.result.applied, i.result.existed, i.result.version, i.result.late)
                if i.status == 200 else None for i in answer.items]

    async def fetch_many(self, group: str, keys: list[str], max_size: int) -> dict[str, tuple[int, bytes, float]]:
        """key -> (status, value, expire_at) from the owner, in one request; PeerError when unreachable.

        Status 200 (found), 404 (the source has no such key), or the HTTP
        status of the error the owner met loading that key.
        """
        body = BatchRequest(group=group, items=[BatchItem(key=k) for k in keys]).SerializeToString()
        msg = await self._post_batch(group, BATCH, body, BatchResponse(), len(keys), "batch")
        out = {}
        now = time.time()
        for key, item in zip(keys, msg.items):
            if item.status == 200:
                try:
                    out[key] = (200, unpack(item.codec, item.value, max_size),
                                local_expiry(item.expire_at, item.ttl_left, now))
                except CodecError:
                    out[key] = (502, b"", 0.0)  # this key loads locally
            else:
                out[key] = (item.status, b"", 0.0)
        return out

    async def set(self, group: str, key: str, value: bytes, ttl: float = 0) -> None:
        """Ask the owner to write through, unversioned (see ``write``)."""
        await self.write(group, key, value, ttl)

    async def delete(self, group: str, key: str) -> bool:
        """Ask the owner to delete, unversioned; True when it had the key (see ``write``)."""
        return (await self.write(group, key, None)).existed

    async def warm(self, group: str, to: str, members, max_bytes: int, seconds: float) -> WarmResponse:
        """A previous owner's hottest entries of *group* that hash to *to* by the ring of *members*
        (``geecache.cluster.warmup``); PeerError when unreachable or answering otherwise."""
        body = WarmRequest(group=group, to=to, members=list(members), max_bytes=max_bytes,
                           seconds=seconds).SerializeToString()
        return await self._ask("POST", peer_path(group, WARM), body, WarmResponse, "warm-up")

    async def recent_writes(self, within: float) -> RecentWrites:
        """The keys this member wrote in the last *within* seconds (``GET /_geecache/:writes``), over
        the pooled connection: ``HTTPPool.writes_elsewhere`` without blocking the loop."""
        return await self._ask("GET", f"{RECENT_WRITES_PATH}?within={within:.3f}", None, RecentWrites,
                               "recent-writes")

    async def _ask(self, method: str, path: str, body: bytes | None, message, what: str):
        """The *message* (a protobuf class) a 200 answer to *method path* carries; PeerError for
        any other answer or one that does not parse."""
        status, raw = await self._call(method, path, body)
        if status != 200:
            raise self._fail(self.address, status, raw)
        try:
            return message.FromString(raw)
        except DecodeError as exc:
            raise PeerError(f"peer {self.address}: bad {what} response: {exc}") from exc

    async def invalidate(self, group: str, keys: list[str]) -> None:
        """Ask this member to drop its copies of *keys*.

        Sent even while its breaker is open (the pool decides how long to
        wait for it): a member back from a failure must hear of the writes
        done meanwhile, and its answer closes the breaker.
        """
        body = InvalidateRequest(group=group, keys=keys).SerializeToString()
        status, answer = await self._call("POST", peer_path(group), body, gated=False)
        if status != 204 and status != 200:
            raise self._fail(self.address, status, answer)



class _WriteQueue:
    """The writes to one (peer, group) waiting for the batch in flight, and whether one is."""

    __slots__ = ("items", "sending", "task")

    def __init__(self) -> None:
        self.items: list[tuple] = []  # (key, value, ttl, version, Future)
        self.sending = False
        self.task: asyncio.Future | None = None  # held: a running task must be referenced


#: How long a write waits for an invalidation to a member whose breaker is open
#: or that has undelivered ones: long enough for a member that is back to answer
#: (on a LAN, milliseconds), short enough that a hung one costs writes little.
TRIPPED_WAIT = 0.05
#: Undelivered invalidations kept per member (keys over all groups); past it
#: more are dropped (logged) and those copies are healed by their TTL only.
MAX_UNDELIVERED = 100_000
#: Least pause between two deliveries to a member that did not answer.
RETRY_MIN = 0.1
#: Keys written recently that a pool remembers for members it adds (see ``HTTPPool``).
MAX_RECENT = 100_000


class _Mailbox:
    """Invalidations a member has not acknowledged: retried until it does or leaves the ring.

    A write done while its owner was unreachable (paused, partitioned) left
    that owner's copy stale; without the retry it would be served until its
    TTL, forever with none.  The event loop's single thread guards it.
    """

    __slots__ = ("keys", "size", "task", "dropped")

    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {}  # group -> keys
        self.size = 0
        self.task: asyncio.Task | None = None
        self.dropped = 0

    def post(self, group: str, keys: list[str]) -> None:
        held = self.keys.setdefault(group, set())
        for key in keys:
            if key not in held:
                if self.size >= MAX_UNDELIVERED:
                    self.dropped += 1
                    continue
                held.add(key)
                self.size += 1

    def take(self) -> dict[str, set[str]]:
        batch, self.keys, self.size = self.keys, {}, 0
        return batch


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
        self._mail: dict[str, _Mailbox] = {}  # address -> undelivered invalidations
        # (monotonic time, group, keys) of this host's recent invalidations, newest
        # last, for members added to the ring: a host joining serves (and keeps copies)
        # before every other host routes to it, and those copies missed the writes of
        # hosts that did not know it yet.  Its ring adds them, it sends them these.
        self.replay_window = float(replay_window)
        self._recent: collections.deque = collections.deque()
        self._recent_keys = 0

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
            self._drop_mail(gone)
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
        if added and self._recent:
            self._replay(added)
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

        A member with a closed breaker and nothing pending is waited for (up
        to *timeout*), so a client that wrote here and reads there sees its
        write.  The keys are also remembered for ``replay_window`` seconds,
        for members added to the ring meanwhile.  One whose breaker is open,
        or that already has undelivered
        invalidations, gets them through its mailbox: sent at once, waited
        for only TRIPPED_WAIT, and retried after each cooldown until it
        answers or leaves the ring.  A member that fails or does not answer
        in time has the keys put in its mailbox.  Returns how many breakers
        this opened.
        """
        self._refresh()
        if self.write_log is not None:  # every applied write passes here: hosts that were away ask it
            self.write_log.append(group, keys)
        if self.replay_window > 0:
            self._remember(group, keys)
        if not self._peers:
            return 0
        calls: dict[asyncio.Future, HTTPPeer] = {}
        started = []
        for peer in self._peers.values():
            if self.breaker.state(peer.address) == CLOSED and peer.address not in self._mail:
                calls[asyncio.ensure_future(peer.invalidate(group, keys))] = peer
            else:
                task = self._post(peer, group, keys)
                if task is not None:
                    started.append(task)
        trips = 0
        if calls:
            done, pending = await asyncio.wait(calls, timeout=timeout)
            for task in pending:
                task.cancel()
                peer = calls[task]
                trips += self.breaker.failure(peer.address)
                self._post(peer, group, keys)
            for task in done:
                error = task.exception()
                if error is not None:
                    trips += bool(getattr(error, "tripped", False))
                    self._post(calls[task], group, keys)
        if started:
            await asyncio.wait(started, timeout=TRIPPED_WAIT)
        return trips

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
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout,
                                               context=self.ssl_context or ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
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

    def _remember(self, group: str, keys: list[str]) -> None:
        now = time.monotonic()
        self._recent.append((now, group, tuple(keys)))
        self._recent_keys += len(keys)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        recent = self._recent
        while recent and (recent[0][0] < now - self.replay_window or self._recent_keys > MAX_RECENT):
            self._recent_keys -= len(recent.popleft()[2])

    def _replay(self, added) -> None:
        """Send members just added to the ring the keys this host wrote in the replay window."""
        self._forget_old(time.monotonic())
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # outside the worker's loop (a test reading the ring): nobody to tell
            return
        for address in added:
            peer = self._peers[address]
            for _, group, keys in self._recent:
                self._post(peer, group, list(keys))

    def _post(self, peer: HTTPPeer, group: str, keys: list[str]) -> asyncio.Task | None:
        """Put *keys* in *peer*'s mailbox; the delivery task if this started one."""
        mail = self._mail.get(peer.address)
        if mail is None:
            mail = self._mail[peer.address] = _Mailbox()
        mail.post(group, keys)
        if mail.task is None or mail.task.done():
            mail.task = asyncio.ensure_future(self._deliver(peer, mail))
            return mail.task
        return None

    async def _deliver(self, peer: HTTPPeer, mail: _Mailbox, timeout: float = 1.0) -> None:
        """Send *peer* its undelivered invalidations until it has them all."""
        while mail.size:
            batch = mail.take()
            failed = False
            for group, keys in batch.items():
                if failed:
                    mail.post(group, list(keys))
                    continue
                try:
                    await asyncio.wait_for(peer.invalidate(group, list(keys)), timeout)
                except (PeerError, asyncio.TimeoutError):
                    failed = True
                    self.breaker.failure(peer.address)
                    mail.post(group, list(keys))
            if mail.dropped:
                log.warning("peer %s: %d invalidations dropped (over %d undelivered); those copies "
                            "expire by their TTL only", peer.address, mail.dropped, MAX_UNDELIVERED)
                mail.dropped = 0
            if failed:
                await asyncio.sleep(max(self.breaker.retry_in(peer.address), RETRY_MIN))
        if self._mail.get(peer.address) is mail:
            del self._mail[peer.address]

    def _drop_mail(self, address: str) -> None:
        mail = self._mail.pop(address, None)
        if mail is not None and mail.task is not None:
            mail.task.cancel()

    async def close(self) -> None:
        """Close the pooled connections; undelivered invalidations are given up."""
        for address in list(self._mail):
            self._drop_mail(address)
        for peer in self._peers.values():
            peer.close()
