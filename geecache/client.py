"""Clients for a GeeCache cluster's HTTP API: ``Client`` (blocking) and ``AsyncClient``.

Both take one or more base URLs of GeeCache hosts.  Any host answers for any
key (the cluster routes to the owner), so a host that is down or answers 5xx
is skipped and the next one tried; the client then starts at the host that
last answered, so a dead first host costs one failed connect, not one per
call.  Answers map to named errors: 404 -> ``NotFoundError``, other 4xx ->
``RefusedError`` (not retried elsewhere: every host would say the same),
nothing usable from any host -> ``UnavailableError``.

    with geecache.Client(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) as c:
        c.set("Tom", b"630", group="scores")
        c.get("Tom", group="scores")   # b"630"
        c.get("Ann", group="scores", default=None)         # None: no such key
        c.set_many({"Tom": b"630", "Ann": b"1"}, group="scores")
        c.get_many(["Tom", "Ann", "Bob"], group="scores")  # {"Tom": b"630", "Ann": b"1"}
        c.get_many(["Tom", "Bob"], fill=None)              # {"Tom": ..., "Bob": None}

Batches go in one ``POST /api/batch`` each (protobuf ``BatchRequest``, see
docs/operations.md); the host serves its cached keys and asks each owner once
for the rest.

Values are bytes (a str is sent as UTF-8) unless the client is given a
``serializer`` and ``deserializer`` (``geecache.serde``: TEXT, JSON, PICKLE):
``Client(url, **serde.JSON)`` stores and returns JSON documents.

Timeouts: *timeout* bounds each connect and each socket read, per host tried;
*connect_timeout* and *read_timeout* set the two apart.  *retries* passes more
over the hosts after every host failed, *backoff* seconds apart at first and
doubling (at most RETRY_BACKOFF_CAP); a write that reached a host which then
failed, or that a host answered 5xx saying it may have been applied
(``X-Geecache-Maybe-Applied``), is never sent again: ``UnavailableError`` with
``maybe_applied=True``.  *pool_size* idle
keep-alive connections are kept per host.

``stats()`` reads ``/stats`` from a host's admin port, not its data port:
*admin_urls* names them, by default each data URL's host at the port + 1000
over plain http (the server's defaults; the admin port listens on loopback
unless ``--admin-host`` says otherwise).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar, overload
from urllib.parse import quote, urlencode, urlsplit

from .auth import bearer
from .config import ADMIN_PORT_OFFSET
from geecache.cluster.consistenthash import Ring, members_digest
from .errors import MAYBE_APPLIED_HEADER, ConfigError, NotFoundError, RefusedError, UnavailableError
from .limits import as_bytes, check_key, check_ttl

__all__ = ["Client", "AsyncClient"]

#: Longest server error text kept in an exception message.
_REASON_CHARS = 300

#: The default of ``default``/``fill``: a miss raises (get) or is left out (get_many).
_MISSING: Any = object()
#: Longest pause between two passes over the hosts (seconds), however many retries.
RETRY_BACKOFF_CAP = 2.0
#: Where a host says which members its ring has (the data port; behind the token).
RING_PATH = "/_geecache/_ring"
#: The header in which a host that loaded a key names the member list it routes by (its digest).
RING_HEADER = "X-Geecache-Ring"
#: Least seconds between two reads of the member list that answers' headers ask for.
RING_RECHECK = 1.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Host:
    """One parsed base URL."""

    url: str
    scheme: str
    host: str
    port: int
    prefix: str  # path prefix when the API sits behind a proxy path, else ""


def _parse_urls(urls: str | Sequence[str]) -> list[_Host]:
    if isinstance(urls, str):
        urls = [urls]
    hosts = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("urls", f"{url!r} is not an http:// or https:// base URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigError("urls", f"{url!r} has an invalid port") from None
        hosts.append(_Host(url.rstrip("/"), parts.scheme, parts.hostname, port, parts.path.rstrip("/")))
    if not hosts:
        raise ConfigError("urls", "at least one base URL is required")
    return hosts


def default_admin_url(host: _Host) -> str:
    """The admin base URL a host has by default: same address, port + 1000, plain http."""
    name = f"[{host.host}]" if ":" in host.host else host.host
    return f"http://{name}:{host.port + ADMIN_PORT_OFFSET}"


def _api_target(key: str, group: str | None, ttl: float = 0) -> str:
    check_key(key)  # a bad key is the caller's bug: say so before any network round trip
    params = {"key": key} if group is None else {"key": key, "group": group}
    if check_ttl(ttl):
        params["ttl"] = repr(float(ttl))
    # quote (not quote_plus): a space must arrive as a space, not as "+".
    return "/api?" + urlencode(params, quote_via=quote, safe="")


def _batch_target(op: str, group: str | None) -> str:
    params = {"op": op} if group is None else {"op": op, "group": group}
    return "/api/batch?" + urlencode(params, quote_via=quote, safe="")


def _batch_body(keys, values=None, ttl: float | Mapping[str, float] = 0, dumps: Callable = as_bytes) -> bytes:
    """A BatchRequest of *keys* (with *values*, for a set), keys checked before any round trip.

    *ttl* is one TTL for every key, or a mapping key -> TTL (keys it lacks: 0, the group's).
    """
    from .geecachepb import BatchRequest

    if isinstance(keys, str):
        raise TypeError("keys must be a list of keys, not one str")
    if isinstance(ttl, Mapping):
        ttls = {k: check_ttl(v) for k, v in ttl.items()}
        one = 0.0
    else:
        ttls, one = {}, check_ttl(ttl)
    msg = BatchRequest()
    add = msg.items.add  # add() in place: a third cheaper than building BatchItems to copy in
    for key in keys:
        check_key(key)
        if values is None:
            add(key=key)
        else:
            add(key=key, value=dumps(values[key]), ttl=ttls.get(key, one))
    return msg.SerializeToString()


def _batch_items(body: bytes):
    from .geecachepb import BatchResponse

    try:
        return BatchResponse.FromString(body).items
    except Exception:  # DecodeError: not our server's answer
        raise RefusedError(200, "POST /api/batch did not answer with a BatchResponse") from None


def _found(keys, body: bytes, fill, loads: Callable | None = None) -> dict:
    out = {item.key: (item.value if loads is None else loads(item.value))
           for item in _batch_items(body) if item.status == 200}
    if fill is not _MISSING:
        for key in keys:
            out.setdefault(key, fill)
    return out


def _deleted_count(body: bytes) -> int:
    return sum(1 for item in _batch_items(body) if item.status == 200)


def _reason(body: bytes, phrase: str) -> str:
    """The server's ``{"error": ...}`` text, else the body, else the status phrase."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"][:_REASON_CHARS]
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return (text or phrase or "no reason given")[:_REASON_CHARS]


class _ServerFault(Exception):
    """A 5xx: this host could not serve the request; another one may, unless ``maybe_applied``
    (the answer said the write may have been applied: it must not be sent again)."""

    def __init__(self, message: str, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


def _answer(status: int, body: bytes, phrase: str, maybe_applied: str | None = None) -> bytes:
    """*body* for a 2xx; the named error for a 4xx; _ServerFault for anything else
    (*maybe_applied*: the answer's MAYBE_APPLIED_HEADER)."""
    if 200 <= status < 300:
        return body
    if status == 404:
        raise NotFoundError(_reason(body, phrase))
    if 400 <= status < 500:
        raise RefusedError(status, _reason(body, phrase))
    raise _ServerFault(f"HTTP {status}: {_reason(body, phrase)}", maybe_applied == "1" or _items_maybe_applied(body))


def _items_maybe_applied(body: bytes) -> bool:
    """A refused batch write's answer names a key that may have been applied (its ``items``,
    each ``{"index", "status", "maybe_applied"}``): as the header says of the whole answer,
    told here too, so a proxy that drops the header does not make the batch go elsewhere."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    items = doc.get("items") if isinstance(doc, dict) else None
    return isinstance(items, list) and any(isinstance(item, dict) and item.get("maybe_applied") is True
                                           for item in items)


def _deleted(body: bytes) -> bool:
    """A 2xx DELETE's answer: the server's ``deleted`` flag when it sends one, else True."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return True
    if isinstance(doc, dict) and isinstance(doc.get("deleted"), bool):
        return doc["deleted"]
    return True


def _stats_doc(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RefusedError(200, "GET /stats did not answer with a JSON object")
    return doc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class _RingView:
    """The members a ring-following client routes by, as one host last described them."""

    version: int                       # the answering host's own counter (not comparable)
    ring: Ring | None                 # None: no members known (route as a plain client)
    hosts: dict                        # member name -> _Host
    digest: str = ""                   # members_digest of the members: comparable across hosts

    @staticmethod
    def parse(body: bytes) -> "_RingView":
        """The view in a ``GET /_geecache/_ring`` answer; RefusedError when it is not one."""
        try:
            doc = json.loads(body)
            version, members = int(doc["version"]), list(doc["members"])
            replicas, scheme = int(doc["replicas"]), doc["scheme"]
            if scheme not in ("http", "https") or not all(isinstance(m, str) and m for m in members):
                raise ValueError(scheme)
            hosts = {m: _parse_urls([m if "://" in m else f"{scheme}://{m}"])[0] for m in members}
            ring = Ring(replicas)
            ring.set_nodes(members)
        except (ValueError, KeyError, TypeError, ConfigError):
            raise RefusedError(200, f"GET {RING_PATH} did not answer with a member list") from None
        return _RingView(version, ring if members else None, hosts, members_digest(members))


_NO_RING = _RingView(-1, None, {})


def _seconds(name: str, value, default: float) -> float:
    """*value* (None: *default*) as a timeout: ConfigError naming *name* unless > 0."""
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigError(name, f"must be a number of seconds > 0, got {value!r}")
    return float(value)


class _Failover:
    """What both clients share: host order, the 'last host that answered' memory, timeouts,
    retries and the value serializers (see the module docstring)."""

    def __init__(self, urls: str | Sequence[str], token: str | None, timeout: float,
                 admin_urls: str | Sequence[str] | None = None, *, connect_timeout: float | None = None,
                 read_timeout: float | None = None, retries: int = 0, backoff: float = 0.05,
                 serializer: Callable[[Any], bytes] | None = None,
                 deserializer: Callable[[bytes], Any] | None = None,
                 ring: bool = False, ring_refresh: float = 30.0) -> None:
        self._timeout = _seconds("timeout", timeout, 2.0)
        self._ring_refresh = _seconds("ring_refresh", ring_refresh, 30.0)
        self._connect_timeout = _seconds("connect_timeout", connect_timeout, self._timeout)
        self._read_timeout = _seconds("read_timeout", read_timeout, self._timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError("retries", f"must be a whole number >= 0, got {retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff < float("inf"):
            raise ConfigError("backoff", f"must be a number of seconds >= 0, got {backoff!r}")
        for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
            if fn is not None and not callable(fn):
                raise ConfigError(name, f"must be callable, got {type(fn).__name__}")
        self._hosts = _parse_urls(urls)
        self._admin_hosts = _parse_urls(admin_urls if admin_urls else
                                        [default_admin_url(h) for h in self._hosts])
        self._headers = {"Authorization": bearer(token)} if token else {}
        self._retries, self._backoff = retries, float(backoff)
        self._dumps: Callable[[Any], bytes] = serializer if serializer is not None else as_bytes
        self._loads = deserializer
        # An int assignment is atomic under the GIL and a stale read only changes which
        # host is tried first, so threads share it without a lock.
        self._preferred = 0
        #: Follow the ring: send each key to its owner (see ``_route``).
        self._follow_ring = bool(ring)
        # The view is rebound whole (never changed in place), so readers need no lock;
        # _view_due (monotonic) says when to ask for it again, 0: at the next request.
        self._view = _NO_RING
        self._view_due = 0.0
        self._view_read = 0.0  # monotonic time of the last read of the member list

    def _order(self) -> list[int]:
        start = self._preferred
        return [(start + i) % len(self._hosts) for i in range(len(self._hosts))]

    def _pauses(self) -> list[float | None]:
        """The pause before each further pass over the hosts; None ends the list (no more)."""
        return [min(self._backoff * 2 ** i, RETRY_BACKOFF_CAP) for i in range(self._retries)] + [None]

    def _value(self, data: bytes) -> Any:
        return data if self._loads is None else self._loads(data)

    def _owner(self, key: str) -> str | None:
        """The member that owns *key* by the view, or None (no ring: any host will do)."""
        ring = self._view.ring
        return ring.get(key) if ring is not None else None

    def _by_owner(self, keys) -> dict:
        """*keys* split by owner (None: no ring), each list in the order given."""
        out: dict = {}
        for key in keys:
            out.setdefault(self._owner(key), []).append(key)
        return out

    def _note_ring(self, header: str | None) -> None:
        """A host answered naming its member list: another list than the view's means ask again
        (at most every RING_RECHECK seconds, so hosts that disagree for a moment cause no storm)."""
        if header and self._follow_ring and header != self._view.digest:
            self._view_due = min(self._view_due, self._view_read + RING_RECHECK)

    def _refresh_due(self) -> bool:
        return self._follow_ring and time.monotonic() >= self._view_due


class _HostPool:
    """Idle keep-alive connections to one host, at most *size* kept; ``_lock`` guards ``_idle``."""

    def __init__(self, host: _Host, timeout: float, ssl_context: ssl.SSLContext | None, size: int) -> None:
        self._host = host
        self._timeout = timeout  # the connect timeout: Client._send sets the read timeout
        self._ssl_context = ssl_context
        self._size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was reused (a reused one may still be closed under us).

        An idle connection the server has closed meanwhile (its keep-alive
        timeout, a restart) is readable: it is dropped here, before a request
        is written to it, so a write never has to be sent a second time.
        """
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn = self._idle.pop()
            if not _dropped(conn):
                return conn, True
            conn.close()
        h = self._host
        if h.scheme == "https":
            return http.client.HTTPSConnection(h.host, h.port, timeout=self._timeout, context=self._ssl_context), False
        return http.client.HTTPConnection(h.host, h.port, timeout=self._timeout), False

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when the idle *conn* is unusable: readable (the server's FIN, or bytes nobody asked for)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed or bad descriptor
        return True


def _replayable(method: str, target: str) -> bool:
    """Whether a request may be sent again after a connection failed under it: reads only.

    A write (PUT, DELETE, a batch set or delete) may have been applied by a
    host that answered too late or died after applying it; sent again it
    would be applied again, ordered after writes made meanwhile.
    """
    return method in ("GET", "HEAD") or target.startswith("/api/batch?op=get")


class _Delivered(Exception):
    """A request failed after it was written: the host may have applied it (wraps the cause)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(_describe(cause))
        self.cause = cause


class Client(_Failover):
    """Blocking client with a keep-alive connection pool per host; safe to share between threads.

    *urls*: one base URL or several (``http://127.0.0.1:8001``); *token* is
    sent as ``Authorization: Bearer``; *timeout* bounds each connect and each
    socket read, per host tried; *admin_urls*: where ``stats`` asks (see the
    module's docstring).

    A host that refuses the connection (or fails to connect in time) is
    skipped for the next.  A read is sent again — once more on a fresh
    connection, or to the next host — only when nothing says the first try
    was answered; a write is never sent twice: once written, a failure
    (a timeout, a reset) raises ``UnavailableError`` at once, since the host
    may have applied it.  A timed-out read is not retried on the same host.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 8,
        admin_urls: str | Sequence[str] | None = None,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retries: int = 0,
        backoff: float = 0.05,
        serializer: Callable[[Any], bytes] | None = None,
        deserializer: Callable[[bytes], Any] | None = None,
        ring: bool = False,
        ring_refresh: float = 30.0,
    ) -> None:
        super().__init__(urls, token, timeout, admin_urls, connect_timeout=connect_timeout,
                         read_timeout=read_timeout, retries=retries, backoff=backoff,
                         serializer=serializer, deserializer=deserializer, ring=ring,
                         ring_refresh=ring_refresh)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError("pool_size", f"must be a whole number >= 1, got {pool_size!r}")
        self._ssl_context, self._pool_size = ssl_context, pool_size
        self._pools = [_HostPool(h, self._connect_timeout, ssl_context, pool_size) for h in self._hosts]
        self._admin_pools = [_HostPool(h, self._connect_timeout, ssl_context, 1) for h in self._admin_hosts]
        # member -> its pool, for the owners a ring-following client sends to; _ring_lock
        # guards it and the refresh (one thread asks for the view at a time).
        self._member_pools: dict[str, _HostPool] = {}
        self._ring_lock = threading.Lock()

    def _route(self, key: str) -> str | None:
        """The owner to send *key* to first (None: the plain host order); refreshes the view."""
        if self._refresh_due():
            self._refresh_ring()
        return self._owner(key)

    def _refresh_ring(self) -> None:
        """Ask a host for its member list (bounded as any request); keep the old view on failure."""
        if not self._ring_lock.acquire(blocking=False):
            return  # another thread is asking: route by the view there is meanwhile
        try:
            self._view_read = time.monotonic()
            self._view_due = self._view_read + self._ring_refresh
            try:
                view = _RingView.parse(self._pass("GET", RING_PATH, None, False, None))
            except (UnavailableError, RefusedError, NotFoundError):
                return  # a stale view only costs peer hops; the next refresh tries again
            for member in view.hosts.keys() - self._member_pools.keys():
                self._member_pools[member] = _HostPool(view.hosts[member], self._connect_timeout,
                                                       self._ssl_context, self._pool_size)
            for member in self._member_pools.keys() - view.hosts.keys():
                self._member_pools.pop(member).close()
            self._view = view
        finally:
            self._ring_lock.release()

    @overload
    def get(self, key: str, group: str | None = None) -> bytes: ...
    @overload
    def get(self, key: str, group: str | None = None, default: _T = ...) -> bytes | _T: ...

    def get(self, key, group=None, default=_MISSING):
        """The value of *key*; NotFoundError when the source has none, unless *default* is given
        (``default=None`` reads a miss as None, as pymemcache and redis-py do).  With a
        *deserializer* the value is what it returns (the annotations assume bytes)."""
        target = _api_target(key, group)
        try:
            return self._value(self._request("GET", target, owner=self._route(key)))
        except NotFoundError:
            if default is _MISSING:
                raise
            return default

    def get_many(self, keys, group: str | None = None, fill=_MISSING) -> dict:
        """``{key: value}`` of the *keys* found, in one request; with *fill* given, every key is
        there and a missing one maps to *fill* (``fill=None``: redis-py's ``mget``)."""
        keys = list(keys)
        if not keys:
            return {}
        if self._refresh_due():
            self._refresh_ring()
        out: dict = {}
        for owner, part in self._by_owner(keys).items():  # one request per owner
            out.update(_found(part, self._request("POST", _batch_target("get", group), _batch_body(part),
                                                  owner=owner), fill, self._loads))
        return out

    def set_many(self, mapping, group: str | None = None, ttl: float | Mapping[str, float] = 0) -> None:
        """Write every ``key -> value`` of *mapping* in one request; see ``set``.

        *ttl* is one TTL for every key, or a mapping key -> TTL (a key it lacks
        gets 0: the group's).  A failing key raises its error; the other keys
        may have been written.
        """
        if not mapping:
            return
        if self._refresh_due():
            self._refresh_ring()
        for owner, part in self._by_owner(list(mapping)).items():
            self._request("POST", _batch_target("set", group), _batch_body(part, mapping, ttl, self._dumps),
                          owner=owner)

    def delete_many(self, keys, group: str | None = None) -> int:
        """Delete *keys* in one request (one per owner when following the ring); how many existed."""
        keys = list(keys)
        if not keys:
            return 0
        if self._refresh_due():
            self._refresh_ring()
        return sum(_deleted_count(self._request("POST", _batch_target("delete", group), _batch_body(part),
                                                owner=owner))
                   for owner, part in self._by_owner(keys).items())

    def set(self, key: str, value: Any, group: str | None = None, ttl: float = 0) -> None:
        """Write *value* through to the source and the cache (bytes; str as UTF-8; anything
        the *serializer* takes when the client has one).

        *ttl* seconds overrides the group's TTL for this entry (0: the group's).
        """
        target = _api_target(key, group, ttl)
        self._request("PUT", target, self._dumps(value), owner=self._route(key))

    def delete(self, key: str, group: str | None = None) -> bool:
        """Delete *key*; False when it did not exist."""
        target = _api_target(key, group)
        try:
            return _deleted(self._request("DELETE", target, owner=self._route(key)))
        except NotFoundError:
            return False

    def stats(self) -> dict:
        """The answering host's ``/stats`` document, from its admin port."""
        return _stats_doc(self._request("GET", "/stats", admin=True))

    def close(self) -> None:
        """Close every pooled connection; the client may still be used (it reconnects)."""
        for pool in self._pools + self._admin_pools + list(self._member_pools.values()):
            pool.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, target: str, body: bytes | None = None, admin: bool = False,
                 owner: str | None = None) -> bytes:
        """One request, in up to 1 + retries passes over the hosts (see the module docstring);
        *owner* (a ring member) is tried first in each."""
        for pause in self._pauses():
            try:
                return self._pass(method, target, body, admin, owner)
            except UnavailableError as exc:
                if pause is None or exc.maybe_applied:
                    raise
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _candidates(self, admin: bool, owner: str | None) -> list[tuple[int | None, _Host, _HostPool]]:
        """(index in the host list or None for a ring member, host, pool), in the order to try."""
        if admin:
            return [(i, h, p) for i, (h, p) in enumerate(zip(self._admin_hosts, self._admin_pools))]
        out: list[tuple[int | None, _Host, _HostPool]] = [(i, self._hosts[i], self._pools[i])
                                                         for i in self._order()]
        pool = self._member_pools.get(owner) if owner is not None else None
        if pool is not None:
            out.insert(0, (None, self._view.hosts.get(owner) or pool._host, pool))
        return out

    def _pass(self, method: str, target: str, body: bytes | None, admin: bool,
              owner: str | None = None) -> bytes:
        attempts: list[tuple[str, str]] = []
        replayable = _replayable(method, target)
        for i, host, pool in self._candidates(admin, owner):
            try:
                status, data, phrase, ring, maybe = self._send(pool, host.prefix + target, method, body,
                                                               replayable)
                out = _answer(status, data, phrase, maybe)
            except _Delivered as exc:
                attempts.append((host.url, str(exc)))
                if not replayable:  # it may have been applied: never sent to another host too
                    raise UnavailableError(attempts, maybe_applied=True) from exc.cause
                if i is None:
                    self._view_due = 0.0  # the owner failed: ask for the members again
                continue
            except (OSError, http.client.HTTPException, _ServerFault) as exc:
                attempts.append((host.url, _describe(exc)))
                if isinstance(exc, _ServerFault) and exc.maybe_applied and not replayable:
                    # The host says the write may have been applied: sent elsewhere it could
                    # be applied twice (ordered after writes made meanwhile).
                    raise UnavailableError(attempts, maybe_applied=True) from None
                if i is None:
                    self._view_due = 0.0
                continue
            except (NotFoundError, RefusedError):
                if not admin and i is not None:
                    self._preferred = i  # the host answered; it is up
                raise
            if not admin and i is not None:
                self._preferred = i
            self._note_ring(ring)
            return out
        raise UnavailableError(attempts)

    def _send(self, pool: _HostPool, target: str, method: str, body: bytes | None,
              replayable: bool) -> tuple[int, bytes, str, str | None, str | None]:
        """(status, body, reason, ring header, maybe-applied header) of one request;
        OSError/HTTPException before it was written, ``_Delivered`` after (the host may have it)."""
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = ("application/x-protobuf" if "/api/batch?" in target
                                       else "application/octet-stream")
        for attempt in (1, 2):
            conn, reused = pool.acquire()
            answered = False
            try:
                if conn.sock is None:
                    conn.connect()  # a failure here sent nothing: the caller may try another host
                    sock = conn.sock
                    assert sock is not None  # connect() opened it
                    sock.settimeout(self._read_timeout)  # connected: reads get their own bound
            except (OSError, http.client.HTTPException):
                conn.close()
                raise
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                answered = True
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                # A reused connection the server closed (racing the idle check in acquire)
                # before any byte of an answer: once more on a fresh one, for a read only.
                # Never after a timeout: the host is slow, not gone, and a second wait
                # would double the caller's timeout.
                if (reused and attempt == 1 and replayable and not answered
                        and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected))):
                    continue
                raise _Delivered(exc) from exc
            if resp.will_close:
                conn.close()
            else:
                pool.release(conn)
            return resp.status, data, resp.reason, resp.getheader(RING_HEADER), resp.getheader(MAYBE_APPLIED_HEADER)
        raise AssertionError("unreachable")


class AsyncClient(_Failover):
    """asyncio client over one aiohttp ``ClientSession`` (connections reused per host).

    Same arguments, errors and retries as ``Client`` (a write is never sent
    twice); every method is a coroutine.
    Create and use it inside one event loop, and ``await close()`` (or use
    ``async with``) so the session's connections are released.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 8,
        admin_urls: str | Sequence[str] | None = None,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retries: int = 0,
        backoff: float = 0.05,
        serializer: Callable[[Any], bytes] | None = None,
        deserializer: Callable[[bytes], Any] | None = None,
        ring: bool = False,
        ring_refresh: float = 30.0,
        limit_per_host: int | None = None,
    ) -> None:
        super().__init__(urls, token, timeout, admin_urls, connect_timeout=connect_timeout,
                         read_timeout=read_timeout, retries=retries, backoff=backoff,
                         serializer=serializer, deserializer=deserializer, ring=ring,
                         ring_refresh=ring_refresh)
        if limit_per_host is not None:  # the name this argument had before pool_size
            pool_size = limit_per_host
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError("pool_size", f"must be a whole number >= 1, got {pool_size!r}")
        self._ssl_context = ssl_context
        self._pool_size = pool_size
        self._session = None  # created on first use: aiohttp wants a running loop
        self._refreshing = False  # one refresh at a time (the loop's thread is the guard)

    async def _route(self, key: str) -> str | None:
        """The owner to send *key* to first (None: the plain host order); refreshes the view."""
        if self._refresh_due():
            await self._refresh_ring()
        return self._owner(key)

    async def _refresh_ring(self) -> None:
        """As ``Client._refresh_ring``: ask a host for its members; keep the old view on failure."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            self._view_read = time.monotonic()
            self._view_due = self._view_read + self._ring_refresh
            try:
                self._view = _RingView.parse(await self._pass("GET", RING_PATH, None, False, None))
            except (UnavailableError, RefusedError, NotFoundError):
                pass
        finally:
            self._refreshing = False

    @overload
    async def get(self, key: str, group: str | None = None) -> bytes: ...
    @overload
    async def get(self, key: str, group: str | None = None, default: _T = ...) -> bytes | _T: ...

    async def get(self, key, group=None, default=_MISSING):
        """The value of *key*; NotFoundError when the source has none, unless *default* is given."""
        target = _api_target(key, group)
        try:
            return self._value(await self._request("GET", target, owner=await self._route(key)))
        except NotFoundError:
            if default is _MISSING:
                raise
            return default

    async def get_many(self, keys, group: str | None = None, fill=_MISSING) -> dict:
        """``{key: value}`` of the *keys* found, in one request; see ``Client.get_many``."""
        keys = list(keys)
        if not keys:
            return {}
        if self._refresh_due():
            await self._refresh_ring()
        parts = list(self._by_owner(keys).items())
        bodies = await asyncio.gather(*(self._request("POST", _batch_target("get", group), _batch_body(part),
                                                      owner=owner) for owner, part in parts))
        out: dict = {}
        for (_owner, part), body in zip(parts, bodies):
            out.update(_found(part, body, fill, self._loads))
        return out

    async def set_many(self, mapping, group: str | None = None, ttl: float | Mapping[str, float] = 0) -> None:
        """Write every ``key -> value`` of *mapping* in one request; see ``Client.set_many``."""
        if not mapping:
            return
        if self._refresh_due():
            await self._refresh_ring()
        await asyncio.gather(*(self._request("POST", _batch_target("set", group),
                                             _batch_body(part, mapping, ttl, self._dumps), owner=owner)
                               for owner, part in self._by_owner(list(mapping)).items()))

    async def delete_many(self, keys, group: str | None = None) -> int:
        """Delete *keys* in one request (one per owner when following the ring); how many existed."""
        keys = list(keys)
        if not keys:
            return 0
        if self._refresh_due():
            await self._refresh_ring()
        bodies = await asyncio.gather(*(self._request("POST", _batch_target("delete", group), _batch_body(part),
                                                      owner=owner)
                                        for owner, part in self._by_owner(keys).items()))
        return sum(_deleted_count(b) for b in bodies)

    async def set(self, key: str, value: Any, group: str | None = None, ttl: float = 0) -> None:
        """Write *value* through to the source and the cache; see ``Client.set``."""
        target = _api_target(key, group, ttl)
        await self._request("PUT", target, self._dumps(value), owner=await self._route(key))

    async def delete(self, key: str, group: str | None = None) -> bool:
        """Delete *key*; False when it did not exist."""
        target = _api_target(key, group)
        try:
            return _deleted(await self._request("DELETE", target, owner=await self._route(key)))
        except NotFoundError:
            return False

    async def stats(self) -> dict:
        """The answering host's ``/stats`` document, from its admin port."""
        return _stats_doc(await self._request("GET", "/stats", admin=True))

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self):
        import aiohttp  # only async users pay for importing it

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit_per_host=self._pool_size, ssl=self._ssl_context if self._ssl_context else True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # As Client: each connect and each socket read bounded apart, per host tried.
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                              sock_read=self._read_timeout),
                headers=self._headers,
                auto_decompress=False,  # values are opaque bytes
            )
        return self._session

    async def _request(self, method: str, target: str, body: bytes | None = None, admin: bool = False,
                       owner: str | None = None) -> bytes:
        """One request, in up to 1 + retries passes over the hosts (see the module docstring);
        *owner* (a ring member) is tried first in each."""
        for pause in self._pauses():
            try:
                return await self._pass(method, target, body, admin, owner)
            except UnavailableError as exc:
                if pause is None or exc.maybe_applied:
                    raise
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _pass(self, method: str, target: str, body: bytes | None, admin: bool,
                    owner: str | None = None) -> bytes:
        import aiohttp
        import yarl

        # aiohttp >= 3.10 tells a connect that timed out (nothing sent) from a read that did.
        _CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError)

        session = self._get_session()
        attempts: list[tuple[str, str]] = []
        hosts = self._admin_hosts if admin else self._hosts
        candidates: list = [(i, hosts[i]) for i in (range(len(hosts)) if admin else self._order())]
        first = self._view.hosts.get(owner) if owner is not None and not admin else None
        if first is not None:
            candidates.insert(0, (None, first))
        replayable = _replayable(method, target)
        for i, host in candidates:
            # encoded=True: the query is already percent-encoded; yarl must not re-quote it.
            url = yarl.URL(host.url + target, encoded=True)
            for attempt in (1, 2):
                try:
                    async with session.request(method, url, data=body) as resp:
                        data = await resp.read()
                        ring = resp.headers.get(RING_HEADER)
                        out = _answer(resp.status, data, resp.reason or "", resp.headers.get(MAYBE_APPLIED_HEADER))
                except aiohttp.ServerDisconnectedError as exc:
                    # A reused keep-alive connection the server had closed: a read is sent
                    # once more, fresh; a write is not (as Client: it may have been applied).
                    if attempt == 1 and replayable:
                        continue
                    attempts.append((host.url, _describe(exc)))
                    if not replayable:
                        raise UnavailableError(attempts, maybe_applied=True) from exc
                except (aiohttp.ClientConnectorError, _CONNECT_TIMEOUT, _ServerFault) as exc:
                    # Not connected (refused or timed out: nothing was sent), or answered.
                    attempts.append((host.url, _describe(exc)))
                    if isinstance(exc, _ServerFault) and exc.maybe_applied and not replayable:
                        # Answered that the write may have been applied: never sent elsewhere too.
                        raise UnavailableError(attempts, maybe_applied=True) from None
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    attempts.append((host.url, _describe(exc)))
                    if not replayable:  # written, maybe applied: never sent to another host too
                        raise UnavailableError(attempts, maybe_applied=True) from exc
                except (NotFoundError, RefusedError):
                    if not admin and i is not None:
                        self._preferred = i
                    raise
                else:
                    if not admin and i is not None:
                        self._preferred = i
                    self._note_ring(ring)
                    return out
                if i is None:
                    self._view_due = 0.0  # the owner failed: ask for the members again
                break
        raise UnavailableError(attempts)
