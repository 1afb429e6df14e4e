"""The worker's aiohttp application: public API, peer API and metrics on one port.

No middleware: every route is added through ``workers.routes.Routes``, which
wraps its handler so that every request is counted with the status the
client saw and every error leaves as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from aiohttp import web

from geecache import metrics
from workers import peer_api
from workers.api import PublicAPI
from workers.routes import Routes

# Room for the request line and headers on top of the largest value: aiohttp's
# client_max_size caps the body only, but a round number keeps 413s predictable.
_BODY_SLACK = 1024


async def _flush_periodically(http: metrics.HttpMetrics) -> None:
    while True:
        await asyncio.sleep(http.FLUSH_INTERVAL)
        http.flush()


def host_stats_of(cache) -> Callable[[str], dict]:
    """A group's host-wide counters: the arena sums its rows; a LocalCache has one."""
    stats = getattr(cache, "stats", None)
    return stats if callable(stats) else (lambda group: cache.stats_sink(group).snapshot())


def make_app(
    groups: dict,
    cache,
    *,
    auth_token: str | None = None,
    item_limit: int,
    arena_bytes: int = 0,
    http_metrics: metrics.HttpMetrics | None = None,
) -> web.Application:
    """The HTTP app over *groups* (name -> Group, first = default) stored in *cache*.

    *cache* is the arena (or any Cache with ``usage``); *item_limit* is the
    largest value any group accepts, which bounds request bodies.
    *http_metrics* None skips request metrics (the library use, benchmarks of
    the bare path).
    """
    app = web.Application(client_max_size=item_limit + _BODY_SLACK)
    routes = Routes(app, http_metrics)
    stats = host_stats_of(cache)
    PublicAPI(groups, stats=stats, usage=cache.usage, auth_token=auth_token).setup(routes)

    collector = metrics.ArenaCollector(groups, stats, cache.usage, arena_bytes)

    async def scrape(request: web.Request) -> web.Response:
        if http_metrics is not None:
            http_metrics.flush()  # this worker's own requests are exact in its scrape
        body, content_type = metrics.render(collector)
        # content_type must not carry the charset parameter in aiohttp's argument.
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    routes.add("GET", "/metrics", scrape)
    if http_metrics is not None:
        async def flusher(app: web.Application):
            task = asyncio.ensure_future(_flush_periodically(http_metrics))
            yield
            task.cancel()
            http_metrics.flush()  # at exit: nothing counted is lost

        app.cleanup_ctx.append(flusher)
    # The peer API: the single place a host joins a cluster's protocol.
    peer_api.setup(routes, groups, auth_token)
    routes.finish()
    return app
