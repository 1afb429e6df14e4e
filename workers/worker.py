"""The body of a worker process: forked by the supervisor, never returns.

Forked by ``geecache.host.arbiter``, which resets the inherited signals
first, as for every child.  Boot (attach to the arena, open the sources,
serve the data plane on the inherited data socket and the admin app on the
admin socket) then one event loop until SIGTERM/SIGINT or the supervisor's
death; then a graceful stop: the listeners close first, and in-flight
requests get ``graceful_timeout`` seconds.  A failure during boot
exits with ``WORKER_BOOT_ERROR`` so the supervisor stops instead of
respawning into the same failure (gunicorn's convention).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING

from aiohttp import web

from geecache import hlc
from geecache.observability import logs
from geecache.signals import STOP_SIGNALS

if TYPE_CHECKING:
    from geecache.shm import Arena
    from geecache.writelog import WriteLog

log = logging.getLogger("geecache.worker")


class _DropMalformedRequests(logging.Filter):
    """Keep aiohttp's tracebacks for malformed HTTP out of the log (the admin port).

    aiohttp answers such a request 400 itself, then logs the parser's error
    with a traceback: one per bad request would let any client flood the log.
    Errors in our own handlers never reach aiohttp (``workers.routes`` maps
    and logs them), so this hides nothing of ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)

#: Exit status of a worker that could not boot: the supervisor halts on it.
WORKER_BOOT_ERROR = 3
#: How often a worker checks that its supervisor is still its parent.
PARENT_CHECK_INTERVAL = 1.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop (a dependency off Windows) unless GEECACHE_UVLOOP=0, else asyncio's."""
    if os.environ.get("GEECACHE_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def server_ssl_context(cfg) -> ssl.SSLContext | None:
    """The TLS context of the data port, when a certificate is configured (the admin port is plain)."""
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


async def _watch_parent(supervisor_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != supervisor_pid:
            log.warning("worker %d: supervisor %d is gone; stopping", os.getpid(), supervisor_pid)
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK_INTERVAL)


#: How long past the lease TTL a reattached worker waits for the registrar's ring before serving.
JOIN_WAIT_MARGIN = 5.0


def _wait_for_registrar(arena, seed_version: int, seconds: float) -> None:
    """Wait (bounded) until the registrar has written the ring it read from etcd: whom to ask."""
    deadline = time.monotonic() + seconds
    while arena.ring_version() == seed_version and time.monotonic() < deadline:
        time.sleep(0.05)


def _settle_warm_restart(cfg, arena, guard, peers, write_log) -> None:
    """Before serving a reattached arena: drop what other hosts wrote while this host was away.

    Blocking, before the data plane accepts: nothing is served from the arena
    until it is done.  With etcd the registrar fills the ring a moment after
    the start; a host still alone then has nobody to ask (and the guard drops
    every copy when it joins later).
    """
    since = write_log.unsure_since() if write_log is not None else 0
    if not since or peers is None:
        return
    if cfg.etcd:
        wait = cfg.lease_ttl + JOIN_WAIT_MARGIN
        if cfg.worker_timeout > 0:  # the watchdog replaces a worker not ready within worker_timeout
            wait = min(wait, cfg.worker_timeout / 3)
        _wait_for_registrar(arena, write_log.unsure_ring(), wait)
    away = (time.monotonic_ns() - since) / 1e9
    guard.after_absence(time.monotonic() - away, f"reattached after {away:.1f} s away (warm restart)")
    write_log.settle_unsure(since)


async def _serve(cfg, sock: socket.socket, admin_sock: socket.socket, arena: Arena, supervisor_pid: int,
                 pulse, write_log: WriteLog | None = None) -> int:
    # Imported in the worker, after the fork: the supervisor imports this module for
    # worker_main alone and need not load aiohttp, the data plane and the peer pool.
    from geecache.observability import metrics
    from geecache.cluster.pauseguard import PauseGuard
    from workers.app import HOST_VIEW, make_admin_app
    from workers.dataplane import serve_data_plane
    from workers.groups import build_groups, build_peers, close_sources

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        peers = build_peers(cfg, arena, write_log)
        groups = build_groups(cfg, arena, arena, peers)
        if peers is not None:  # read at each ring change: a host that started cold says so
            peers.empty_groups = lambda: {name for name, group in groups.items() if group.holds_nothing()}
        if peers is not None and cfg.warmup_bytes:  # before any ring is read: the join may be the first
            from geecache.cluster.warmup import Warmer

            peers.on_moved_here = Warmer(groups, peers, cfg.warmup_bytes, cfg.warmup_seconds).moved_here
        # Away means unsure (invariant 9): a pause drops the copies other hosts wrote meanwhile.
        guard = PauseGuard(groups.values(), threshold=cfg.pause_threshold, settle=cfg.lease_ttl + 1.0,
                           members=peers.members if peers is not None else None,
                           self_address=peers.self_address if peers is not None else None,
                           ask=peers.writes_elsewhere if peers is not None else None)
        if peers is not None:  # a join is handled inside the refresh that sees it
            peers.on_joined = guard.joined
        _settle_warm_restart(cfg, arena, guard, peers, write_log)
        # One request tally for both planes; the data plane flushes it every second.
        http_metrics = metrics.HttpMetrics()
        plane = await serve_data_plane(
            sock, groups, auth_token=cfg.auth_token, item_limit=cfg.item_limit,
            header_timeout=cfg.header_timeout, keepalive_timeout=cfg.keepalive_timeout,
            max_connections=cfg.max_connections, ssl_context=server_ssl_context(cfg),
            http_metrics=http_metrics, batch_max_keys=cfg.batch_max_keys, batch_max_bytes=cfg.batch_max_bytes,
            batch_inflight_bytes=cfg.batch_inflight_bytes,
            access_log=cfg.access_log_sample if cfg.access_log else 0.0)
        admin_app = make_admin_app(groups, arena, arena_bytes=cfg.arena, http_metrics=http_metrics,
                                   pulse=pulse, workers_configured=cfg.workers, supervisor_pid=supervisor_pid)
        plane.router.summary = admin_app[HOST_VIEW].summary  # a peer's overview asks GET /_geecache
        admin = web.AppRunner(admin_app, access_log=None, shutdown_timeout=cfg.graceful_timeout)
        await admin.setup()
        await web.SockSite(admin, admin_sock).start()
    except Exception:
        log.exception("worker %d failed to boot", os.getpid())
        return WORKER_BOOT_ERROR
    if pulse is not None:  # ready: it serves; from now on the loop stamps the heartbeat
        pulse.start(loop)
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    watcher = asyncio.ensure_future(_watch_parent(supervisor_pid, stop))
    guard.start(loop)
    await stop.wait()
    guard.stop()
    watcher.cancel()
    # Both close their listeners first, then give in-flight requests the grace.
    await asyncio.gather(plane.close(cfg.graceful_timeout), admin.cleanup())
    if peers is not None:
        await peers.close()
    close_sources(groups)
    return 0


def worker_main(cfg, sock: socket.socket, admin_sock: socket.socket, arena, supervisor_pid: int,
                pulse=None, write_log=None) -> None:
    """Serve *cfg*'s groups: the data plane on *sock*, the admin app on *admin_sock*, until told
    to stop; leaves with ``os._exit``.

    *pulse* (``geecache.host.pulse.Pulse``) is stamped once serving (ready)
    and then from the event loop, for the supervisor's watchdog.  *write_log*
    (``geecache.writelog``) is the host's shared log of recent writes.
    """
    code = 1
    logs.set_role("worker")
    try:
        # The arbiter's spawn already reset the inherited signals (reset_child_signals)
        # and asked for SIGTERM at its death (die_with_parent).
        logging.getLogger("aiohttp.server").addFilter(_DropMalformedRequests())
        # The watchdog's SIGABRT then leaves every thread's stack in the log: where it hung.
        faulthandler.enable(all_threads=True)
        try:
            arena.register_process()
            arena.lock_timeout = cfg.lock_timeout  # no unbounded lock wait on an event loop
            hlc.clock.max_drift = cfg.max_clock_drift  # a peer's version past it is refused
            loop = new_event_loop()
        except Exception:
            log.exception("worker %d failed to boot", os.getpid())
            code = WORKER_BOOT_ERROR
        else:
            asyncio.set_event_loop(loop)
            code = loop.run_until_complete(_serve(cfg, sock, admin_sock, arena, supervisor_pid, pulse, write_log))
    except BaseException:
        log.exception("worker %d crashed", os.getpid())
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
