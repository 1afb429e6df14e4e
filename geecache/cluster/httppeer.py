"""HTTPPeer: one other host of the cluster, reached over the peer protocol.

Its calls go through the pool's per-peer circuit breaker (``geecache.cluster.breaker``),
over its own keep-alive connections (``geecache.cluster.transport``).  The fetches of
one loop turn go together in one peer batch, and the writes to one owner wait for the
batch in flight (``_WriteQueue``); the event loop's single thread guards both queues.
The peer paths and their names (``peer_path``, ``peer_url``, ``BATCH`` ...) live here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote

from google.protobuf.message import DecodeError

from geecache.cluster import batchwire, getwire
from geecache.compression import CODECS, codec_by_id, pack, unpack
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

if TYPE_CHECKING:
    from geecache.cluster.pool import HTTPPool

log = logging.getLogger("geecache.cluster.pool")

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
        try:
            answers = batchwire.decode_response(body)  # the library's reading, without its objects
            if len(answers) != len(items):
                raise DecodeError(f"{len(answers)} items for {len(items)} keys")
        except DecodeError as exc:
            for _, done in items:
                done(PeerError(f"peer {self.address}: bad batch response: {exc}"))
            return
        now = time.time()
        for (key, done), (status, value, codec, expire_at, ttl_left, reason) in zip(items, answers):
            if status == 200:
                if codec and codec not in _CODEC_IDS:
                    done(PeerError(f"peer {self.address}: bad response: unknown codec id {codec}"))
                    continue
                done((value, codec, local_expiry(expire_at, ttl_left, now) if expire_at else 0.0))
            elif status == 404:
                done(NotFoundError(f"group {group!r} has no key {key!r}"))
            else:
                done(self._fail(self.address, status, reason.encode()))

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
            missing = NotFoundError(f"group {group!r} has no key {key!r}")
            # A handoff 404 of a previous owner holding nothing of the group says so.
            missing.cold = b"?handoff=1" in query and b'"cold": true' in body
            done(missing)
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
                answers: list[WriteResult | PeerError | None]
                try:
                    answers = list(await self.write_many(group, [w[:4] for w in batch]))
                except PeerError as exc:
                    # One failed call: the first write carries whether it opened the
                    # breaker, so the trip is counted once.
                    answers = [exc, *(PeerError(str(exc)) for _ in batch[1:])]
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
        msg: DeleteRequest | SetRequest
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
