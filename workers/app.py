"""The admin plane of a worker: an aiohttp app on the admin port.

    GET /metrics   Prometheus text: the host's group counters and every worker's requests
    GET /stats     {group: {gets, local_hits, ..., bytes, entries, hit_rate}}, summed over the host
    GET /stats/contention  {"processes": [{pid, shard_lock_waits, ...}], "total": {...}}: per process
    GET /cluster   {"self": ..., "members": [...], "owner": ..., "breakers": ...} (``?key=K`` names K's owner)
    GET /cluster/overview  every ring member's figures, each peer's asked of it (``GET /_geecache``)
    GET /healthz   {"status": "ok", "pid": ..., "groups": [...]}
    GET /          the live dashboard (one HTML page; ``workers.dashboard``)
    GET /dashboard.json  what the page polls: ring and shares, groups, children, processes

Nothing here is per-request hot, so it stays on aiohttp, on its own port
(loopback by default); the request path is the data plane
(``workers/dataplane``).  No middleware: every route is added through
``workers.routes.Routes``, which counts each request and answers every
error as JSON.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

from aiohttp import web

from geecache.cluster.pool import HTTPPool
from geecache.observability import metrics
from geecache.limits import hot_group_name
from geecache.shm.stats import contention_total
from geecache.stats import STAT_FIELDS
from workers.dashboard import HostView, page
from workers.routes import Routes


#: The app's HostView, for the worker to hand its ``summary`` to the data plane.
HOST_VIEW = web.AppKey("host_view", HostView)


def host_stats(group: str, stats: Callable[[str], dict], usage: Callable[[str], tuple[int, int]]) -> dict:
    """One group's counters summed over the host, its cache usage and hit rate.

    ``hit_rate`` is the share of gets served without a source load on this
    host: from the cache, a hot copy, or the owning peer.
    """
    counts = stats(group)
    out = {field: counts.get(field, 0) for field in STAT_FIELDS}
    out["bytes"], out["entries"] = usage(group)
    out["hot_bytes"], out["hot_entries"] = usage(hot_group_name(group))
    hits = out["local_hits"] + out["hot_hits"] + out["peer_hits"]
    out["hit_rate"] = round(hits / out["gets"], 4) if out["gets"] else 0.0
    return out


def host_stats_of(cache) -> Callable[[str], dict]:
    """A group's host-wide counters (``Cache.stats``): the arena sums its rows; a LocalCache has one."""
    return cache.stats


def contention_doc(cache) -> dict:
    """Each process's arena contention counters and their sum (none for a cache without an arena).

    Fields: ``geecache.shm.stats.CONTENTION_FIELDS``.  Per process because a
    wait belongs to the worker that waited; the rows of processes that exited
    stay, so the sum never goes back.
    """
    rows = cache.contention()
    return {"processes": rows, "total": contention_total(rows) if rows else {}}


def pool_of(groups: dict) -> HTTPPool | None:
    """The peer pool the groups route by; None for a host alone (its groups' ``NoPeers``)."""
    return next((g.peers for g in groups.values() if isinstance(g.peers, HTTPPool)), None)


def cluster_view(groups: dict, key: str | None) -> dict:
    """The member list this host routes by, and the owner of *key* if given."""
    pool = pool_of(groups)
    if pool is None:
        return {"self": None, "members": [], "owner": None}
    return {"self": pool.self_address, "members": list(pool.members()), "owner": pool.owner(key) if key else None,
            "breakers": pool.breaker.snapshot()}  # this worker's view


def make_admin_app(
    groups: dict,
    cache,
    *,
    arena_bytes: int = 0,
    http_metrics: metrics.HttpMetrics | None = None,
    pulse=None,
    workers_configured: int = 1,
    supervisor_pid: int | None = None,
) -> web.Application:
    """The admin app over *groups* (name -> Group, config order) stored in *cache*.

    *cache* is the arena (or any Cache with ``usage``).  *http_metrics* (shared
    with the worker's data plane, which flushes it every second) counts the
    admin requests too; a scrape flushes this worker's tallies first, so its
    own requests are exact in it.  *pulse* (this worker's heartbeat cell,
    ``geecache.host.pulse``) lists the host's children for the dashboard and
    the process metrics; *workers_configured* and *supervisor_pid* come from
    the supervisor.  While the app runs, the peer-call and source-load
    tallies of this process are flushed every second (``LatencyMetrics``).
    """
    if not groups:
        raise ValueError("at least one group is needed")
    app = web.Application()
    routes = Routes(app, http_metrics)
    stats = host_stats_of(cache)
    collector = metrics.ArenaCollector(
        groups, stats, cache.usage, arena_bytes,
        budgets=lambda name: (groups[name].max_bytes, groups[name].hot_bytes))
    pool = pool_of(groups)
    view = HostView(groups, lambda name: host_stats(name, stats, cache.usage), pulse=pulse, pool=pool,
                    workers_configured=workers_configured, supervisor_pid=supervisor_pid,
                    arena_bytes=arena_bytes)
    host = metrics.HostCollector(view)
    latency = metrics.LatencyMetrics()
    health = {"status": "ok", "pid": os.getpid(), "groups": list(groups)}

    async def flush_latencies(app: web.Application):
        async def every_second() -> None:
            while True:
                await asyncio.sleep(metrics.HttpMetrics.FLUSH_INTERVAL)
                latency.flush()

        task = asyncio.ensure_future(every_second())
        yield
        task.cancel()
        latency.flush()  # this process's last tallies: counts must not drop when it exits

    app.cleanup_ctx.append(flush_latencies)

    async def scrape(request: web.Request) -> web.Response:
        if http_metrics is not None:
            http_metrics.flush()
        latency.flush()
        body, content_type = metrics.render_all(collector, host)
        # content_type must not carry the charset parameter in aiohttp's argument.
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def host_stats_doc(request: web.Request) -> web.Response:
        return web.json_response({name: host_stats(name, stats, cache.usage) for name in groups})

    async def contention(request: web.Request) -> web.Response:
        return web.json_response(contention_doc(cache))

    async def cluster(request: web.Request) -> web.Response:
        return web.json_response(cluster_view(groups, request.query.get("key")))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(health)

    async def cluster_overview(request: web.Request) -> web.Response:
        return web.json_response(await view.overview(), headers={"Cache-Control": "no-store"})

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(body=page(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def dashboard_doc(request: web.Request) -> web.Response:
        return web.json_response(view.document(), headers={"Cache-Control": "no-store"})

    routes.add("GET", "/", dashboard)
    routes.add("GET", "/dashboard.json", dashboard_doc)
    routes.add("GET", "/metrics", scrape)
    routes.add("GET", "/stats", host_stats_doc)
    routes.add("GET", "/stats/contention", contention)
    routes.add("GET", "/cluster", cluster)
    routes.add("GET", "/cluster/overview", cluster_overview)
    routes.add("GET", "/healthz", healthz)
    routes.finish()
    app[HOST_VIEW] = view  # the worker hands view.summary to the data plane (GET /_geecache)
    return app
