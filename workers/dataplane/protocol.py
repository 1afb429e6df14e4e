"""One data-plane connection: an ``asyncio.Protocol`` over httptools' request parser.

The parser calls back as bytes arrive; a request is acted on when its
message is complete.  A hit on ``GET /api`` is answered right there, inside
the callback: one ``transport.write`` of the prebuilt head and the value, no
Task, no request or response object.  Everything else that can answer at
once (errors, ``/healthz``, a peer's hit, an invalidation) does too; a
``PUT`` or ``DELETE /api?key=K`` of a key this host owns is answered from its
commit's Future (no task); misses and other writes run as a task.

Order on a pipelined connection: while a task is answering, or the
transport's write buffer is over its high-water mark, later requests are
queued (already parsed: they came in the same read) and reading is paused;
the queue is answered in order when the task is done or the buffer drains.
The queue is therefore bounded by what one read delivers.

Limits (``server.Limits``): request target, header bytes, body bytes (with
``Expect: 100-continue``, before the body is sent).  A request that breaks
one, or bytes that are not HTTP, get a JSON error with ``Connection: close``;
then the connection stops parsing and *lingers* — it half-closes and
discards what the client still sends, so the client reads the error
instead of a reset — for a bounded time.

No timer per request or connection: each connection keeps plain stamps of
the worker's coarse clock, and the worker's one sweep (``server``) calls
``check`` on every connection twice a second.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import deque
from functools import partial
from time import perf_counter

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from workers.dataplane.query import API_KEY_PREFIX, plain_api_key
from workers.dataplane.responses import (
    CONTINUE, END_CLOSE, END_KEEP, END_KEEP_ALIVE, NO_CONTENT, error_reply, render,
)
from workers.dataplane.routes import (
    API, BATCH, BATCH_BUSY, PEER_BATCH, PEER_KEY, RETRY_AFTER, UNMATCHED, Request, error_reply_for,
    is_batch_path,
)

log = logging.getLogger("geecache.worker")

_GET = b"GET"
_PUT = b"PUT"
_DELETE = b"DELETE"
_API_PATH = b"/api"
_PEER_PREFIX = b"/_geecache/"
_POST = b"POST"
_BATCH_SUFFIX = b"/_batch"
#: Lengths of the header names the protocol reads (authorization, content-length,
#: connection, expect, transfer-encoding, upgrade): others skip the lower() and compares.
_SPECIAL_LENGTHS = frozenset({13, 14, 10, 6, 17, 7, 15})


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the reason is on the protocol."""


_REFUSED = _Refused()


class DataPlaneProtocol(asyncio.Protocol):
    """One connection of the data plane; *plane* is the worker's shared ``server._Plane``.

    ``__slots__`` (asyncio's protocol classes have empty ones) keeps every
    attribute access on the hot path a slot read.
    """

    __slots__ = (
        "_plane", "_router", "_parser", "_transport", "_closed", "_queue", "_pending",
        "_write_paused", "_read_paused", "_busy", "_eof", "_lingering", "_linger_since", "_stopped",
        "_refusal", "_last", "_started", "_in_request", "_t0", "_paused_at", "_batch_unsent", "_put",
        "_clean", "_held",
        # the request being parsed
        "_url", "_start", "_auth", "_clen", "_chunked", "_expect", "_conn_hdr", "_special",
        "_hdr_bytes", "_head_left", "_headers_done", "_body", "_body_len", "_method", "_end", "_accept",
    )
    #: Set by connection_made, before any other callback runs.
    _transport: asyncio.Transport

    def __init__(self, plane) -> None:
        self._plane = plane
        self._router = plane.router
        self._parser = HttpRequestParser(self)
        self._closed = False
        self._queue: deque | None = None
        self._pending: asyncio.Future | None = None
        self._write_paused = False
        self._read_paused = False
        self._busy = False           # an answer is owed: later requests queue
        self._eof = False            # close once every read request is answered
        self._lingering = False
        self._linger_since = 0.0
        self._stopped = False        # parse nothing more on this connection
        self._refusal: tuple[int, str] | None = None
        self._last = plane.tick      # coarse clock: last bytes in, or last answer out
        self._started = 0.0          # coarse clock: first bytes of the current request
        self._in_request = False
        self._t0 = 0.0
        self._paused_at = 0.0
        self._batch_unsent = 0       # bytes of a batch answer still in the write buffer (counted in the budget)
        # The PUT or DELETE whose commit is _pending: (key, value or None, version, end, start).
        self._put: tuple[str, bytes | None, int, bytes, float] | None = None
        # The parser holds no byte of an unfinished message (between on_message_complete and
        # the next on_message_begin): only then may the compiled hit path read a new one.
        self._clean = True
        # A commit's answer written at the end of the loop's turn (``_hold``), None when there is none.
        self._held: bytes | None = None
        self._url = b""
        self._start = 0.0
        self._auth: bytes | None = None
        self._clen = -1
        self._chunked = False
        self._expect = False
        self._conn_hdr = False
        self._special = False
        self._hdr_bytes = 0
        self._head_left = 0
        self._headers_done = False
        self._body: list[bytes] | None = None
        self._body_len = 0
        self._method = b""
        self._end = END_KEEP
        self._accept: bytes | None = None         # Accept-Encoding, when sent (a special header)

    # -- asyncio protocol ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        plane = self._plane
        if plane.closing or not plane.admit(self):
            self._closed = True
            if not plane.closing:
                transport.write(plane.busy_answer)
            transport.close()

    def connection_lost(self, exc) -> None:
        # A client that went away mid-request is not an error: nothing to log.
        self._closed = True
        del self._parser  # break the protocol <-> parser cycle now (nothing parses after this)
        if self._batch_unsent:
            self._sent_batch()
        if self._queue:
            self._queue.clear()
        self._plane.forget(self)

    def eof_received(self):
        if self._held is not None:  # answered: sent before the transport closes itself
            self._write_held()
        if self._pending is not None or self._queue:
            if self._plane.tls:
                return False  # an SSL transport cannot stay half-open; it closes
            self._eof = True
            return True  # keep the transport to answer what was read, then close
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        self._write_paused = True
        self._paused_at = self._plane.tick
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._batch_unsent:
            self._sent_batch()
        self._drain()

    def data_received(self, data: bytes) -> None:
        if self._held is not None:  # an answer owed before this read's: out first, in order
            self._write_held()
        plane = self._plane
        plane.bytes_read += len(data)  # once per read, not per request (pipelined reads hold many)
        self._last = tick = plane.tick
        if self._stopped:
            return  # lingering, or after Connection: close: discard
        if not self._headers_done:
            # Raw bytes while a head is incomplete count against its budget: this
            # bounds what httptools buffers of a field on_header has not seen yet.
            if self._in_request:
                self._head_left -= len(data)
            elif (hits := plane.hits) is not None and self._clean and not self._busy \
                    and ((n := hits.serve(data, self._transport)) or hits.handed is not None):
                # The compiled hit path answered the first n bytes (hitpath.py).  The rest
                # starts a request as one in the tail of a read does (on_url stamps it).
                self._started = tick
                if n < len(data) and (handed := hits.handed) is not None:
                    # The next request is complete and checked as the parser would check it:
                    # answered as on_message_complete would, without httptools parsing it.
                    if len(handed) == 2:
                        # A GET /api?key=K whose key neither partition holds: its miss path,
                        # without probing twice more (a remote hit's first step).
                        length, key = handed
                        self._serve_miss(key.decode(), END_KEEP, perf_counter())
                    elif len(handed) == 4:
                        # A peer's POST of a batch of the default group's keys, its body whole
                        # and within every limit: the owner's half of a remote hit.
                        length, _, body, auth = handed
                        self._serve_other(_POST, hits.batch_target, auth, body, END_KEEP, perf_counter())
                    else:
                        # A PUT /api?key=K with no Authorization and a body within every
                        # limit, or a DELETE /api?key=K with none (body None).
                        length, key, body = handed
                        if body is None:
                            self._serve_delete(key.decode(), None, END_KEEP, perf_counter())
                        else:
                            self._serve_put(key.decode(), None, body, END_KEEP, perf_counter())
                    n += length
                if n == len(data):
                    return
                data = data[n:]
            elif data[0] != 13 or data.strip(b"\r\n"):
                # (Empty lines between requests are ignored, RFC 9112 §2.2: they start no
                # request, so they do not start the header timeout either.)
                self._in_request = True
                self._started = tick
                self._head_left = plane.head_budget - len(data)
        self._t0 = perf_counter()
        try:
            self._parser.feed_data(data)
        except HttpParserCallbackError:
            refusal = self._refusal
            if refusal is not None:
                self._refusal = None
                self._refuse(*refusal)
            elif not self._stopped:  # a bug in a callback: httptools kept only its repr
                log.error("data plane: parser callback failed", exc_info=True)
                self._refuse(500, "internal error")
        except HttpParserUpgrade:
            # Answered as plain HTTP/1.1 with Connection: close (on_headers_complete).
            self._stop_after_answers()
        except HttpParserError as exc:
            # llhttp's reasons are fixed strings of its own, never request bytes.
            self._refuse(400, f"malformed HTTP request: {exc}")
        else:
            if self._head_left < 0 and self._in_request and not self._headers_done:
                if len(self._url) > plane.max_url_bytes:
                    self._refuse(414, "request target too long")
                else:
                    self._refuse(431, "request header fields too large")

    # -- parser callbacks ------------------------------------------------------
    # Kept to the fewest operations: each runs once per request (on_header once
    # per field), and at ~80k hits/s per core every one shows.  The limits on
    # target and field sizes are checked once per request, in
    # on_headers_complete; a head still incomplete is bounded in data_received.

    def on_message_begin(self) -> None:
        self._clean = False

    def on_url(self, url: bytes) -> None:
        if self._url:
            self._url += url
            return
        self._url = url
        self._start = self._t0
        if not self._in_request:  # a request that began in the tail of a read
            self._in_request = True
            self._started = self._plane.tick
            self._head_left = self._plane.head_budget

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hdr_bytes += len(name) + len(value)
        if len(name) in _SPECIAL_LENGTHS:
            lname = name.lower()
            if lname == b"authorization":
                if self._auth is not None:
                    # Which one would be checked is the server's guess: refuse to guess.
                    self._refusal = (400, "more than one Authorization header")
                    raise _REFUSED
                self._auth = value
            elif lname == b"content-length":
                try:
                    self._clen = int(value)
                except ValueError:
                    self._refusal = (400, "malformed HTTP request: bad Content-Length")
                    raise _REFUSED from None
            elif lname == b"connection":
                self._conn_hdr = True
            elif lname == b"expect":
                self._expect = value.lower() == b"100-continue"
            elif lname == b"transfer-encoding":
                self._chunked = True
            elif lname == b"accept-encoding":
                # Special, so it cannot go stale on the connection: only a compressed
                # group's GET reads it (Content-Encoding passthrough).
                self._accept = value
            elif lname != b"upgrade":
                return
            self._special = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        parser = self._parser
        plane = self._plane
        self._method = parser.get_method()
        if len(self._url) > plane.max_url_bytes:
            self._refusal = (414, "request target too long")
            raise _REFUSED
        if self._hdr_bytes > plane.max_header_bytes:
            self._refusal = (431, "request header fields too large")
            raise _REFUSED
        if not self._special:
            # No Connection, Expect or framing header: HTTP/1.1 keeps, 1.0 closes.
            self._end = END_KEEP if parser.should_keep_alive() and not plane.closing else END_CLOSE
            return
        if parser.should_keep_alive() and not plane.closing and not parser.should_upgrade():
            # An HTTP/1.0 client that asked for keep-alive must hear it back.
            self._end = END_KEEP_ALIVE if self._conn_hdr else END_KEEP
        else:
            self._end = END_CLOSE
        if self._clen > plane.min_body_limit:
            limit = self._body_limit()
            if self._clen > limit:
                # Before any body is read (and instead of a 100 Continue).
                self._refusal = (413, f"request body too large (the limit is {limit} bytes)")
                raise _REFUSED
            if is_batch_path(self._url) and not self._router.batch_room(self._clen):
                # A large batch body while the worker's batch budget is spent: not read at all.
                self._refusal = (503, BATCH_BUSY)
                raise _REFUSED
        if self._expect and (self._clen > 0 or self._chunked) and not self._busy \
                and parser.get_http_version() == "1.1":
            # Only when this request is next to be answered: a 100 must not
            # overtake the answer to an earlier pipelined request.  Skipping
            # it is allowed; the client then sends its body after a wait.
            self._transport.write(CONTINUE)
            plane.bytes_written += len(CONTINUE)

    def _body_limit(self) -> int:
        """This request's body bound: a batch's, else one value's (asked only past the smaller)."""
        return self._plane.batch_body_limit if is_batch_path(self._url) else self._plane.body_limit

    def on_body(self, body: bytes) -> None:
        n = self._body_len + len(body)
        if n > self._plane.min_body_limit:
            limit = self._body_limit()
            if n > limit:
                self._refusal = (413, f"request body too large (the limit is {limit} bytes)")
                raise _REFUSED
        self._body_len = n
        if self._body is None:
            self._body = [body]
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._clean = True
        url = self._url
        self._url = b""
        self._hdr_bytes = 0
        self._headers_done = self._in_request = False
        if self._special or self._body is not None or self._busy:
            self._complete_other(url)
            return
        end = self._end
        if self._method == _GET and url[:9] == API_KEY_PREFIX:
            key = url[9:]
            if key and b"&" not in key and b"%" not in key and b"+" not in key:
                # The hot path, GET /api?key=K on the default group, inlined here (this
                # callback runs once per request): a cache probe and, on a hit, one write.
                # The test is ``plain_api_key``'s, inlined: its call was 2% of a hit's CPU.
                self._serve_api_key(key.decode(), end, self._start)
                if end is END_CLOSE:
                    self._stop()
                return
        self._serve(self._method, url, None, None, end, self._start)
        if end is END_CLOSE:
            self._stop()

    def _complete_other(self, url: bytes) -> None:
        """on_message_complete for a request with a body or special headers, or one that must queue."""
        end = self._end
        auth = body = accept = None
        if self._special:
            auth = self._auth
            accept = self._accept
            self._auth = self._accept = None
            self._clen = -1
            self._chunked = self._expect = self._conn_hdr = self._special = False
        if self._body is not None:
            body = b"".join(self._body)
            self._body = None
            self._body_len = 0
        if self._busy:
            if self._queue is None:
                self._queue = deque()
            self._queue.append((self._method, url, auth, body, end, self._start, accept))
            self._update_reading()
        else:
            self._serve(self._method, url, auth, body, end, self._start, accept)
        if end is END_CLOSE:
            self._stop()

    def _stop(self) -> None:
        """Connection: close (or HTTP/1.0): nothing after this request is read."""
        self._stopped = True
        raise _REFUSED

    # -- answering -------------------------------------------------------------

    def _serve(self, method: bytes, url: bytes, auth, body, end: bytes, start: float, accept=None) -> None:
        """Answer one complete request: at once when it can be, else through a task."""
        if method == _PUT:
            key = plain_api_key(url)
            if key is not None:
                self._serve_put(key, auth, body or b"", end, start)
                return
        elif method == _DELETE and body is None:
            key = plain_api_key(url)
            if key is not None:
                self._serve_delete(key, auth, end, start)
                return
        # (A compressed default group with Accept-Encoding: _serve_other may pass it through.)
        if method == _GET and (accept is None or not self._router.default_packs):
            key = plain_api_key(url)
            if key is not None:
                self._serve_api_key(key, end, start)
                return
        self._serve_other(method, url, auth, body, end, start, accept)

    def _serve_api_key(self, key: str, end: bytes, start: float) -> None:
        """``GET /api?key=K`` on the default group: a hit written at once, a miss loaded in a task."""
        try:
            value = self._router.probe_default(key)
        except Exception as exc:  # over the key limit
            self._reply(error_reply_for(exc), "GET", API, start, end, False)
            return
        if value is None:
            self._serve_miss(key, end, start)
            return
        plane = self._plane
        out = b"%b%d\r\n%b%b" % (plane.hit_head, len(value), end, value)
        self._transport.write(out)
        plane.bytes_written += len(out)
        seconds = perf_counter() - start
        tally = plane.hit_tally
        tally[0] += 1
        tally[1] += seconds
        # Nearly every hit falls in the lowest bucket: skip the bisect for those.
        tally[2 if seconds <= plane.first_bound else 2 + bisect_left(plane.bounds, seconds)] += 1
        if end is END_CLOSE:
            self._close()
        # (No _last stamp: data_received set it for this read; the idle clock runs from there.)

    def _serve_miss(self, key: str, end: bytes, start: float) -> None:
        """``GET /api?key=K``'s miss on the default group (``_owe_load``)."""
        self._owe_load(self._router.api_miss(key, partial(self._settled, "GET", API, start, end, False)),
                       end, start)

    def _owe_load(self, answer, end: bytes, start: float) -> None:
        """Owe ``GET /api``'s answer to its miss's load, *answer* as ``Router.api_load`` gave it
        with ``_settled`` as its *settled*: a Future that calls it when done (a remote hit's
        straight from its fetch's callback), else a coroutine, run as a task."""
        plane = self._plane
        if isinstance(answer, asyncio.Future):
            self._pending = answer
            plane.tasks.add(answer)  # cancelled past the grace, as a task; _settled discards it
        else:
            self._pending = plane.spawn(self._complete(answer, "GET", API, start, end, False))
        self._update_reading()

    def _serve_put(self, key: str, auth, body: bytes, end: bytes, start: float) -> None:
        """``PUT /api?key=K`` on the default group: answered from its queued write's callback when
        this host owns the key (``Router.start_put``), else through a task as any write."""
        router = self._router
        try:
            started = router.start_put(key, body, auth, self._put_committed)
        except Exception as exc:  # the token, the key or value limits, a source that cannot keep up
            self._reply(error_reply_for(exc), "PUT", API, start, end, False)
            return
        if started is None:
            self._spawn(router.put(key, body), "PUT", API, start, end, False)
            return
        self._await_commit(started, key, body, end, start)

    def _serve_delete(self, key: str, auth, end: bytes, start: float) -> None:
        """``DELETE /api?key=K`` on the default group: as ``_serve_put`` (``Router.start_delete``)."""
        router = self._router
        try:
            started = router.start_delete(key, auth, self._delete_committed)
        except Exception as exc:  # the token, the key limits, a source that cannot keep up
            self._reply(error_reply_for(exc), "DELETE", API, start, end, False)
            return
        if started is None:
            self._spawn(router.delete(key), "DELETE", API, start, end, False)
            return
        self._await_commit(started, key, None, end, start)

    def _await_commit(self, started, key: str, value, end: bytes, start: float) -> None:
        # (The write calls _put_committed or _delete_committed once answered, never before
        # this returns: the committer answers from a later turn of the loop.)
        write, version = started
        self._put = (key, value, version, end, start)
        self._pending = write
        self._busy = True  # (reading goes on: a request read meanwhile queues, and pauses it)

    def _put_committed(self, write) -> None:
        assert self._put is not None and self._put[1] is not None  # set by _await_commit
        key, value, version, end, start = self._put
        self._put = None
        try:
            rest = self._router.finish_put(key, value, version, write)
        except Exception as exc:
            reply = error_reply_for(exc)
        else:
            if rest is not None:  # a refusal to settle, a racing load, members to tell
                self._pending = None
                self._spawn(self._router.settled(rest), "PUT", API, start, end, False)
                return
            reply = NO_CONTENT
        self._finish(reply, "PUT", API, start, end, False, True)

    def _delete_committed(self, write) -> None:
        assert self._put is not None  # set by _await_commit before the write could be answered
        key, _, version, end, start = self._put
        self._put = None
        self._pending = None
        try:
            rest = self._router.finish_delete(key, version, write)
        except Exception as exc:
            reply = error_reply_for(exc)
        else:
            if type(rest) is not bool:  # a refusal to settle, a racing load, members to tell
                self._spawn(self._router.deleted(key, rest), "DELETE", API, start, end, False)
                return
            reply = self._router.deleted_reply(key, rest)
        self._finish(reply, "DELETE", API, start, end, False, True)

    def _hit(self, value: bytes, end: bytes, start: float) -> None:
        """A public GET's 200 behind the prebuilt hit head, counted in the hit tally."""
        self._write_hit(self._plane.hit_head, value, end, start, self._plane.hit_tally)

    def _peer_hit(self, body: bytes, end: bytes, start: float, tally: list) -> None:
        """Write a peer's 200 (*body*: protobuf bytes) behind the prebuilt head; count it in *tally*."""
        self._write_hit(self._plane.peer_head, body, end, start, tally)

    def _write_hit(self, head: bytes, body: bytes, end: bytes, start: float, tally: list) -> None:
        """*body* behind a prebuilt 200 *head*, counted in *tally* (``_serve_api_key`` inlines this
        for the common hit: a call per hit shows at its rate)."""
        plane = self._plane
        out = b"%b%d\r\n%b%b" % (head, len(body), end, body)
        self._transport.write(out)
        plane.bytes_written += len(out)
        seconds = perf_counter() - start
        tally[0] += 1
        tally[1] += seconds
        tally[2 if seconds <= plane.first_bound else 2 + bisect_left(plane.bounds, seconds)] += 1
        if end is END_CLOSE:
            self._close()
        else:
            self._last = plane.tick

    def _hold(self, out: bytes) -> None:
        """Write a commit's answer *out* at the end of the loop's turn, with the others made in it.

        A commit's answers are written when their clients are asleep waiting for
        them, and on loopback the write that wakes one costs the writer the
        wake-up; written one by one between the callbacks' Python, each woke its
        client apart.  Written back to back, most find it awake (measured at c64:
        the loop 94.7 -> 85.9 us a PUT, wrk 29.5 -> 22.5; a remote hit's answer,
        a few per peer reply, gained nothing, so it is written at once).

        Order holds: only an answer with nothing queued behind it is held, and the
        connection sends it before anything else it does (``data_received``,
        ``_close``, ``eof_received``); once it is closed (aborted, or the client gone)
        ``_write_held`` drops it.
        """
        self._held = out
        plane = self._plane
        if not plane.held:
            plane.loop.call_soon(plane.write_held)
        plane.held.append(self)

    def _write_held(self) -> None:
        """Send the held answer now (the plane's turn-end, or before this connection writes or closes)."""
        out = self._held
        if out is not None:
            self._held = None
            if not self._closed:
                self._transport.write(out)

    def _serve_other(self, method: bytes, url: bytes, auth, body, end: bytes, start: float,
                     accept=None) -> None:
        router = self._router
        if url[:11] == _PEER_PREFIX:
            if method == _GET:
                # A peer's GET of a key: a hit answered here, as the public hit is (no Request,
                # no reply tuple); a miss is the load's task; None leaves it to the route table.
                answer = router.peer_get_fast(url, auth)
                if answer is not None:
                    if type(answer) is bytes:
                        self._peer_hit(answer, end, start, self._plane.peer_tally)
                    else:
                        self._spawn(answer, "GET", PEER_KEY, start, end, False)
                    return
            elif method == _POST and url.endswith(_BATCH_SUFFIX) and body:
                # A peer's fetches of one loop turn, all cached here: answered the same way.
                answer = router.peer_batch_fast(url, auth, body, self._plane.hits)
                if answer is not None:
                    self._peer_hit(answer, end, start, self._plane.peer_batch_tally)
                    if self._write_paused and not self._closed:
                        # Unread, it holds its bytes in the batch budget, as a task's answer does.
                        self._batch_unsent += len(answer)
                        router.batch_holding(len(answer))
                    return
        path, _, query = url.partition(b"?")
        if method == _GET and path == _API_PATH:
            # /api with a group, an escaped key or Accept-Encoding: the router reads the query.
            try:
                answer = router.api_query(query, accept, partial(self._settled, "GET", API, start, end, False))
            except Exception as exc:
                self._reply(error_reply_for(exc), "GET", API, start, end, False)
                return
            if type(answer) is bytes:
                self._hit(answer, end, start)
            elif type(answer) is tuple:
                self._reply(answer, "GET", API, start, end, False)
            else:
                self._owe_load(answer, end, start)
            return
        name = method.decode("ascii", "replace")  # llhttp admits only known method tokens
        head_only = name == "HEAD"
        try:
            label, handler, group_part, key_part = router.resolve(name, path)
        except Exception as exc:
            self._reply(error_reply_for(exc), name, router.route_label(path), start, end, head_only)
            return
        try:
            result = handler(Request(name, query, group_part, key_part, auth, body or b""))
        except Exception as exc:
            result = error_reply_for(exc)
        if type(result) is tuple:
            self._reply(result, name, label, start, end, head_only)
        else:
            self._spawn(result, name, label, start, end, head_only)

    def _reply(self, reply, method: str, label: str, start: float, end: bytes, head_only: bool,
               hold: bool = False) -> None:
        plane = self._plane
        out = render(reply, plane.date, end, head_only)
        if hold:
            self._hold(out)
        else:
            self._transport.write(out)
        plane.bytes_written += len(out)
        plane.metrics.observe(method, label, reply[0], perf_counter() - start)
        if end is END_CLOSE:
            self._close()
        else:
            self._last = plane.tick

    def _spawn(self, coro, method: str, label: str, start: float, end: bytes, head_only: bool) -> None:
        """Answer when *coro* is done: a coroutine runs as a task; a Future (a peer fetch that
        needs none) is answered from its done callback, with its reply or, when it gives
        bytes, ``Router.loaded_reply`` of them."""
        plane = self._plane
        if isinstance(coro, asyncio.Future):
            self._pending = plane.track(coro)
            coro.add_done_callback(partial(self._settled, method, label, start, end, head_only))
        else:
            self._pending = plane.spawn(self._complete(coro, method, label, start, end, head_only))
        self._update_reading()

    async def _complete(self, coro, method: str, label: str, start: float, end: bytes, head_only: bool) -> None:
        try:
            reply = await coro
        except Exception as exc:  # CancelledError (shutdown past its grace) passes
            reply = error_reply_for(exc)
        self._finish(reply, method, label, start, end, head_only)

    def _settled(self, method: str, label: str, start: float, end: bytes, head_only: bool,
                 future: asyncio.Future) -> None:
        self._plane.tasks.discard(future)  # (_owe_load's Future: it has no done callback for it)
        if future.cancelled():  # shutdown past its grace, as a cancelled task: nothing to answer
            return
        exc = future.exception()
        if exc is not None:
            reply = error_reply_for(exc)
        else:
            reply = future.result()
            if type(reply) is bytes:  # a value's Future (Router.api_load): the GET /api answer
                if not head_only and not self._closed:
                    # Written as a hit is (the same bytes render makes of loaded_reply, counted
                    # in the same GET /api 200 tally): a remote hit's answer, cheaply.
                    self._pending = None
                    plane = self._plane
                    self._write_hit(self._router.loaded_head(plane.hit_head), reply, end, start, plane.hit_tally)
                    self._drain()
                    return
                reply = self._router.loaded_reply(reply)
        self._finish(reply, method, label, start, end, head_only)

    def _finish(self, reply, method: str, label: str, start: float, end: bytes, head_only: bool,
                hold: bool = False) -> None:
        """The owed answer is *reply*: write it (unless the client left) and go on with the queue.

        *hold*: a commit's answer, held to the end of the loop's turn (``_hold``) when nothing
        waits behind it."""
        self._pending = None
        if self._closed:
            # The client left before its answer: nginx's 499, never a 5xx.
            self._plane.metrics.observe(method, label, 499, perf_counter() - start)
            return
        self._reply(reply, method, label, start, end, head_only,
                    hold and end is END_KEEP and not self._queue and not self._write_paused)
        if self._write_paused and (label is BATCH or label is PEER_BATCH) and not self._closed:
            # A batch answer the client has not read yet still holds its bytes: they stay in
            # the worker's batch budget until the buffer drains (resume_writing) or the
            # connection goes, else slow readers would pile answers up past it.
            self._batch_unsent += len(reply[2])
            self._router.batch_holding(len(reply[2]))
        self._drain()

    def _sent_batch(self) -> None:
        """The batch answer left the write buffer (or the connection went): free its budget."""
        self._router.batch_holding(-self._batch_unsent)
        self._batch_unsent = 0

    def _drain(self) -> None:
        """Answer queued requests in order until one needs a task or the buffer is full."""
        queue = self._queue
        while queue and self._pending is None and not self._write_paused and not self._closed:
            item = queue.popleft()
            if item[0] is None:  # a refusal, queued behind earlier answers
                self._refuse_now(item[1], item[2])
                return
            self._serve(*item)
        if self._closed:
            return
        if self._eof and self._pending is None and not queue:
            self._close()
            return
        self._update_reading()

    def _update_reading(self) -> None:
        """Recompute ``_busy`` (an answer is owed before the next request's); pause reading once a
        request waits behind it, or the write buffer is full.

        Not as soon as an answer is owed: a client waiting for it sends nothing
        meanwhile, and pausing then cost two ``epoll_ctl`` calls per miss.  A
        pipelining client's next request is read, queued, and reading pauses
        then, so the queue is still bounded by one read.
        """
        queued = bool(self._queue)
        self._busy = self._pending is not None or queued or self._write_paused
        pause = queued or self._write_paused
        if pause != self._read_paused and not self._closed and not self._lingering:
            self._read_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _stop_after_answers(self) -> None:
        self._stopped = True
        if self._pending is None and not self._queue:
            self._close()
        else:
            self._eof = True

    # -- refusals, timeouts, closing -------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        """Answer *status* with Connection: close after any earlier answers, then linger."""
        self._stopped = True
        if self._closed:
            return
        if self._pending is not None or self._queue:
            if self._queue is None:
                self._queue = deque()
            self._queue.append((None, status, reason))
        else:
            self._refuse_now(status, reason)

    def _refuse_now(self, status: int, reason: str) -> None:
        plane = self._plane
        extra = RETRY_AFTER if status == 503 else b""
        out = render(error_reply(status, reason, extra), plane.date, END_CLOSE)
        self._transport.write(out)
        plane.bytes_written += len(out)
        label = self._router.route_label(self._url.partition(b"?")[0]) if self._url else UNMATCHED
        method = self._method.decode("ascii", "replace") if self._headers_done else "other"
        plane.metrics.observe(method, label, status, perf_counter() - (self._start or self._t0))
        self._linger()

    def _linger(self) -> None:
        """Half-close and discard input for a bounded time, so the client reads our answer."""
        transport = self._transport
        self._lingering = True
        self._linger_since = self._plane.tick
        self._queue = None
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()  # FIN after the buffered answer; reading goes on
        # (TLS cannot half-close: the client closes on our Connection: close, or the sweep does.)

    def check(self, now: float) -> None:
        """The sweep's visit (*now*: the worker's coarse clock): enforce the timeouts."""
        if self._closed:
            return
        plane = self._plane
        if self._lingering:
            if now - self._linger_since > plane.linger_timeout:
                self._close()
        elif self._write_paused:
            # A client that stopped reading its answers.
            if now - self._paused_at > plane.send_timeout:
                self._abort()
        elif self._pending is not None or self._queue:
            return  # our turn to answer; handlers have their own bounds
        elif self._in_request:
            # Slowloris: the head must arrive within the header timeout; a body
            # may not stall for longer than that between reads.
            since = self._last if self._headers_done else self._started
            if now - since > plane.header_timeout:
                self._refuse(408, "request timeout")
        elif now - self._last > (plane.keepalive_timeout if self._started else plane.header_timeout):
            # (_started is 0 until a request begins: a connection that never sent one gets
            # the header timeout from accept, not the keep-alive timeout of a served client.)
            self._close()

    def idle_since(self) -> float | None:
        """Coarse time since which this connection waits for a request, or None while it is not idle.

        Idle: no request being read, no answer owed, nothing queued or unsent.
        The plane evicts the longest-idle one at the connection cap.
        """
        if (self._closed or self._lingering or self._in_request or self._pending is not None
                or self._queue or self._write_paused):
            return None
        return self._last

    def evict(self) -> None:
        """Close this idle connection to make room for a new one (as its keep-alive timeout would)."""
        self._close()

    def shutdown(self) -> None:
        """Graceful close: an idle connection closes now, a busy one after its answers."""
        if self._closed:
            return
        if self._pending is None and not self._queue and not self._in_request:
            self._close()
        else:
            self._eof = True

    def _close(self) -> None:
        if not self._closed:
            if self._held is not None:  # a graceful close sends what was answered first
                self._write_held()
            self._closed = True
            self._transport.close()

    def _abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.abort()

    def abort(self) -> None:
        """Drop the connection now (past the graceful close's grace)."""
        self._abort()
