"""The data plane of a worker: a lean HTTP/1.1 server for ``/api``, the peer API and ``/healthz``.

Why not aiohttp: a cache hit through aiohttp's Application cost 43-57 us of
server CPU; an ``asyncio.Protocol`` over httptools on uvloop doing the same
arena lookup, 11.5-12 us (``docs/architecture.md``).  So the request path is
our own small protocol over a well-kept parser, and everything that is not
per-request hot stays on aiohttp, on the admin port.

- ``server`` — ``serve_data_plane`` (start on an inherited listening socket),
  the per-worker state every connection shares (clock, limits, connection
  set, the one sweep that enforces timeouts), and the graceful close.
- ``protocol`` — the per-connection ``asyncio.Protocol``: framing, limits,
  pipelining, flow control, keep-alive.
- ``routes`` — the route table and its handlers over the Groups.
- ``query`` — keys and parameters from the raw query bytes.
- ``responses`` — the bytes of answers: status lines, heads, JSON errors.
"""

from workers.dataplane.server import DataPlane, Limits, serve_data_plane

__all__ = ["DataPlane", "Limits", "serve_data_plane"]
