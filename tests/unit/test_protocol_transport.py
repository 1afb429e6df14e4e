"""The data plane's protocol driven without a socket: bytes in through ``data_received``,
answers read off a recording transport (uvicorn's MockTransport tests, for our protocol).

Real groups over a real in-process cache and source; only the socket is replaced, so these
pin framing, pipelining, flow control and the connection states in microseconds each.
"""

from __future__ import annotations

import asyncio
import fcntl
import os

import h11
import pytest

from geecache.group import Group
from geecache.storage import MemoryStorage
from tests.support.h11client import Reader
from workers.dataplane.protocol import DataPlaneProtocol
from workers.dataplane.routes import Router
from workers.dataplane.server import Limits, _Plane

VALUES = {"Tom": b"630", "Jack": b"589", "big": b"x" * 50_000}


class RecordingTransport(asyncio.Transport):
    """What a protocol writes, and whether it paused reading or closed; no socket behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.eof_written = False  # half-closed: our FIN after the buffered answer
        self.reading = True

    def write(self, data) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def writelines(self, chunks) -> None:
        for c in chunks:
            self.write(c)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def responses(raw: bytes, most: int = 16) -> list[tuple[int, dict, bytes]]:
    """The complete answers at the start of *raw*, parsed by an independent HTTP/1.1 parser (h11)."""
    reader = Reader(["GET"] * most)
    try:
        reader.feed(raw)
    except h11.RemoteProtocolError:  # a partial answer at the end: h11 wants more bytes
        pass
    return [(a.status, a.headers, a.body) for a in reader.answers]


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def plane(loop):
    groups = {"g": Group("g", MemoryStorage(dict(VALUES)), max_bytes=1 << 20),
              "other": Group("other", MemoryStorage({"a": b"1"}), max_bytes=1 << 20)}
    return _Plane(loop, Router(groups), Limits(), 1 << 20, None, False)


def connect(plane):
    proto = DataPlaneProtocol(plane)
    transport = RecordingTransport()
    proto.connection_made(transport)
    return proto, transport


def settle(loop, plane, transport, answers: int, budget: int = 200) -> list:
    """Run the loop until *answers* complete answers were written (bounded in turns)."""
    for _ in range(budget):
        got = responses(bytes(transport.out))
        if len(got) >= answers:
            return got
        loop.run_until_complete(asyncio.sleep(0.01))
    raise AssertionError(f"{answers} answers expected, got {responses(bytes(transport.out))}")


def get(key: str, extra: str = "") -> bytes:
    return f"GET /api?key={key} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_a_hit_is_answered_inside_data_received_with_no_task(loop, plane):
    proto, t = connect(plane)
    proto.data_received(get("Tom"))
    settle(loop, plane, t, 1)  # the miss: loaded through a task
    t.out.clear()
    proto.data_received(get("Tom"))
    # Answered before data_received returned: no loop turn, no task.
    [(status, headers, body)] = responses(bytes(t.out))
    assert (status, body) == (200, b"630") and not plane.tasks
    assert headers["content-length"] == "3" and not t.closed


def test_a_miss_is_loaded_in_a_task_and_answered_once(loop, plane):
    proto, t = connect(plane)
    proto.data_received(get("Jack"))
    assert t.out == b"" and len(plane.tasks) == 1  # owed, not yet written
    [(status, _, body)] = settle(loop, plane, t, 1)
    assert (status, body) == (200, b"589") and not plane.tasks


def test_pipelined_hit_miss_hit_answer_in_request_order(loop, plane):
    proto, t = connect(plane)
    proto.data_received(get("Tom"))
    settle(loop, plane, t, 1)
    t.out.clear()
    proto.data_received(get("Tom") + get("Jack") + get("nosuch") + get("Tom"))
    got = settle(loop, plane, t, 4)
    assert [(s, b) for s, _, b in got][:2] == [(200, b"630"), (200, b"589")]
    assert got[2][0] == 404 and got[3][:1] == (200,) and got[3][2] == b"630"


def test_requests_split_at_every_byte_give_the_same_answers(loop, plane):
    raw = get("Tom") + b"GET /api?group=other&key=a HTTP/1.1\r\nHost: t\r\n\r\n"
    proto, t = connect(plane)
    for i in range(len(raw)):
        proto.data_received(raw[i:i + 1])
    got = settle(loop, plane, t, 2)
    assert [(s, b) for s, _, b in got] == [(200, b"630"), (200, b"1")]


def test_connection_close_is_honoured_and_later_bytes_ignored(loop, plane):
    proto, t = connect(plane)
    proto.data_received(get("Tom", "Connection: close\r\n") + get("Jack"))
    got = settle(loop, plane, t, 1)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert len(responses(bytes(t.out))) == 1 and got[0][1]["connection"] == "close" and t.closed


def test_malformed_bytes_get_a_400_with_a_json_reason_then_close(loop, plane):
    proto, t = connect(plane)
    proto.data_received(b"GET /api?key=Tom HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
    [(status, headers, body)] = settle(loop, plane, t, 1)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert b"malformed HTTP request" in body and headers["connection"] == "close"
    assert t.eof_written  # half-closed, lingering so the client reads the answer before the close


def test_an_incomplete_head_past_the_header_timeout_is_a_408(loop, plane):
    proto, t = connect(plane)
    proto.data_received(b"GET /api?key=Tom HTTP/1.1\r\nHost: t\r\n")  # no blank line yet
    proto.check(plane.tick + plane.header_timeout + 1)
    [(status, _, body)] = settle(loop, plane, t, 1)
    assert status == 408 and b"error" in body and t.eof_written


def test_an_idle_keep_alive_connection_is_closed_quietly(loop, plane):
    proto, t = connect(plane)
    proto.data_received(get("Tom"))
    settle(loop, plane, t, 1)
    written = len(t.out)
    proto.check(plane.tick + plane.keepalive_timeout + 1)
    assert t.closed and len(t.out) == written  # no answer owed: nothing written, just closed


def test_a_client_that_stops_reading_pauses_our_reading_of_it(loop, plane):
    proto, t = connect(plane)
    proto.pause_writing()  # the transport's buffer is over its high-water mark
    proto.data_received(get("big") + get("big") + get("big"))
    loop.run_until_complete(asyncio.sleep(0.05))
    assert not t.reading  # answers queue instead of growing the buffer, and we stop reading
    proto.resume_writing()
    got = settle(loop, plane, t, 3)
    assert [len(b) for _, _, b in got] == [50_000] * 3 and t.reading


@pytest.fixture
def sqlite_plane(loop, tmp_path):
    from geecache.storage import SQLiteStorage

    groups = {"w": Group("w", SQLiteStorage(tmp_path / "w.db"), max_bytes=1 << 20)}
    return _Plane(loop, Router(groups), Limits(), 1 << 20, None, False)


def inside(loop, fn, *args):
    """*fn(*args)* called on the running loop (a source's committer belongs to the loop it runs on)."""
    async def call():
        return fn(*args)
    return loop.run_until_complete(call())


def after_answer(write, fn) -> None:
    """Call *fn(write)* right after the queued *write*'s own callback (the protocol's) ran."""
    answered = write.callback

    def both(w):
        answered(w)
        fn(w)
    write.callback = both


def put_bytes(key: str, value: bytes, extra: str = "") -> bytes:
    return f"PUT /api?key={key} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(value)}\r\n{extra}\r\n".encode() + value


def test_commit_answers_are_written_together_after_the_commits_callbacks(loop, sqlite_plane, tmp_path):
    # Rows of one commit: each connection's 204 is held until every row's callback ran, then
    # all are written back to back at the end of the turn (the clients wake together).
    # The test holds the host's write turn while the rows queue, so that they share one
    # commit: a commit thread that took the first row alone would answer it before the rest.
    conns = [connect(sqlite_plane) for _ in range(4)]
    turn = os.open(str(tmp_path / "w.db") + "-writer", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        for i, (proto, _) in enumerate(conns):
            inside(loop, proto.data_received, put_bytes(f"k{i}", b"v%d" % i))
        writes = [proto._pending for proto, _ in conns]
        assert len(set(map(id, writes))) == 4 and all(w is not None for w in writes)
        seen = []  # after the last row's callback: what had been written by then
        after_answer(writes[-1], lambda w: seen.append([bytes(t.out) for _, t in conns]))
    finally:
        os.close(turn)  # the turn with it: the commit goes on with every row queued
    for _, t in conns:
        settle(loop, sqlite_plane, t, 1)
    assert seen == [[b""] * 4]
    for _, t in conns:
        assert [status for status, _, _ in responses(bytes(t.out))] == [204]


def test_a_held_commit_answer_goes_out_before_the_transport_closes_on_eof(loop, sqlite_plane):
    # The client half-closes once its answer is held but not yet written: the transport
    # closes itself when eof_received says so, and the answer must be out before that.
    proto, t = connect(sqlite_plane)
    inside(loop, proto.data_received, put_bytes("eof", b"x"))
    committed = proto._pending

    def client_eof(_):
        if not proto.eof_received():
            t.close()  # what the event loop's transport does when eof_received is falsy
    after_answer(committed, client_eof)
    for _ in range(200):
        if t.closed:
            break
        loop.run_until_complete(asyncio.sleep(0.01))
    assert t.closed
    assert [status for status, _, _ in responses(bytes(t.out))] == [204]


def test_a_request_read_while_an_answer_is_held_is_answered_after_it(loop, sqlite_plane):
    proto, t = connect(sqlite_plane)
    inside(loop, proto.data_received, put_bytes("order", b"new"))
    committed = proto._pending
    # The next request arrives between the commit's callback and the end of the turn.
    after_answer(committed, lambda w: proto.data_received(get("order")))
    got = settle(loop, sqlite_plane, t, 2)
    assert [(status, body) for status, _, body in got] == [(204, b""), (200, b"new")]
