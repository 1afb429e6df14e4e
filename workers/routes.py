"""Route registration for the admin app: every handler gets JSON errors and request metrics.

Each handler is wrapped when it is added, instead of one aiohttp middleware:
aiohttp runs middlewares through extra layers of calls on every request
(measured with py-spy at ~8% of a cache hit's CPU when the data path was
aiohttp).  ``finish`` adds the catch-alls that make unknown paths (404) and
wrong methods (405) answer in the same JSON shape.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from geecache.observability import metrics
from workers.errors import response_for

#: The metrics label of requests no route matched.
UNMATCHED = "unmatched"


class Routes:
    """Adds routes to one app; every handler answers errors as JSON and is counted."""

    def __init__(self, app: web.Application, http_metrics: metrics.HttpMetrics | None = None) -> None:
        self._app = app
        self._metrics = http_metrics
        self._methods: dict[str, set[str]] = {}  # path -> methods with a route

    def _wrap(self, handler, route: str):
        """*handler* with errors mapped to JSON and (if enabled) one metrics observation."""
        if self._metrics is None:
            async def serve(request: web.Request) -> web.StreamResponse:
                try:
                    return await handler(request)
                except Exception as exc:  # CancelledError is a BaseException: it passes
                    return response_for(request, exc)

            return serve

        observe = self._metrics.observe
        now = time.perf_counter

        async def serve_counted(request: web.Request) -> web.StreamResponse:
            started = now()
            try:
                response = await handler(request)
            except asyncio.CancelledError:
                observe(request.method, route, 499, now() - started)  # client gone: nginx's 499
                raise
            except Exception as exc:
                response = response_for(request, exc)
            observe(request.method, route, response.status, now() - started)
            return response

        return serve_counted

    def add(self, method: str, path: str, handler) -> None:
        """Route *method* on *path* (a router pattern, also the metrics label) to *handler*."""
        wrapped = self._wrap(handler, path)
        if method == "GET":
            self._app.router.add_get(path, wrapped)  # HEAD too
            self._methods.setdefault(path, set()).update(("GET", "HEAD"))
        else:
            self._app.router.add_route(method, path, wrapped)
            self._methods.setdefault(path, set()).add(method)

    def finish(self) -> None:
        """Add JSON 405s for known paths and a JSON 404 for every other path; call last."""
        for path, methods in self._methods.items():
            self._app.router.add_route("*", path, self._wrap(_refuse_method(methods), path))

        async def not_found(request: web.Request) -> web.StreamResponse:
            raise web.HTTPNotFound()

        self._app.router.add_route("*", "/{tail:.*}", self._wrap(not_found, UNMATCHED))


def _refuse_method(allowed: set[str]):
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))

    return refuse
