"""A lean HTTP/1.1 keep-alive client for the peer protocol, and nothing else.

Measured here (uvloop, loopback, 100-byte body): an aiohttp ClientSession
round trip costs ~84 µs of client CPU; asyncio streams with
``asyncio.timeout`` ~5 µs; this ``asyncio.Protocol`` over httptools'
response parser (the data plane's parser) less again: no StreamReader
buffer copies, no Timeout object per call, one Future and one timer handle
per request.  On a host whose cores are busy serving, that CPU is what a
remote hit costs on top of a local one.  It speaks only what our own peers
answer: Content-Length or chunked bodies (or a body that ends at close),
keep-alive unless the server says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

from geecache.defaults import DEFAULT_PEER_CONNECT_TIMEOUT, DEFAULT_PEER_READ_TIMEOUT

#: Refuse bodies past this: a peer value is bounded by the item limit anyway.
MAX_BODY = 64 << 20


class PeerProtocolError(Exception):
    """The peer's answer was not HTTP this client understands."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = HttpResponseParser(self)
        self.transport = None
        self.closed = False
        self._waiter: asyncio.Future | None = None
        self._status = 0
        self._body: list[bytes] = []
        self._size = 0
        self._keep = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the body does not end at close
        self._got_bytes = False

    # -- asyncio protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._framed:
                # No Content-Length and not chunked: the body ends at close.
                waiter.set_result((self._status, b"".join(self._body), False))
            else:
                err = ConnectionResetError("the peer closed the connection before answering")
                err.nothing_received = not self._got_bytes
                waiter.set_exception(err)
        self._parser = None

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._waiter is None:
            self.abort()  # bytes nobody asked for: this connection is not ours to trust
            return
        try:
            self._parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(PeerProtocolError(f"bad answer: {exc}"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"content-length":
            self._framed = True
            if int(value) > MAX_BODY:
                raise PeerProtocolError(f"body of {int(value)} bytes is over {MAX_BODY}")
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        self._keep = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise PeerProtocolError(f"body over {MAX_BODY} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(self._body), self._keep))

    # -- use

    def send(self, raw: bytes) -> asyncio.Future:
        """Write one request; the Future gets (status, body, keep-alive)."""
        self._waiter = waiter = self._loop.create_future()
        self._status, self._body, self._size = 0, [], 0
        self._headers_done = self._got_bytes = False
        self._framed = False
        self.transport.write(raw)
        return waiter

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def timed_out(self, seconds: float) -> None:
        """The read timeout fired: fail the request and drop the connection."""
        self._fail(TimeoutError(f"no answer within {seconds:g}s"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """Idle keep-alive connections to one base URL; not shared across event loops.

    ``_idle`` is touched only by the owning event loop's thread: that is its guard.
    """

    def __init__(self, base_url: str, *, ssl_context: _ssl.SSLContext | None = None,
                 connect_timeout: float = DEFAULT_PEER_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_PEER_READ_TIMEOUT, max_idle: int = 32) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad peer URL {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or _ssl.create_default_context()) if parts.scheme == "https" else None
        self._host_header = parts.netloc.encode()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):  # once per connection, not per call
            _, conn = await loop.create_connection(lambda: _Connection(loop), self._host, self._port,
                                                   ssl=self._ssl)
        return conn

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; OSError, TimeoutError or PeerProtocolError on failure."""
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), b"Host: ", self._host_header, b"\r\n"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n".encode())
        head.append(b"Content-Length: %d\r\n\r\n" % len(body or b""))
        raw = b"".join(head) + (body or b"")
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, raw)
            except ConnectionResetError as exc:
                if not getattr(exc, "nothing_received", False):
                    raise
                # The peer closed this idle connection before answering anything:
                # nothing was processed, so a fresh one is safe.
        return await self._exchange(await self._connect(), raw)

    async def _exchange(self, conn: _Connection, raw: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        # A plain timer, not asyncio.timeout: no Timeout object or task lookup per call.
        timer = loop.call_later(self._read_timeout, conn.timed_out, self._read_timeout)
        try:
            status, body, keep = await conn.send(raw)
        except BaseException:
            conn.abort()  # a cancelled or failed exchange leaves the stream unusable
            raise
        finally:
            timer.cancel()
        if keep and not conn.closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return status, body

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
