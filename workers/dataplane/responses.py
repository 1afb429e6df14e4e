"""The bytes of the data plane's answers: status lines, heads, JSON error bodies.

A reply is a plain tuple ``(status, content-type line, body, extra header
lines)``; ``render`` turns it into one bytes object for one
``transport.write``.  Error bodies have the JSON shape of
``workers/errors.py`` (``{"error": reason}``) and a fixed or server-made
reason: nothing a client sent is echoed back.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus

#: ``HTTP/1.1 <code> <phrase>\r\n`` for every status we may send.  HTTP/1.1 even
#: to an HTTP/1.0 client: a server sends its own version (RFC 9110 §6.2), and we
#: never use a 1.1-only framing (no chunked responses).
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
STATUS_LINES[499] = b"HTTP/1.1 499 Client Closed Request\r\n"  # never sent; nginx's label in metrics

OCTET_STREAM = b"Content-Type: application/octet-stream\r\n"
JSON = b"Content-Type: application/json; charset=utf-8\r\n"
PROTOBUF = b"Content-Type: application/x-protobuf\r\n"

#: What ends a head, by what happens to the connection after the answer.
END_KEEP = b"\r\n"                              # HTTP/1.1 default: persistent
END_KEEP_ALIVE = b"Connection: keep-alive\r\n\r\n"  # an HTTP/1.0 client asked to keep it
END_CLOSE = b"Connection: close\r\n\r\n"

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: A reply: (status, content-type line or b"", body, extra header lines).
Reply = tuple

NO_CONTENT: Reply = (204, b"", b"", b"")


def date_line(now: float) -> bytes:
    """The ``Date:`` header line for *now* (epoch seconds); rebuilt by the sweep, not per request."""
    return b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"


#: Where a prebuilt head stops: the length and the end of the head follow.
CONTENT_LENGTH = b"Content-Length: "


def hit_head(date: bytes) -> bytes:
    """The head of a 200 hit up to ``Content-Length: `` (the length and the end follow)."""
    return STATUS_LINES[200] + date + OCTET_STREAM + CONTENT_LENGTH


def peer_head(date: bytes) -> bytes:
    """The head of a peer GET's 200 (protobuf) up to ``Content-Length: ``, as ``render`` writes it."""
    return STATUS_LINES[200] + date + PROTOBUF + CONTENT_LENGTH


def render(reply: Reply, date: bytes, end: bytes, head_only: bool = False) -> bytes:
    """The bytes of *reply*; *end* closes the head (``END_*``); HEAD answers omit the body."""
    status, ctype, body, extra = reply
    if status == 204 or status < 200:  # no Content-Length, no body (RFC 9110 §8.6)
        return b"".join((STATUS_LINES[status], date, extra, end))
    head = b"".join((STATUS_LINES[status], date, ctype, extra, b"Content-Length: %d\r\n" % len(body), end))
    return head if head_only else head + body


def error_reply(status: int, reason: str, extra: bytes = b"") -> Reply:
    """The JSON error every refusal uses (``{"error": reason}``, as ``workers/errors.py``)."""
    return (status, JSON, json.dumps({"error": reason}).encode(), extra)


def allow_line(methods) -> bytes:
    """An ``Allow:`` header line listing *methods*, sorted."""
    return b"Allow: " + ", ".join(sorted(methods)).encode() + b"\r\n"
