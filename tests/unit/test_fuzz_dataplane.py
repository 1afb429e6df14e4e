"""Whatever a client sends, the data plane answers without a 5xx or a traceback.

The idea of ``test_fuzz_http.py`` pointed at the data plane's own protocol:
a seeded mix of methods, targets, queries, headers and bodies (valid, odd
and malformed), some with bytes flipped, cut into random pieces, several
pipelined on one connection, sent over raw sockets to a real data plane
over a real arena.  Every answer must start with an HTTP/1.1 status line,
be < 500, carry no traceback; nothing may be logged at ERROR.  Bounded: a
fixed count of requests; the client half-closes so the server ends each
exchange, and every read has a timeout.
"""

from __future__ import annotations

import logging
import random
import re
import socket

import pytest

from geecache.group import Group
from geecache.storage import MemoryStorage, SQLiteStorage, load_source
from tests.support.dataplane import HIT_PATHS, PlaneServer
from tests.support.net import read_to_eof

TOKEN = "fuzz-token"
METHODS = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH", "OPTIONS", "BREW", "CONNECT", "GET"]
PATHS = ["/api"] * 12 + ["/_geecache/kv/k"] * 3 + ["/healthz", "/metrics", "/cluster", "/_geecache/kv/k", "/_geecache/kv", "/_geecache/kv/",
         "/_geecache/nosuch/x", "/_geecache/kv/%ff", "/_geecache/%ff/k", "/", "/api/", "/%ff", "/api%00",
         "/" + "a" * 3000, "*", "http://127.0.0.1/api", "/api#frag"]
QUERIES = ["key=Tom", "group=mem&key=m1", "group=kv&key=k2"] * 4 + ["", "key=Tom", "key=", "key", "group=kv&key=k1", "group=upper&key=abc", "group=nosuch&key=a",
           "key=" + "x" * 251, "key=%ff%fe", "key=%00", "key=a&key=b", "group=&key=a", "key=%C3%A9" * 60,
           "group=hot:kv&key=a", "key=a%2Fb&group=kv", "key=a+b", "key=%zz", "key=%", "ttl=nan&key=a",
           "key=a&ttl=-1", "key=a&ttl=1e9", "&&key=a&&", "key=" + "%41" * 3000]
HEADERS = ["", f"Authorization: Bearer {TOKEN}\r\n", "Authorization: Bearer wrong\r\n",
           "Authorization: Bearer \xff\r\n", "Content-Type: application/x-protobuf\r\n",
           "Expect: 100-continue\r\n", "Expect: something-else\r\n", "Connection: keep-alive, Upgrade\r\n"
           "Upgrade: h2c\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: 99999999\r\n",
           "Content-Length: -1\r\n", "X-Null: a\x00b\r\n", " leading-space: x\r\n", "NoColon\r\n",
           "X-Long: " + "l" * 20000 + "\r\n"]
BODIES = [b"", b"value", b"x" * 5000, b"\x0a\xff\xff\xff", b"\x0a\x01k\x12\x01v", b"5\r\nhello\r\n0\r\n\r\n",
          b"zz\r\n"]


def fuzz_groups(tmp, arena):
    def group(name, source, **kw):
        return Group(name, source, max_bytes=2 << 20, cache=arena, flight=arena, **kw)

    return {"kv": group("kv", SQLiteStorage(tmp / "kv.db"), item_limit=4096),
            "mem": group("mem", MemoryStorage()),
            "upper": group("upper", load_source("tests.support.loaders:sync_upper"))}


@pytest.fixture(scope="module", params=HIT_PATHS)
def plane(tmp_path_factory, request):
    server = PlaneServer(tmp_path_factory.mktemp("fuzz-dp"), groups=fuzz_groups, item_limit=4096,
                         auth_token=TOKEN, hit_path=request.param)
    yield server
    server.stop()


def random_request(rng: random.Random) -> bytes:
    method = rng.choice(METHODS)
    target = rng.choice(PATHS)
    query = rng.choice(QUERIES)
    if query:
        target += "?" + query
    body = rng.choice(BODIES + [bytes(rng.randrange(256) for _ in range(rng.randrange(64)))])
    headers = "".join(rng.choice(HEADERS) for _ in range(rng.randrange(3)))
    if rng.random() < 0.4:
        headers += HEADERS[1]  # the token, often enough that writes get through
    framing = "" if "Content-Length" in headers or "Transfer-Encoding" in headers else \
        f"Content-Length: {len(body)}\r\n"
    version = rng.choice(["1.1"] * 12 + ["1.0", "0.9", "2.0", "1.1 x"])
    raw = (f"{method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\n{headers}{framing}\r\n")
    raw = raw.encode("utf-8", "surrogateescape") + body
    if rng.random() < 0.15:  # flip a few bytes anywhere
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        raw = bytes(data)
    return raw


def send(port: int, data: bytes, rng: random.Random) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pos = 0
        try:
            while pos < len(data):  # in random pieces, to cross every parser boundary
                step = rng.choice([1, 7, 64, 1500, len(data)])
                s.sendall(data[pos:pos + step])
                pos += step
            s.shutdown(socket.SHUT_WR)  # the server answers what it read, then closes
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN
            pass  # it refused and closed first; what it sent is still readable
        return read_to_eof(s)


STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def test_random_requests_never_get_a_5xx(plane, caplog):
    caplog.set_level(logging.WARNING)
    for target in ("/api?key=Tom", "/api?group=mem&key=m1", "/api?group=kv&key=k2"):  # some hits to find
        assert send(plane.port, f"PUT {target} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Length: 2\r\n\r\nok".encode(), random.Random(0)).startswith(b"HTTP/1.1 204 ")
    rng = random.Random(20261201)
    statuses: dict[int, int] = {}
    for i in range(500):
        n = 1 if i % 5 else rng.randrange(2, 6)  # every fifth exchange pipelines a few
        data = b"".join(random_request(rng) for _ in range(n))
        answer = send(plane.port, data, rng)
        assert b"Traceback" not in answer
        found = STATUS.findall(answer)
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), (data[:200], answer[:200])
        for code in map(int, found):
            assert code < 500, (data[:300], answer[:500])
            statuses[code] = statuses.get(code, 0) + 1
    # The mix reached real answers as well as refusals of every kind.
    for code in (200, 400, 401, 404, 405, 413, 414, 431):
        assert statuses.get(code, 0) > 0, statuses
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
