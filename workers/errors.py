"""The one place where an error becomes an HTTP answer: JSON ``{"error": reason}``.

Every GeeCacheError carries its status (``http_status``); aiohttp's own
errors (404 unknown path, 405 wrong method, 413 body too large) keep theirs
but get the same JSON shape; anything else is a bug, logged with its
traceback on the server and answered 500 without one.  Nothing a client
sends may reach the client as a traceback.
"""

from __future__ import annotations

import logging

from aiohttp import web

from geecache.errors import GeeCacheError, ReadOnlySourceError

log = logging.getLogger("geecache.worker")


def error_response(status: int, reason: str, headers: dict | None = None) -> web.Response:
    """The JSON error body every error path uses."""
    return web.json_response({"error": reason}, status=status, headers=headers)


def _http_reason(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such path"
    if exc.status == 405:
        return f"method {getattr(exc, 'method', '')} not allowed; allowed: {', '.join(sorted(exc.allowed_methods))}"
    if exc.status == 413:
        return f"request body too large ({exc.text})" if exc.text else "request body too large"
    return exc.reason


def response_for(request: web.Request, exc: Exception) -> web.Response:
    """The answer to *exc* raised while serving *request* (re-raises redirects)."""
    if isinstance(exc, ReadOnlySourceError):
        # A 405 must say what is allowed: reads, for a group over a loader.
        return error_response(exc.http_status, str(exc), {"Allow": "GET, HEAD"})
    if isinstance(exc, GeeCacheError):
        return error_response(exc.http_status, str(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # redirects and the like are answers, not errors
        # Keep Allow (405) and WWW-Authenticate (401); the body is ours.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return error_response(exc.status, _http_reason(exc), headers)
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error")
