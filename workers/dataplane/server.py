"""Serving the data plane on a worker's inherited socket; the state its connections share.

``serve_data_plane`` starts the server; the returned ``DataPlane`` closes it
gracefully.  ``_Plane`` is the per-worker state every connection reads:
limits, the coarse clock, the prebuilt ``Date`` line and hit head, the
request tallies, the connection set.  Its one sweep (every
``SWEEP_INTERVAL``) moves the clock, rebuilds the ``Date`` line, visits
every connection for its timeouts and flushes the request tallies to
Prometheus: a timer per worker instead of one per request or connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import ssl
import time
from dataclasses import dataclass

from geecache.defaults import (
    DEFAULT_BATCH_INFLIGHT_BYTES, DEFAULT_BATCH_MAX_BYTES, DEFAULT_BATCH_MAX_KEYS, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
)
from workers.dataplane.access import AccessLogProtocol
from workers.dataplane.hitpath import hit_path
from workers.dataplane.protocol import DataPlaneProtocol
from workers.dataplane.responses import END_CLOSE, date_line, error_reply, hit_head, peer_head, render
from workers.dataplane.routes import API, PEER_BATCH, PEER_KEY, Router

log = logging.getLogger("geecache.worker")

#: Seconds between sweeps: the resolution of every timeout and of the Date header.
SWEEP_INTERVAL = 0.5
#: Seconds between flushes of the request tallies into the Prometheus files.
FLUSH_INTERVAL = 1.0
#: At most one "connection cap reached" line per this many seconds.
CAP_LOG_INTERVAL = 10.0
#: Room for protobuf framing on top of the item limit (as aiohttp's client_max_size had).
BODY_SLACK = 1024

@dataclass(frozen=True)
class Limits:
    """The data plane's bounds; every one configurable, defaults as nginx/aiohttp give them."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: A request target over this is a 414 (nginx, aiohttp: 8 KiB lines).
    max_url_bytes: int = 8192
    #: All header fields together over this are a 431 (Node's 16 KiB).
    max_header_bytes: int = 16384
    #: A client that reads none of its answers for this long is dropped (nginx's send_timeout).
    send_timeout: float = 60.0
    #: How long a refused connection lingers, discarding input, before it is closed.
    linger_timeout: float = 2.0


def fd_headroom(cap: int, reserve: int = 64) -> int:
    """*cap* lowered to what RLIMIT_NOFILE allows, keeping *reserve* descriptors for the rest."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return cap
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(1, min(cap, soft - reserve))


class _NoMetrics:
    """Stands in for HttpMetrics when request metrics are off: tallies nobody reads."""

    bounds = (float("inf"),)

    def tally(self, method: str, route: str, status: int) -> list:
        return [0, 0.0, 0, 0]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        pass

    def flush(self) -> None:
        pass

    def traffic(self, *totals: int) -> None:
        pass


class _Plane:
    """What every connection of one worker's data plane shares (one event loop: no locks)."""

    def __init__(self, loop, router: Router, limits: Limits, item_limit: int, http_metrics, tls: bool) -> None:
        self.loop = loop
        self.router = router
        self.tls = tls
        self.header_timeout = limits.header_timeout
        self.keepalive_timeout = limits.keepalive_timeout
        self.send_timeout = limits.send_timeout
        self.linger_timeout = limits.linger_timeout
        self.max_connections = fd_headroom(limits.max_connections)
        self.max_url_bytes = limits.max_url_bytes
        self.max_header_bytes = limits.max_header_bytes
        # Raw head bytes a request may use before its head completes (target + fields + slack).
        self.head_budget = limits.max_url_bytes + limits.max_header_bytes + 1024
        self.body_limit = item_limit + BODY_SLACK
        # A batch (POST /api/batch, a peer's /_batch) carries many values: its own bound.
        self.batch_body_limit = router.batch_max_bytes + BODY_SLACK
        self.min_body_limit = min(self.body_limit, self.batch_body_limit)
        self.metrics = http_metrics if http_metrics is not None else _NoMetrics()
        self.bounds = self.metrics.bounds
        self.first_bound = self.bounds[0]
        self.hit_tally = self.metrics.tally("GET", API, 200)
        self.peer_tally = self.metrics.tally("GET", PEER_KEY, 200)
        self.peer_batch_tally = self.metrics.tally("POST", PEER_BATCH, 200)
        # Open connections in accept order (a dict as an ordered set): of connections
        # idle since the same coarse tick, the cap evicts the one accepted first.
        self.conns: dict[DataPlaneProtocol, None] = {}
        self.tasks: set[asyncio.Future] = set()  # tasks, and Futures answered by callback
        # Connections holding a commit's answer until the end of the loop's turn (``write_held``).
        self.held: list[DataPlaneProtocol] = []
        self.closing = False
        self._drained: asyncio.Event | None = None
        self._refused = 0            # new connections refused at the cap since the last cap line
        self._evicted = 0            # idle ones closed at the cap for new ones, since then
        # Running totals for the metrics (HttpMetrics.traffic): connections taken in and
        # refused, bytes read and written; the loop's one thread guards them.
        self.accepted = self.refused = self.bytes_read = self.bytes_written = 0
        self._cap_logged = -CAP_LOG_INTERVAL
        self._last_flush = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self.tick = loop.time()
        self.date = date_line(time.time())
        self.hit_head = hit_head(self.date)
        self.peer_head = peer_head(self.date)
        self.busy_answer = render(error_reply(503, "too many connections"), self.date, END_CLOSE)
        #: The compiled hit path (``hitpath.py``) when it serves this plane, else None; it adds
        #: to ``hit_tally`` as the Python hit path does, its bytes join at each flush.  ``hits`` is what connections call: the
        #: same object, None once the plane closes (a closing plane answers with
        #: Connection: close, which only the Python path writes).
        self.hit_path = self.hits = None

    # -- connections -----------------------------------------------------------

    def admit(self, conn: DataPlaneProtocol) -> bool:
        """Take *conn* in, or False at the connection cap with no idle connection to evict.

        At the cap the keep-alive connection idle the longest is closed to make
        room (nginx's reuse of keep-alive connections), so idle sockets, a
        client's pool or a flood of them, cannot lock new clients out; only
        when every connection is busy is the new one refused (503).  Both are
        logged, at most every CAP_LOG_INTERVAL.
        """
        if len(self.conns) < self.max_connections or self._evict_idle():
            self.conns[conn] = None
            self.accepted += 1
            return True
        self.refused += 1
        self.bytes_written += len(self.busy_answer)
        self._refused += 1
        self._log_cap()
        return False

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection; False when none is idle.  O(connections), only at the cap."""
        victim, oldest = None, float("inf")
        for conn in self.conns:
            since = conn.idle_since()
            if since is not None and since < oldest:
                victim, oldest = conn, since
        if victim is None:
            return False
        del self.conns[victim]  # its connection_lost comes later: the room is taken now
        victim.evict()
        self._evicted += 1
        self._log_cap()
        return True

    def _log_cap(self) -> None:
        if self.tick - self._cap_logged >= CAP_LOG_INTERVAL:
            log.warning("worker %d: %d connections open, the cap (max_connections); since the last such "
                        "line, closed %d idle ones for new clients and refused %d (none idle)",
                        os.getpid(), len(self.conns), self._evicted, self._refused)
            self._refused = self._evicted = 0
            self._cap_logged = self.tick

    def forget(self, conn: DataPlaneProtocol) -> None:
        """*conn* is gone."""
        self.conns.pop(conn, None)
        if self._drained is not None and not self.conns:
            self._drained.set()

    def write_held(self) -> None:
        """Send every held commit answer, back to back (``DataPlaneProtocol._hold``)."""
        held, self.held = self.held, []
        for conn in held:
            conn._write_held()

    def spawn(self, coro) -> asyncio.Task:
        """Run *coro* as a task the plane keeps a reference to (and cancels past the grace)."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def track(self, future: asyncio.Future) -> asyncio.Future:
        """Keep *future* (an answer owed without a task) with the tasks: cancelled past the grace."""
        self.tasks.add(future)
        future.add_done_callback(self.tasks.discard)
        return future

    # -- the sweep -------------------------------------------------------------

    def start(self) -> None:
        """Start the sweep."""
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        self.tick = now
        self.date = date_line(time.time())
        self.hit_head = hit_head(self.date)
        if self.hit_path is not None:
            self.hit_path.head = self.hit_head
        self.peer_head = peer_head(self.date)
        for conn in list(self.conns):
            conn.check(now)
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._last_flush = now
            self.flush_metrics()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def stop(self) -> None:
        """Stop the sweep and flush what was counted."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.flush_metrics()

    def flush_metrics(self) -> None:
        """Hand the request tallies and the connection and byte totals to the metrics files."""
        if self.hit_path is not None:
            self.bytes_written += self.hit_path.take_written()
        self.metrics.traffic(len(self.conns), self.accepted, self.refused, self.bytes_read, self.bytes_written)
        self.metrics.flush()

    async def drain(self, grace: float) -> None:
        """Close idle connections now, busy ones after their answers; abort what is left after *grace*."""
        self.closing = True
        self.hits = None
        self._drained = asyncio.Event()
        for conn in list(self.conns):
            conn.shutdown()
        if self.conns:
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.conns):
            conn.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)


class DataPlane:
    """A running data plane: its server, its connections; ``close`` stops it gracefully."""

    def __init__(self, plane: _Plane, server) -> None:
        self._plane = plane
        self._server = server

    @property
    def connections(self) -> int:
        """Open connections (for tests and stats)."""
        return len(self._plane.conns)

    @property
    def router(self) -> Router:
        """The route table and handlers (the worker hands it the host's summary)."""
        return self._plane.router

    @property
    def max_connections(self) -> int:
        """The connection cap in force (the configured one, lowered to the fd limit)."""
        return self._plane.max_connections

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; let in-flight requests finish within *grace* seconds; close the rest."""
        self._server.close()  # this process's listener only: other workers keep theirs
        await self._plane.drain(grace)
        self._plane.stop()


async def serve_data_plane(
    sock: socket.socket,
    groups: dict,
    *,
    auth_token: str | None = None,
    item_limit: int,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ssl_context: ssl.SSLContext | None = None,
    http_metrics=None,
    limits: Limits | None = None,
    backlog: int = 1024,
    batch_max_keys: int = DEFAULT_BATCH_MAX_KEYS,
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
    batch_inflight_bytes: int = DEFAULT_BATCH_INFLIGHT_BYTES,
    access_log: float = 0.0,
) -> DataPlane:
    """Serve *groups* (name -> Group, first = default) on the listening *sock*; call in the worker's loop.

    *item_limit* is the largest value any group accepts (it bounds request
    bodies); *http_metrics* (a ``geecache.observability.metrics.HttpMetrics``) gets every
    request's count and latency, None skips them.  *limits* overrides every
    bound at once (tests); otherwise the three common ones come as keywords.
    *batch_max_keys* and *batch_max_bytes* bound one batch (``/api/batch``),
    *batch_inflight_bytes* the batches this worker serves at once.
    *batch_max_keys* and *batch_max_bytes* bound one batch (``/api/batch``).
    *access_log*: the share of answers logged to ``geecache.access`` (0: none, and
    the plain protocol, whose hit path does no logging work at all).
    """
    loop = asyncio.get_running_loop()
    if limits is None:
        limits = Limits(header_timeout=header_timeout, keepalive_timeout=keepalive_timeout,
                        max_connections=max_connections)
    plane = _Plane(loop, Router(groups, auth_token, batch_max_keys, batch_max_bytes, batch_inflight_bytes), limits, item_limit, http_metrics, ssl_context is not None)
    protocol: type[DataPlaneProtocol] = DataPlaneProtocol
    if access_log > 0:
        class SampledAccessLogProtocol(AccessLogProtocol):
            __slots__ = ()
            sample = access_log

        protocol = SampledAccessLogProtocol
    else:  # (an access log logs every hit: those take the Python path)
        plane.hit_path = plane.hits = hit_path(plane.router.default_group, plane)
    server = await loop.create_server(lambda: protocol(plane), sock=sock, ssl=ssl_context,
                                      backlog=backlog)
    plane.start()
    return DataPlane(plane, server)
