"""The data port's route table and its handlers, over the configured Groups.

    GET|HEAD /api?key=K[&group=G]          200 value | 404 | 400
    PUT      /api?key=K[&group=G][&ttl=S]  204 (bearer token when configured)
    DELETE   /api?key=K[&group=G]          204 | 404 (bearer token when configured)
    GET|HEAD /healthz                      {"status": "ok", "pid": ..., "groups": [...]}
    GET|HEAD|PUT|DELETE /_geecache/<group>/<key>   the peer API (always behind the token;
                                                   PUT/DELETE answer a WriteResponse, see
                                                   ``geecache.cluster.ownerwrites``)
    POST     /_geecache/<group>                    InvalidateRequest
    POST     /api/batch?op=get|set|delete[&group=G]  BatchRequest -> BatchResponse | 204 (writes: token)
    POST     /_geecache/<group>/_batch             BatchRequest -> BatchResponse (the peer batch get)
    GET      /_geecache/:writes?within=S           RecentWrites: this host's writes of the last S seconds
    POST     /_geecache/<group>/_writes            WriteBatch -> WriteBatchResponse (the peer batch write)
    POST     /_geecache/<group>/_warm              WarmRequest -> WarmResponse (a joining host's warm-up)
    GET      /_geecache                            this host's figures as JSON, for another host's
                                                   cluster overview (behind the token)

Anything else is a JSON 404, a known path with another method
a JSON 405 with ``Allow``.

A handler gets a ``Request`` and returns either a reply (answered at once,
inside the parser's callback) or a coroutine that will produce one (the
protocol runs it as a task).  Errors are raised as GeeCacheErrors and turned
into replies by ``error_reply``, the one mapping of this package.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from functools import partial

from google.protobuf.message import DecodeError

from geecache.defaults import DEFAULT_BATCH_INFLIGHT_BYTES, DEFAULT_BATCH_MAX_BYTES, DEFAULT_BATCH_MAX_KEYS
from geecache import auth
from geecache.cluster import batchwire, getwire
from geecache.compression import CODECS, pack, unpack
from geecache.cluster.consistenthash import members_digest
from geecache.errors import (
    MAYBE_APPLIED_HEADER, CodecError, GeeCacheError, InvalidKeyError, NotFoundError, ReadOnlySourceError,
    SourceBusyError, UnknownGroupError, public_reason,
)
from geecache.geecachepb import BatchRequest, BatchResponse, InvalidateRequest, RecentWrites
from geecache.lifetimes import seconds_left
from geecache.limits import check_key, check_ttl
from geecache.cluster.ownerwrites import serve_delete, serve_set, serve_write_batch
from geecache.cluster.warmup import holds_nothing_for, serve_warm
from workers.dataplane.query import api_params, decode, parse_query
from workers.dataplane.responses import (
    CONTENT_LENGTH, JSON, NO_CONTENT, OCTET_STREAM, PROTOBUF, Reply, allow_line, error_reply,
)

log = logging.getLogger("geecache.worker")

#: Route labels in metrics: the aiohttp router's patterns before, so dashboards carry over.
API = "/api"
HEALTHZ = "/healthz"
PEER_KEY = "/_geecache/{group}/{key:.+}"
PEER_GROUP = "/_geecache/{group}"
BATCH = "/api/batch"
#: The member list a ring-following client routes by (read-only, behind the token).
RING = "/_geecache/_ring"
#: The host's figures for a peer's dashboard (a path no group name can take: no trailing part).
PEER_SUMMARY = "/_geecache"
PEER_BATCH = "/_geecache/{group}/_batch"
RECENT_WRITES = "/_geecache/:writes"
PEER_WRITES = "/_geecache/{group}/_writes"
PEER_WARM = "/_geecache/{group}/_warm"
UNMATCHED = "unmatched"

_PEER_PREFIX = b"/_geecache/"
_CHALLENGE = b"WWW-Authenticate: " + auth.CHALLENGE.encode() + b"\r\n"
_READ_ONLY_ALLOW = b"Allow: GET, HEAD\r\n"

_GET_METHODS = frozenset({"GET", "HEAD"})
_GET_ONLY = frozenset({"GET"})
_API_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_INVALIDATE_METHODS = frozenset({"POST"})
_POST = frozenset({"POST"})
#: The key part of the peer batch path (a POST; no key is ever POSTed).
_BATCH_KEY = b"_batch"
#: The key part of the peer batch write path (a POST too).
_WRITES_KEY = b"_writes"
#: The key part of the warm-up path (a POST too).
_WARM_KEY = b"_warm"
#: A handoff miss of a host that holds nothing of the group: the asker stops asking it a while.
_COLD_MISS: Reply = (404, JSON, b'{"error": "not cached here", "cold": true}', b"")
_BATCH_OPS = ("get", "set", "delete")


#: The codecs that are also HTTP content codings (RFC 9110 §8.4.1, RFC 8878): a stored
#: entry under one of them is sent as is to a client that accepts it.
HTTP_CODINGS = {codec.id: codec.name.encode() for codec in CODECS if codec.name in ("gzip", "zstd")}
_VARY = b"Vary: Accept-Encoding\r\n"


def accepts(header: bytes, coding: bytes) -> bool:
    """True when the Accept-Encoding *header* admits *coding* (by name or ``*``, q > 0)."""
    for part in header.lower().split(b","):
        name, _, params = part.partition(b";")
        name = name.strip()
        if name == coding or name == b"*":
            q = params.strip()
            if q.startswith(b"q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def packed_hit(group, key: str, accept: bytes) -> Reply | None:
    """A compressed group's hit for a client that sent Accept-Encoding, or None on a miss.

    The stored bytes with ``Content-Encoding`` when the client accepts the
    entry's codec (gzip, zstd), else the value decompressed; ``Vary`` either way.
    """
    entry = group.get_packed(key)
    if entry is None:
        return None
    payload, codec_id, _exp = entry
    coding = HTTP_CODINGS.get(codec_id)
    if coding is not None and accepts(accept, coding):
        return (200, OCTET_STREAM, payload, b"Content-Encoding: %b\r\n%b" % (coding, _VARY))
    return (200, OCTET_STREAM, group.value_of(entry), _VARY)


def wire_form(group, value: bytes) -> tuple[bytes, int]:
    """(bytes, codec id) of *value* as a peer is sent it: packed with *group*'s codec (none: as it is)."""
    if not group.codec.id:
        return value, 0
    codec_id, payload = pack(value, group.codec)
    return payload, codec_id


def get_response(payload: bytes, codec_id: int, expire_at: float) -> bytes:
    """The GetResponse bytes of an entry (*payload* under *codec_id*, expiring at *expire_at*,
    0: never) with its seconds left counted now: every peer GET's answer is made here."""
    return getwire.encode(payload, codec_id, expire_at, seconds_left(expire_at, time.time()) if expire_at else 0.0)


def is_batch_path(url: bytes) -> bool:
    """True when the request target *url* is a batch (public or peer): its body bound is the batch's."""
    path = url.partition(b"?")[0]
    return path == b"/api/batch" or (path.startswith(_PEER_PREFIX) and (
        path.endswith(b"/" + _BATCH_KEY) or path.endswith(b"/" + _WRITES_KEY)))


class Unauthorized(GeeCacheError):
    """A write or peer call without the configured bearer token: 401 with a challenge."""

    http_status = 401


class RouteError(GeeCacheError):
    """No route for the path (404), or not for this method (405, with the allowed ones)."""

    def __init__(self, status: int, reason: str, allowed=()) -> None:
        super().__init__(reason)
        self.http_status = status
        self.allowed = allowed


class BatchRefused(GeeCacheError):
    """A batch refused as a whole: malformed (400), past a bound (413), or for its keys' errors.

    *failed* names the keys that failed, ``(index, status, maybe_applied)`` each; when one of
    them may have been applied (a write its source had begun to commit: ``SourceBusyError``),
    ``maybe_applied`` is set and the answer says so as a single write's does (the
    ``X-Geecache-Maybe-Applied`` header), and per key in its body's ``items``.
    """

    def __init__(self, status: int, reason: str, failed: tuple = ()) -> None:
        super().__init__(reason)
        self.http_status = status
        self.failed = failed
        self.maybe_applied = any(maybe for _, _, maybe in failed)


class BatchBusy(GeeCacheError):
    """The worker's batches in flight hold their budget (``batch_inflight_bytes``): 503, Retry-After."""

    http_status = 503


#: The header of every 503 that a retry soon may cure.
RETRY_AFTER = b"Retry-After: 1\r\n"
#: The header of a 5xx whose write may have been applied (see ``SourceBusyError``).
MAYBE_APPLIED = MAYBE_APPLIED_HEADER.encode() + b": 1\r\n"
#: The reason of a batch refused for the worker's budget (``batch_inflight_bytes``).
BATCH_BUSY = ("this worker's batches in flight hold their budget (batch_inflight_bytes); retry later")


class Request:
    """What a handler needs of a request that is not a hit: built only off the hot path."""

    __slots__ = ("method", "query", "group", "key", "auth", "body")

    def __init__(self, method: str, query: bytes, group: bytes, key: bytes, auth: bytes | None,
                 body: bytes) -> None:
        self.method = method
        self.query = query    # raw, after '?'
        self.group = group    # raw path parts of the peer API (b"" elsewhere)
        self.key = key
        self.auth = auth      # the Authorization header, raw
        self.body = body


#: At most one line per this many seconds logs the cause of a 5xx answered without it.
CAUSE_LOG_INTERVAL = 5.0
_cause_logged = [float("-inf"), 0]  # [monotonic time of the last line, 5xx answers since]; the loop's thread


def _log_cause(exc: GeeCacheError) -> None:
    """Log why a 5xx was answered (a source's or a peer's error: the client gets only its class)."""
    now = time.monotonic()
    _cause_logged[1] += 1
    if now - _cause_logged[0] >= CAUSE_LOG_INTERVAL:
        log.warning("answered %d: %s (%d such answers since the last such line)", exc.http_status, exc,
                    _cause_logged[1])
        _cause_logged[0], _cause_logged[1] = now, 0


def _key_failure(i: int, exc: GeeCacheError, more: str = "", failed: tuple = ()) -> "BatchRefused":
    """The refusal of a whole batch for key #*i*'s error (its cause logged when a 5xx hides it);
    *failed*: every failed key, as ``BatchRefused`` takes them."""
    if exc.http_status >= 500 and exc.public is not None:
        _log_cause(exc)
    return BatchRefused(exc.http_status, f"key #{i}: {public_reason(exc)}{more}", failed)


def _maybe_applied(exc: BaseException) -> bool:
    return isinstance(exc, SourceBusyError) and exc.maybe_applied


def error_reply_for(exc: BaseException) -> Reply:
    """The reply to an exception a handler raised; a bug is logged with its traceback, answered 500."""
    if isinstance(exc, RouteError):
        extra = allow_line(exc.allowed) if exc.allowed else b""
        return error_reply(exc.http_status, str(exc), extra)
    if isinstance(exc, Unauthorized):
        return error_reply(401, str(exc), _CHALLENGE)
    if isinstance(exc, BatchBusy):
        return error_reply(503, str(exc), RETRY_AFTER)
    if isinstance(exc, BatchRefused) and exc.failed:
        # The keys that failed, each with its status and whether it may have been applied.
        items = [{"index": i, "status": status, "maybe_applied": maybe} for i, status, maybe in exc.failed]
        body = json.dumps({"error": str(exc), "items": items}).encode()
        return (exc.http_status, JSON, body, MAYBE_APPLIED if exc.maybe_applied else b"")
    if isinstance(exc, ReadOnlySourceError):
        # A 405 must say what is allowed: reads, for a group over a loader.
        return error_reply(exc.http_status, public_reason(exc), _READ_ONLY_ALLOW)
    if isinstance(exc, GeeCacheError):
        # public_reason: no key, group name or source path of the message reaches the client.
        if exc.http_status >= 500 and exc.public is not None:
            _log_cause(exc)
        if isinstance(exc, SourceBusyError):
            # Not applied: a retry soon may cure it.  Maybe applied: the client must know.
            return error_reply(503, public_reason(exc), MAYBE_APPLIED if exc.maybe_applied else RETRY_AFTER)
        return error_reply(exc.http_status, public_reason(exc))
    log.error("unhandled error on the data plane", exc_info=exc)
    return error_reply(500, "internal error")


class Router:
    """Resolves (method, path) to a handler and holds the handlers over *groups* (config order)."""

    def __init__(self, groups: dict, auth_token: str | None = None,
                 batch_max_keys: int = DEFAULT_BATCH_MAX_KEYS, batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
                 batch_inflight_bytes: int = DEFAULT_BATCH_INFLIGHT_BYTES) -> None:
        if not groups:
            raise ValueError("at least one group is needed")
        self._groups = groups
        self.default_group = next(iter(groups.values()))
        #: The default group's cache probe (``Group.get_cached``), bound once: the data plane's
        #: inline hit calls it for every ``GET /api?key=K``.
        self.probe_default = self.default_group.get_cached
        #: True when the default group keeps values compressed: a GET with Accept-Encoding then
        #: takes ``api_query``, which may pass the stored bytes through.
        self.default_packs = self.default_group.packs
        self._expected = auth.expected_bearer(auth_token)
        # The peer GET's fast path finds a group by its name as it appears in a target
        # with nothing escaped (a name needing an escape takes the route table).
        self._groups_by_raw = {name.encode(): group for name, group in groups.items()}
        # (ring version, ring, its X-Geecache-Ring line) of the ring last answered with.
        self._ring_seen: tuple = (None, None, b"")
        # (hit head, ring line, the loaded answer's head made of them): see ``loaded_head``.
        self._loaded_seen: tuple = (None, None, b"")
        self.batch_max_keys = int(batch_max_keys)
        self.batch_max_bytes = int(batch_max_bytes)
        self.batch_inflight_bytes = int(batch_inflight_bytes)
        # Bytes reserved by the batches this worker is serving, and of their answers still in
        # write buffers (guarded by the event loop's thread).
        self._batch_reserved = 0
        health = {"status": "ok", "pid": os.getpid(), "groups": list(groups)}
        self._healthz: Reply = (200, JSON, json.dumps(health).encode(), b"")
        api = {"GET": self.api_get, "HEAD": self.api_get, "PUT": self.api_put, "DELETE": self.api_delete}
        peer = {"GET": self.peer_get, "HEAD": self.peer_get, "PUT": self.peer_put,
                "DELETE": self.peer_delete}
        self._exact = {b"/api": (API, api, _API_METHODS),
                       b"/healthz": (HEALTHZ, {"GET": self.healthz, "HEAD": self.healthz}, _GET_METHODS),
                       b"/api/batch": (BATCH, {"POST": self.api_batch}, _POST),
                       b"/_geecache/_ring": (RING, {"GET": self.ring, "HEAD": self.ring}, _GET_METHODS),
                       RECENT_WRITES.encode(): (RECENT_WRITES, {"GET": self.peer_recent_writes}, _GET_ONLY),
                       b"/_geecache": (PEER_SUMMARY, {"GET": self.peer_summary}, frozenset({"GET"}))}
        #: () -> this host's figures (``workers.dashboard.HostView.summary``), set by the worker
        #: once its admin app exists; until then a peer gets the group names only.
        self.summary = lambda: {"groups": [{"name": name} for name in self._groups]}
        self._peer_batch = (PEER_BATCH, {"POST": self.peer_batch}, _POST)
        self._peer_writes = (PEER_WRITES, {"POST": self.peer_writes}, _POST)
        self._peer_warm = (PEER_WARM, {"POST": self.peer_warm}, _POST)
        self._peer_key = (PEER_KEY, peer, _API_METHODS)
        self._peer_group = (PEER_GROUP, {"POST": self.peer_invalidate}, _INVALIDATE_METHODS)

    # -- routing ---------------------------------------------------------------

    def resolve(self, method: str, path: bytes):
        """``(route label, handler, group part, key part)``; RouteError (404/405) when none."""
        group = key = b""
        entry = self._exact.get(path)
        if entry is None:
            if not path.startswith(_PEER_PREFIX):
                raise RouteError(404, "no such path")
            group, slash, key = path[len(_PEER_PREFIX):].partition(b"/")
            if not group or (slash and not key):
                raise RouteError(404, "no such path")
            if not slash:
                entry = self._peer_group
            elif key == _BATCH_KEY and method == "POST":
                entry = self._peer_batch
            elif key == _WRITES_KEY and method == "POST":
                entry = self._peer_writes
            elif key == _WARM_KEY and method == "POST":
                entry = self._peer_warm
            else:
                entry = self._peer_key
        label, handlers, allowed = entry
        handler = handlers.get(method)
        if handler is None:
            raise RouteError(405, f"method {method} not allowed; allowed: {', '.join(sorted(allowed))}",
                             allowed)
        return label, handler, group, key

    def route_label(self, path: bytes) -> str:
        """The metrics label of *path* (for requests refused before routing)."""
        if path in self._exact:
            return self._exact[path][0]
        if path.startswith(_PEER_PREFIX):
            if b"/" not in path[len(_PEER_PREFIX):]:
                return PEER_GROUP
            if path.endswith(b"/" + _WRITES_KEY):
                return PEER_WRITES
            if path.endswith(b"/" + _WARM_KEY):
                return PEER_WARM
            return PEER_BATCH if path.endswith(b"/" + _BATCH_KEY) else PEER_KEY
        return UNMATCHED

    # -- shared checks ---------------------------------------------------------

    def _authorize(self, header: bytes | None) -> None:
        if not auth.authorized(header, self._expected):
            raise Unauthorized(auth.REASON)

    def group_named(self, name: str | None):
        """The group called *name* (None: the default group); UnknownGroupError otherwise."""
        if name is None:
            return self.default_group
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(f"unknown group {name!r}; known: {', '.join(self._groups)}")
        return group

    def _peer_group_of(self, raw: bytes):
        name = decode(raw, plus=False)
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(f"unknown group {name!r}")
        return group

    @staticmethod
    def _key(params: dict) -> str:
        key = params.get("key")
        if key is None:
            raise InvalidKeyError("missing query parameter 'key'")
        return key

    # -- the public API --------------------------------------------------------

    def api_load(self, group, key: str, settled=None):
        """The miss path of ``GET /api``: the group's load (peer or source), as a reply.

        A Future when the group needs no task for it (a key another host owns, or
        one loading already: ``Group.load_started``) — of the value itself (see
        ``loaded_reply``) or of the reply — else a coroutine.
        The reply names the member list this host routes by (``X-Geecache-Ring``, its
        digest: a ring version is a counter local to each host): a client that follows
        the ring and sent the key here, to a host that may not own it, learns that its
        list differs.  Hits, answered inline, carry nothing.

        *settled*, if given, is called once with the returned Future when it is done: for the
        value's own Future from the fetch's own callback, no loop turn (``Group.load_started``),
        else as its done callback.
        """
        own = group.peers is self.default_group.peers
        try:
            started = group.load_started(key, settled if own else None)
        except GeeCacheError as exc:  # a bad key: answered as the task would have
            started = asyncio.get_running_loop().create_future()
            started.set_exception(exc)
            if settled is not None:
                started.add_done_callback(settled)
            return started
        if started is None:
            return self._api_loaded(group, key)
        if own:
            # The value's own Future: the data plane answers it with ``loaded_reply``, saving
            # a Future and a turn of the loop per miss.
            return started
        reply = started.get_loop().create_future()
        started.add_done_callback(partial(self._value_reply, group, reply))
        if settled is not None:
            reply.add_done_callback(settled)
        return reply

    def loaded_reply(self, value: bytes) -> Reply:
        """The answer to ``GET /api`` whose ``api_load`` Future gave *value* (bytes, not a reply)."""
        return (200, OCTET_STREAM, value, self._ring_line(self.default_group))

    def loaded_head(self, hit_head: bytes) -> bytes:
        """``loaded_reply``'s head up to ``Content-Length: ``, as ``render`` writes it: *hit_head*
        (the plane's, ending in that field name) with the ring line before the length.

        Made once per hit head (the sweep renews it with the Date) and ring, so a remote
        hit's answer is written as a hit is, not rendered from a reply tuple.
        """
        line = self._ring_line(self.default_group)
        seen = self._loaded_seen
        if seen[0] is not hit_head or seen[1] is not line:
            seen = self._loaded_seen = (hit_head, line, hit_head[:-len(CONTENT_LENGTH)] + line + CONTENT_LENGTH)
        return seen[2]

    async def _api_loaded(self, group, key: str) -> Reply:
        value = await group.load(key)
        return (200, OCTET_STREAM, value, self._ring_line(group))

    def _value_reply(self, group, reply: asyncio.Future, started: asyncio.Future) -> None:
        """*started* (a value's Future) is done: settle *reply* with the answer to send."""
        if reply.done():  # cancelled: the worker's shutdown is past its grace
            return
        if started.cancelled():
            reply.cancel()
        elif (error := started.exception()) is not None:
            reply.set_exception(error)
        else:
            reply.set_result((200, OCTET_STREAM, started.result(), self._ring_line(group)))

    def _ring_line(self, group) -> bytes:
        """The ``X-Geecache-Ring`` header line of *group*'s ring, made once per ring."""
        version, ring = group.peers.ring()
        seen = self._ring_seen
        if seen[0] != version or seen[1] is not ring:
            digest = members_digest(ring.nodes).encode()
            seen = self._ring_seen = (version, ring, b"X-Geecache-Ring: %b\r\n" % digest)
        return seen[2]

    def ring(self, req: Request) -> Reply:
        """``GET /_geecache/_ring``: the members, their ring version and vnode count, as JSON.

        What a client needs to route each key to its owner with the servers' own
        hash (``geecache.cluster.consistenthash.Ring``); behind the token, as the peer API.
        """
        self._authorize(req.auth)
        peers = self.default_group.peers
        version, ring = peers.ring()
        doc = {"version": version, "members": list(ring.nodes), "digest": members_digest(ring.nodes),
               "replicas": ring.replicas, "scheme": "https" if peers.tls else "http"}
        return (200, JSON, json.dumps(doc).encode(), b"")

    def api_query(self, query: bytes, accept: bytes | None = None, settled=None):
        """``GET /api?<query>``, the one place its query is read: the value (bytes) of a hit, a
        reply (a compressed group's hit for a client that sent *accept*, Accept-Encoding), or the
        miss's load (``api_load``, with *settled*).  Raises what the client got wrong (no key,
        an unknown group)."""
        key, name = api_params(query)
        if key is None:
            raise InvalidKeyError("missing query parameter 'key'")
        group = self.group_named(name)
        if not key:
            raise InvalidKeyError("key must not be empty")
        if accept is not None and group.packs:
            reply = packed_hit(group, key, accept)
            return self.api_load(group, key, settled) if reply is None else reply
        value = group.get_cached(key)
        return self.api_load(group, key, settled) if value is None else value

    def api_miss(self, key: str, settled):
        """The inline hit's miss on the default group: ``api_load`` with *settled*."""
        return self.api_load(self.default_group, key, settled)

    def api_get(self, req: Request):
        """``GET /api`` off the protocol's own fast path (a HEAD, or a pipelined GET)."""
        answer = self.api_query(req.query)
        return (200, OCTET_STREAM, answer, b"") if type(answer) is bytes else answer

    def api_put(self, req: Request):
        """Write the body through to the owner's source, then cache it (token when configured)."""
        self._authorize(req.auth)
        params = parse_query(req.query)
        key = self._key(params)
        group = self.group_named(params.get("group"))
        return self._put(group, key, req.body, params.get("ttl", 0))

    def start_put(self, key: str, body: bytes, auth: bytes | None, done):
        """``PUT /api?key=K`` on the default group without a coroutine, when it can be: the
        queued write (``Group.start_set``, which calls *done* once it is answered), or None
        when the write takes the full path (``api_put``'s); the token checked first."""
        self._authorize(auth)
        return self.default_group.start_set(key, body, done)

    def finish_put(self, key: str, body: bytes, version: int, write):
        """The rest of a ``start_put`` once its *write* is answered (``Group.finish_set``): None
        when acknowledged, else the coroutine that settles it."""
        return self.default_group.finish_set(key, body, version, write)

    def put(self, key: str, body: bytes):
        """``PUT /api?key=K`` on the default group by the full path (after ``start_put``)."""
        return self._put(self.default_group, key, body, 0)

    @staticmethod
    async def settled(rest) -> Reply:
        """The answer of a ``start_put`` write once *rest* (``Group.finish_set``'s) is done."""
        await rest
        return NO_CONTENT

    @staticmethod
    async def _put(group, key: str, value: bytes, ttl) -> Reply:
        # The ttl is the query's string: Group.set validates and converts it.
        await group.set(key, value, ttl)
        return NO_CONTENT

    def api_delete(self, req: Request):
        """Delete from the owner's source and cache; 404 when the source had no such key."""
        self._authorize(req.auth)
        params = parse_query(req.query)
        key = self._key(params)
        return self._delete(self.group_named(params.get("group")), key)

    @staticmethod
    async def _delete(group, key: str) -> Reply:
        if not await group.delete(key):
            raise NotFoundError(f"no key {key!r}")
        return NO_CONTENT

    def start_delete(self, key: str, auth: bytes | None, done):
        """``DELETE /api?key=K`` on the default group without a coroutine, as ``start_put``:
        the queued delete (``Group.start_delete``), or None for the full path."""
        self._authorize(auth)
        return self.default_group.start_delete(key, done)

    def finish_delete(self, key: str, version: int, write):
        """The rest of a ``start_delete`` once its *write* is answered (``Group.finish_delete``):
        whether the source had the key when acknowledged, else the coroutine that settles it."""
        return self.default_group.finish_delete(key, version, write)

    def delete(self, key: str):
        """``DELETE /api?key=K`` on the default group by the full path (after ``start_delete``)."""
        return self._delete(self.default_group, key)

    @staticmethod
    def deleted_reply(key: str, existed: bool) -> Reply:
        """The answer of an acknowledged delete: 204, or 404 when the source had no *key*."""
        return NO_CONTENT if existed else error_reply_for(NotFoundError(f"no key {key!r}"))

    @staticmethod
    async def deleted(key: str, rest) -> Reply:
        """The answer of a ``start_delete`` delete once *rest* (``Group.finish_delete``'s
        coroutine, whether the source had the key) is done."""
        return Router.deleted_reply(key, await rest)

    def healthz(self, req: Request) -> Reply:
        """Liveness: this worker answers, with its pid and groups."""
        return self._healthz

    def peer_summary(self, req: Request) -> Reply:
        """This host's figures for another host's cluster overview (peers only: the token)."""
        self._authorize(req.auth)
        return (200, JSON, json.dumps(self.summary()).encode(), b"")

    # -- the peer API (served here, never forwarded: invariant 3) --------------

    def peer_get_fast(self, url: bytes, header: bytes | None):
        """``GET /_geecache/<group>/<key>`` answered without a Request: the GetResponse bytes of
        a hit, the load's coroutine on a miss, or None when the route table must answer.

        The data plane calls it for every peer GET, as it probes the cache for a
        public one: no Request, no reply tuple, no message object for a hit.
        None — a query (a handoff ask), an escape, an unknown group, a wrong
        token (*header*: the raw Authorization value), a bad key — counts nothing, so ``peer_get`` counts and answers
        it (401, 404, 400) as before.
        """
        if b"%" in url or b"?" in url:
            return None
        name, _, raw_key = url[len(_PEER_PREFIX):].partition(b"/")
        group = self._groups_by_raw.get(name)
        if group is None or not raw_key or not auth.authorized(header, self._expected):
            return None
        try:
            return self._peer_answer(group, raw_key.decode())
        except (GeeCacheError, UnicodeDecodeError):  # the route table says what was wrong
            return None

    def _peer_answer(self, group, key: str):
        """The GetResponse bytes of *key* when cached here, else the coroutine that loads it."""
        if group.packs:  # the stored bytes and codec id, never compressed again
            entry = group.get_local_packed(key)
            if entry is None:
                return self._peer_load(group, key)
            return get_response(*entry)
        hit = group.get_local_cached(key)
        if hit is None:
            return self._peer_load(group, key)
        return get_response(*wire_form(group, hit[0]), hit[1])

    def peer_get(self, req: Request):
        """A key this host serves for a peer: answered at once on a hit, else loaded here."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        key = decode(req.key, plus=False)
        query = parse_query(req.query) if req.query else None
        if query and query.get("handoff"):
            # A new owner asking after a ring change: only the cache answers, never the source.
            hit = group.get_handoff_cached(key)
            if hit is None and holds_nothing_for(group, query.get("from")):
                return _COLD_MISS
            if hit is None:
                raise NotFoundError(f"group {group.name!r}: {key!r} not cached here")
            return (200, PROTOBUF, get_response(*wire_form(group, hit[0]), hit[1]), b"")
        answer = self._peer_answer(group, key)
        return (200, PROTOBUF, answer, b"") if type(answer) is bytes else answer

    async def _peer_load(self, group, key: str) -> Reply:
        value, expire_at = await group.load_local(key)
        # What the load just stored (compressed once), for a group that keeps values packed.
        entry = group.stored_entry(key) if group.packs else None
        body = get_response(*wire_form(group, value), expire_at) if entry is None else get_response(*entry)
        return (200, PROTOBUF, body, b"")

    @staticmethod
    def _message(body: bytes, message):
        try:
            message.ParseFromString(body)
        except DecodeError:
            raise CodecError("malformed protobuf body") from None
        return message

    def peer_put(self, req: Request):
        """The owner's half of a set (versioned, refused after its deadline): a WriteResponse."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        return self._peer_write(serve_set, group, decode(req.key, plus=False), req.body)

    def peer_delete(self, req: Request):
        """The owner's half of a delete (its body may be empty: an older peer's): a WriteResponse."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        return self._peer_write(serve_delete, group, decode(req.key, plus=False), req.body)

    @staticmethod
    async def _peer_write(serve, group, key: str, body: bytes) -> Reply:
        return (200, PROTOBUF, await serve(group, key, body), b"")

    def peer_invalidate(self, req: Request) -> Reply:
        """Drop this host's copies of the keys the owner changed (synchronous: no task)."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        msg = self._message(req.body, InvalidateRequest())
        group.invalidate(list(msg.keys))
        return NO_CONTENT

    def peer_recent_writes(self, req: Request) -> Reply:
        """The keys this host wrote in the last ``within`` seconds, for a host that was away."""
        self._authorize(req.auth)
        raw = parse_query(req.query).get("within") if req.query else None
        try:
            within = -1.0 if raw is None else float(raw)
        except ValueError:
            within = -1.0
        if not 0 <= within <= 86400:  # also refuses NaN
            raise InvalidKeyError("query parameter 'within' must be seconds, 0 to 86400")
        write_log = self.default_group.peers.write_log
        if write_log is None:  # a host that keeps no log cannot vouch for any window
            return (200, PROTOBUF, RecentWrites(covered=False).SerializeToString(), b"")
        covered, written = write_log.since(within)
        msg = RecentWrites(covered=covered, groups=[InvalidateRequest(group=g, keys=sorted(keys))
                                                    for g, keys in written.items()])
        return (200, PROTOBUF, msg.SerializeToString(), b"")

    # -- batches ---------------------------------------------------------------

    def _batch_items(self, msg, group: str) -> list:
        """The checked items of BatchRequest *msg*; its ``group`` field, when set, must be *group*."""
        if msg.group and msg.group != group:
            raise BatchRefused(400, "the body's group is not the group the request names")
        if len(msg.items) > self.batch_max_keys:
            raise BatchRefused(413, f"a batch of {len(msg.items)} keys is over batch_max_keys "
                                    f"({self.batch_max_keys})")
        for i, item in enumerate(msg.items):
            try:
                check_key(item.key)
            except InvalidKeyError as exc:
                raise _key_failure(i, exc) from None
        return list(msg.items)

    def _batch_reserve(self, group, body: bytes, keys: int, values: bool = True) -> int:
        """Reserve a batch's bound in this worker's budget; BatchBusy (503) when it is spent.

        The bound: its body, and (*values*) what its values may take (each up
        to the item limit, all of them at most batch_max_bytes).  A batch is
        admitted whatever its bound when none is in flight, so one that is
        larger than the budget is still served, alone.
        """
        reserve = len(body) + (min(self.batch_max_bytes, keys * group.item_limit) if values else len(body))
        if not self.batch_room(reserve):
            raise BatchBusy(BATCH_BUSY)
        self._batch_reserved += reserve
        return reserve

    def batch_holding(self, size: int) -> None:
        """A batch answer of *size* bytes waits in a write buffer (negative: it left)."""
        self._batch_reserved += size

    def batch_room(self, size: int) -> bool:
        """Whether a batch of *size* bytes fits this worker's budget now (always, when none is in flight)."""
        return not self._batch_reserved or self._batch_reserved + size <= self.batch_inflight_bytes

    async def _within_reserve(self, reserve: int, work) -> Reply:
        try:
            return await work()
        finally:
            self._batch_reserved -= reserve

    def api_batch(self, req: Request):
        """``POST /api/batch?op=get|set|delete[&group=G]``: many keys of one group in one request.

        The body is a BatchRequest; a get answers a BatchResponse (one item
        per key, in order: status 200 with the value, or 404), a delete one
        whose status says whether the key existed, a set 204.  Writes need
        the token.  A key that fails refuses the whole answer with its error.
        """
        params = parse_query(req.query)
        op = params.get("op", "get")
        if op not in _BATCH_OPS:
            raise BatchRefused(400, "op must be one of get, set, delete")
        if op != "get":
            self._authorize(req.auth)
        msg = self._message(req.body, BatchRequest())
        # The body may name the group instead of the query (as a peer's does); not a different one.
        group = self.group_named(params.get("group", msg.group or None))
        items = self._batch_items(msg, group.name)
        reserve = self._batch_reserve(group, req.body, len(items), values=op != "delete")
        try:
            if op == "get":
                keys = [item.key for item in items]
                return self._within_reserve(reserve, lambda: self._batch_get(group, keys))
            if op == "delete":
                keys = [item.key for item in items]
                return self._within_reserve(reserve, lambda: self._batch_delete(group, keys))
            values = {}
            for i, item in enumerate(items):
                try:
                    # Bounded by the item limit: a forged size must not make us allocate 64 MiB.
                    values[item.key] = (unpack(item.codec, item.value, group.item_limit), check_ttl(item.ttl))
                except GeeCacheError as exc:
                    raise _key_failure(i, exc) from None
            return self._within_reserve(reserve, lambda: self._batch_set(group, values))
        except BaseException:
            self._batch_reserved -= reserve  # refused before its coroutine was made
            raise

    @staticmethod
    def _first_failure(keys: list[str], results) -> None:
        failed: list[tuple[int, GeeCacheError]] = []
        for i, result in enumerate(results):
            if isinstance(result, GeeCacheError):
                failed.append((i, result))
            elif isinstance(result, BaseException):
                raise result  # a bug or a cancellation
        if failed:
            # A key that may have been applied answers for the batch: its client must not
            # send the batch to another host (as a single write's 503 says).
            i, exc = next(((i, r) for i, r in failed if _maybe_applied(r)), failed[0])
            raise _key_failure(i, exc, f" ({len(failed)} of {len(keys)} keys failed; the others were done)",
                               tuple((j, r.http_status, _maybe_applied(r)) for j, r in failed))

    async def _batch_get(self, group, keys: list[str]) -> Reply:
        found, errors = await group.get_many(keys)
        if errors:
            i = next(i for i, key in enumerate(keys) if key in errors)
            exc = errors[keys[i]]
            raise _key_failure(i, exc)
        size = sum(len(found[key]) for key in keys if key in found)
        if size > self.batch_max_bytes:
            raise BatchRefused(413, f"the values of this batch take {size} bytes, over batch_max_bytes "
                                    f"({self.batch_max_bytes}); ask for fewer keys")
        msg = BatchResponse()
        add = msg.items.add  # in place: cheaper than BatchItems copied in
        for key in keys:
            value = found.get(key)
            if value is None:
                add(key=key, status=404)
            else:
                add(key=key, value=value, status=200)
        return (200, PROTOBUF, msg.SerializeToString(), b"")

    @classmethod
    async def _batch_set(cls, group, values: dict) -> Reply:
        keys = list(values)  # a key given twice was kept once, its last value
        cls._first_failure(keys, await group.set_many(values))
        return NO_CONTENT

    @classmethod
    async def _batch_delete(cls, group, keys: list[str]) -> Reply:
        unique = list(dict.fromkeys(keys))
        results = await group.delete_many(unique)
        cls._first_failure(unique, results)
        existed = {key: result.applied and result.existed for key, result in zip(unique, results)}
        msg = BatchResponse()
        for key in keys:
            msg.items.add(key=key, status=200 if existed[key] else 404)
        return (200, PROTOBUF, msg.SerializeToString(), b"")

    def peer_batch(self, req: Request):
        """A peer's batch get of keys this host owns: served here, never forwarded (invariant 3)."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        keys = [item.key for item in self._batch_items(self._message(req.body, BatchRequest()), group.name)]
        answer = self._peer_batch_cached(group, keys, len(req.body))
        if answer is not None:
            # A done Future, so the data plane counts the answer against the budget while
            # its client leaves it unread, as a batch answered by a task.
            reply = asyncio.get_running_loop().create_future()
            reply.set_result((200, PROTOBUF, answer, b""))
            return reply
        reserve = self._batch_reserve(group, req.body, len(keys))
        return self._within_reserve(reserve, lambda: self._peer_batch_get(group, keys))

    def peer_batch_fast(self, url: bytes, header: bytes | None, body: bytes, hits=None) -> bytes | None:
        """``POST /_geecache/<group>/_batch`` of keys all cached here, answered without a Request:
        the BatchResponse bytes, or None when the route table must answer (a miss among the
        keys, anything to refuse or decode: as ``peer_get_fast``, nothing is counted then).

        *hits*: the plane's compiled hit path, which answers the default group's common
        batch (``HitPath.peer_hits``) with the bytes this method would make."""
        if b"%" in url or b"?" in url:
            return None
        name = url[len(_PEER_PREFIX):-len(_BATCH_KEY) - 1]
        group = self._groups_by_raw.get(name)
        if group is None or not auth.authorized(header, self._expected):
            return None
        if hits is not None and group is self.default_group and not self._batch_reserved \
                and not group.packs and not group.codec.id:
            # Nothing reserved, so batch_room holds; values go as stored (no codec), as below.
            answer = hits.peer_hits(body, name, *group.peers.owned_vnodes(), self.batch_max_keys,
                                    self.batch_max_bytes)
            if answer is False:  # a key not cached: the route table's task, as cached_for_peer's None
                return None
            if answer is not None:
                group.stats.add("peer_requests")  # as cached_for_peer counts
                return answer
        try:
            msg = BatchRequest.FromString(body)
        except DecodeError:
            return None
        if (msg.group and msg.group != group.name) or len(msg.items) > self.batch_max_keys:
            return None
        keys = [item.key for item in msg.items]
        try:
            for key in keys:
                check_key(key)
        except InvalidKeyError:
            return None
        return self._peer_batch_cached(group, keys, len(body))

    def _peer_batch_cached(self, group, keys: list[str], body_size: int) -> bytes | None:
        """The BatchResponse of a peer batch of keys all cached here, built at once (a peer's
        fetches of one loop turn come so); None when one is not cached, the values are over
        ``batch_max_bytes`` or the budget has no room: then the task, as for any batch."""
        if not self.batch_room(body_size + min(self.batch_max_bytes, len(keys) * group.item_limit)):
            return None
        entries = group.cached_for_peer(keys)
        if entries is None or sum(len(entry[0]) for entry in entries) > self.batch_max_bytes:
            return None
        now = time.time()
        packs = group.packs
        hits = []
        for entry in entries:
            payload, codec_id, expire_at = entry
            if not packs:  # the value, packed with the group's codec (none: as it is)
                payload, codec_id = wire_form(group, group.value_of(entry))
            hits.append((payload, codec_id, expire_at, seconds_left(expire_at, now)))
        return batchwire.encode_hits(hits)  # the BatchResponse bytes, written by hand

    def peer_writes(self, req: Request):
        """A peer's batch of writes to keys this host owns: applied here in one transaction."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        return self._peer_write_batch(group, req.body)

    def peer_warm(self, req: Request):
        """A joining host's warm-up ask: this host's hottest entries of the keys that move to it."""
        self._authorize(req.auth)
        group = self._peer_group_of(req.group)
        return self._peer_warm_answer(group, req.body)

    @staticmethod
    async def _peer_warm_answer(group, body: bytes) -> Reply:
        await asyncio.sleep(0)  # a task, after what this turn of the loop has parsed: low priority
        return (200, PROTOBUF, serve_warm(group, body), b"")

    async def _peer_write_batch(self, group, body: bytes) -> Reply:
        return (200, PROTOBUF, await serve_write_batch(group, body, self.batch_max_keys), b"")

    async def _peer_batch_get(self, group, keys: list[str]) -> Reply:
        answers = await group.get_local_many(keys)
        msg = BatchResponse()
        add = msg.items.add
        size = 0
        now = time.time()
        for status, value, expire_at, error in answers:
            if status == 200:
                size += len(value)
                if size > self.batch_max_bytes:
                    # The asker's answer would be a 413 anyway; keep this one bounded.
                    add(status=413, error="over batch_max_bytes")
                    continue
                payload, codec_id = wire_form(group, value)
                add(status=200, value=payload, codec=codec_id, expire_at=expire_at,
                    ttl_left=seconds_left(expire_at, now))
            else:
                add(status=status, error=error)
        return (200, PROTOBUF, msg.SerializeToString(), b"")
