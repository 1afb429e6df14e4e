"""A stand-in GeeCache HTTP API for client tests: a dict behind ``/api``, ``/stats``, ``/healthz``.

Run as ``python -m tests.support.api_stub --port P [--token T] [--fail STATUS]``.
It speaks the public API's contract (raw value bodies, ``{"error": ...}`` on
4xx, bearer token on writes, 413 over the item limit) so the client is tested
over a real socket.  ``--fail`` answers every request with that status: a
host that is up but broken.  Tests prefer the real ``supervisor.py``.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from geecache.errors import GeeCacheError
from geecache.limits import check_key, check_value


def build_app(token: str | None, fail: int | None, item_limit: int) -> web.Application:
    """The stub app: one group, ``scores``, as a dict of key -> bytes."""
    store: dict[tuple[str, str], bytes] = {}
    counts = {"gets": 0, "sets": 0, "deletes": 0}

    def error(status: int, reason: str) -> web.Response:
        return web.json_response({"error": reason}, status=status)

    async def api(request: web.Request) -> web.Response:
        if fail:
            return error(fail, "stub told to fail")
        if request.method in ("PUT", "DELETE") and token and request.headers.get("Authorization") != "Bearer " + token:
            return error(401, "missing or wrong bearer token")
        try:
            key = request.query.get("key", "")
            check_key(key)
            group = request.query.get("group", "scores")
            if group != "scores":
                return error(400, f"unknown group {group!r}; configured: 'scores'")
            if request.method == "GET":
                counts["gets"] += 1
                if (group, key) not in store:
                    return error(404, f"{key!r} not found in group {group!r}")
                return web.Response(body=store[(group, key)], content_type="application/octet-stream")
            if request.method == "PUT":
                store[(group, key)] = check_value(await request.read(), item_limit)
                counts["sets"] += 1
                return web.Response(status=204)
            counts["deletes"] += 1
            return web.json_response({"deleted": store.pop((group, key), None) is not None})
        except GeeCacheError as exc:
            return error(exc.http_status, str(exc))

    async def stats(request: web.Request) -> web.Response:
        if fail:
            return error(fail, "stub told to fail")
        return web.json_response({"groups": {"scores": dict(counts)}})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=item_limit * 2)
    app.router.add_route("GET", "/api", api)
    app.router.add_route("PUT", "/api", api)
    app.router.add_route("DELETE", "/api", api)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Serve the stub on 127.0.0.1 until killed."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token")
    p.add_argument("--fail", type=int)
    p.add_argument("--item-limit", type=int, default=1 << 20)
    args = p.parse_args()
    web.run_app(build_app(args.token, args.fail, args.item_limit), host="127.0.0.1", port=args.port,
                print=None, handle_signals=True)


if __name__ == "__main__":
    main()
