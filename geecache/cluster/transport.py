"""A lean HTTP/1.1 keep-alive client for the peer protocol, and nothing else.

Measured here (uvloop, loopback, 100-byte body): an aiohttp ClientSession
round trip costs ~84 µs of client CPU; asyncio streams with
``asyncio.timeout`` ~5 µs; this ``asyncio.Protocol`` over httptools'
response parser (the data plane's parser) less again: no StreamReader
buffer copies, no Timeout object per call, one timer handle per request.
On a host whose cores are busy serving, that CPU is what a remote hit
costs on top of a local one.  It speaks only what our own peers
answer: Content-Length or chunked bodies (or a body that ends at close),
keep-alive unless the server says ``Connection: close``.

A request is settled by a callback (``ConnectionPool.get``/``post``/``start``),
so a caller that needs no coroutine — the remote read path — costs no task
and no Future; ``request`` wraps the same in a Future for coroutines.  The
head is encoded once per pool: the fixed headers (token, content type) and,
for a GET, no Content-Length.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Callable
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

from geecache.defaults import DEFAULT_PEER_CONNECT_TIMEOUT, DEFAULT_PEER_READ_TIMEOUT

#: Refuse bodies past this: a peer value is bounded by the item limit anyway.
MAX_BODY = 64 << 20


class PeerProtocolError(Exception):
    """The peer's answer was not HTTP this client understands."""


class PeerClosed(ConnectionResetError):
    """The peer closed the connection before its answer was complete."""

    def __init__(self, nothing_received: bool) -> None:
        super().__init__("the peer closed the connection before answering")
        #: True when not one byte of the answer came: nothing was processed.
        self.nothing_received = nothing_received


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives.

    The request in flight is a callback, ``_done``: called once, with
    ``(status, body, keep-alive)`` or the exception, never from inside the
    parser (``data_received`` calls it once ``feed_data`` has returned).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # the loop this connection's callbacks run on
        self._parser = HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.closed = False
        self._done: Callable[[object], None] | None = None
        self._answer: tuple | None = None  # set by on_message_complete, handed over after the parse
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
        done = self._done
        if done is not None:
            self._done = None
            if self._headers_done and not self._framed:
                # No Content-Length and not chunked: the body ends at close.
                done((self._status, b"".join(self._body), False))
            else:
                done(PeerClosed(nothing_received=not self._got_bytes))
        del self._parser  # break the cycle (the parser holds this protocol); nothing parses after

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._done is None:
            self.abort()  # bytes nobody asked for: this connection is not ours to trust
            return
        try:
            self._parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(PeerProtocolError(f"bad answer: {exc}"))
            return
        answer = self._answer
        if answer is not None:
            self._answer = None
            done = self._done
            self._done = None
            done(answer)

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
        body = self._body
        self._answer = (self._status, body[0] if len(body) == 1 else b"".join(body), self._keep)

    # -- use

    def send(self, raw: bytes, done: Callable[[object], None]) -> None:
        """Write one request; *done* gets (status, body, keep-alive) or the exception, once."""
        self._done = done
        self._answer = None
        self._status, self._body, self._size = 0, [], 0
        self._headers_done = self._got_bytes = False
        self._framed = False
        transport = self.transport
        if transport is None:  # a pool hands out only connections that connection_made has run on
            raise PeerProtocolError("the connection is not connected")
        transport.write(raw)

    def _fail(self, exc: BaseException) -> None:
        done = self._done
        self._done = None
        self._answer = None
        if done is not None:
            done(exc)
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

    ``_idle`` and ``_connecting`` are touched only by the owning event loop's
    thread: that is their guard.  *headers* are sent with every request (the
    peer token, the content type), encoded once.
    """

    def __init__(self, base_url: str, *, ssl_context: _ssl.SSLContext | None = None,
                 connect_timeout: float = DEFAULT_PEER_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_PEER_READ_TIMEOUT, max_idle: int = 32,
                 headers: dict[str, str] | None = None) -> None:
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
        self._connecting: set[asyncio.Task] = set()  # held here: the loop keeps only weak references
        self._headers = dict(headers or {})
        # What follows the target of a GET: a GET has no body, so no Content-Length.
        self._get_tail = self._head_tail(self._headers) + b"\r\n"
        self._post_tail = self._head_tail(self._headers).replace(b"%", b"%%") + b"Content-Length: %d\r\n\r\n"

    def _head_tail(self, headers: dict[str, str]) -> bytes:
        head = [b" HTTP/1.1\r\nHost: ", self._host_header, b"\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode())
        return b"".join(head)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):  # once per connection, not per call
            _, conn = await loop.create_connection(lambda: _Connection(loop), self._host, self._port,
                                                   ssl=self._ssl)
        return conn

    def get(self, target: bytes, done: Callable[[object], None]) -> None:
        """``GET target`` with the pool's headers; *done* gets (status, body) or the exception
        (OSError, TimeoutError, PeerProtocolError), once, from a callback of the loop.

        No task and no Future when an idle connection is there, which under load
        is nearly always; a new connection is made in a task.
        """
        self.start(b"GET " + target + self._get_tail, done)

    def post(self, target: bytes, body: bytes, done: Callable[[object], None]) -> None:
        """``POST target`` of *body* with the pool's headers; *done* as in ``get``."""
        self.start(b"POST " + target + self._post_tail % len(body) + body, done)

    def start(self, raw: bytes, done: Callable[[object], None]) -> None:
        """Send the request *raw* (its whole bytes); *done* as in ``get``."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self._send(conn, raw, done, True)
                return
        task = asyncio.ensure_future(self._connect_and_send(raw, done))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, raw: bytes, done: Callable[[object], None]) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:  # OSError, TimeoutError: the caller's to handle
            done(exc)
            return
        self._send(conn, raw, done, False)

    def _send(self, conn: _Connection, raw: bytes, done: Callable[[object], None], reused: bool) -> None:
        # A plain timer, not asyncio.timeout: no Timeout object or task lookup per call.
        timer = conn.loop.call_later(self._read_timeout, conn.timed_out, self._read_timeout)

        def answered(answer) -> None:
            timer.cancel()
            if type(answer) is tuple:
                status, body, keep = answer
                if keep and not conn.closed and len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                else:
                    conn.close()
                done((status, body))
                return
            conn.abort()  # a failed exchange leaves the stream unusable
            if reused and isinstance(answer, PeerClosed) and answer.nothing_received:
                # The peer closed this idle connection before answering anything:
                # nothing was processed, so another (or a fresh) one is safe.
                self.start(raw, done)
                return
            done(answer)

        conn.send(raw, answered)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; OSError, TimeoutError or PeerProtocolError on failure.

        *headers* add to (or override) the pool's.  A cancelled caller stops
        waiting; its connection is still bounded by the read timeout.
        """
        merged = self._headers if not headers else {**self._headers, **headers}
        raw = b"".join((method.encode(), b" ", path.encode(), self._head_tail(merged),
                        b"Content-Length: %d\r\n\r\n" % len(body or b""), body or b""))
        future = asyncio.get_running_loop().create_future()

        def done(answer) -> None:
            if future.done():  # the caller was cancelled
                return
            if type(answer) is tuple:
                future.set_result(answer)
            else:
                future.set_exception(answer)

        self.start(raw, done)
        return await future

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
