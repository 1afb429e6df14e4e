"""The one place where an error becomes an HTTP answer: JSON ``{"error": reason}``.

Every GeeCacheError carries its status (``http_status``); aiohttp's own
errors (404 unknown path, 405 wrong method, 413 body too large) keep theirs
but get the same JSON shape; anything else is a bug, logged with its
traceback on the server and answered 500 without one.  Nothing a client
sends may reach the client as a traceback, and a client that hangs up
mid-request is no error of ours: counted as 499, not logged.
"""

from __future__ import annotations

import logging

from aiohttp import web

from geecache.errors import GeeCacheError, ReadOnlySourceError, public_reason

log = logging.getLogger("geecache.worker")


#: The status a request whose client hung up is counted with (nginx's; never sent).
CLIENT_CLOSED = 499


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def error_response(status: int, reason: str, headers: dict | None = None) -> web.Response:
    """The JSON error body every error path uses."""
    return web.json_response({"error": reason}, status=status, headers=headers)


def _http_reason(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such path"
    if isinstance(exc, web.HTTPMethodNotAllowed):  # aiohttp's one 405
        return f"method {exc.method} not allowed; allowed: {', '.join(sorted(exc.allowed_methods))}"
    if exc.status == 413:
        return f"request body too large ({exc.text})" if exc.text else "request body too large"
    return exc.reason


def response_for(request: web.Request, exc: Exception) -> web.Response:
    """The answer to *exc* raised while serving *request* (re-raises redirects)."""
    if isinstance(exc, ReadOnlySourceError):
        # A 405 must say what is allowed: reads, for a group over a loader.
        return error_response(exc.http_status, public_reason(exc), {"Allow": "GET, HEAD"})
    if isinstance(exc, GeeCacheError):
        return error_response(exc.http_status, public_reason(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # redirects and the like are answers, not errors
        # Keep Allow (405) and WWW-Authenticate (401); the body is ours.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return error_response(exc.status, _http_reason(exc), headers)
    if isinstance(exc, ConnectionError) and _client_gone(request):
        # The client hung up mid-request (a body cut short, a reset): nothing to answer
        # and nothing of ours failed.  nginx's 499, for the request metrics only.
        return error_response(CLIENT_CLOSED, "client closed the connection")
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error")
