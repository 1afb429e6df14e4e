"""Raw bytes to a server, its answers read by an independent parser (h11).

The data plane's framing is checked by a parser that shares no code with
it: every answer a test reads through ``exchange`` must be valid HTTP/1.1
to h11, in order, with bodies delimited as h11 understands them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h11


@dataclass
class Answer:
    """One response as h11 parsed it."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)

    @property
    def json(self):
        import json

        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


class Reader:
    """Parses the answers to *methods* (one per request sent, in order) from a stream of bytes."""

    def __init__(self, methods: list[str]) -> None:
        self._methods = list(methods)
        self._conn = h11.Connection(h11.CLIENT)
        self.answers: list[Answer] = []
        self.closed = False
        self._current: Answer | None = None
        self._begin()

    def _begin(self) -> None:
        if len(self.answers) < len(self._methods):
            method = self._methods[len(self.answers)]
            self._conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self._conn.send(h11.EndOfMessage())

    @property
    def done(self) -> bool:
        return len(self.answers) == len(self._methods)

    def feed(self, data: bytes) -> None:
        """Add bytes from the server (b"" = it closed) and parse as far as they go."""
        if not data:
            self.closed = True
        self._conn.receive_data(data)
        while not self.done:
            event = self._conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.InformationalResponse):
                self._pending_info().informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                info = self._current.informational if self._current else []
                self._current = Answer(event.status_code,
                                       {k.decode().lower(): v.decode() for k, v in event.headers}, b"", info)
            elif isinstance(event, h11.Data):
                self._current.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.answers.append(self._current)
                self._current = None
                if self.done or h11.MUST_CLOSE in (self._conn.our_state, self._conn.their_state):
                    return
                self._conn.start_next_cycle()
                self._begin()

    def _pending_info(self) -> Answer:
        if self._current is None:
            self._current = Answer(0, {})
        return self._current


def read_answers(sock: socket.socket, methods: list[str], timeout: float = 10.0,
                 until_closed: bool = False) -> Reader:
    """Read from *sock* until h11 has parsed every answer (and, if asked, the server closed)."""
    reader = Reader(methods)
    sock.settimeout(timeout)
    while not reader.closed and (not reader.done or until_closed):
        reader.feed(sock.recv(65536))
    return reader


def exchange(port: int, raw: bytes, methods: list[str], *, until_closed: bool = False,
             timeout: float = 10.0) -> Reader:
    """Send *raw* on a fresh connection; the answers to *methods*, parsed by h11."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_answers(sock, methods, timeout, until_closed)


def request_bytes(method: str, target: str, body: bytes = b"", headers: dict | None = None,
                  version: str = "1.1") -> bytes:
    """One request's bytes (Content-Length added for a body), built by hand so anything can be sent."""
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
