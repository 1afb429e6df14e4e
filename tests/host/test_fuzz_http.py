"""Whatever a client sends, a host answers it without a 5xx or a traceback.

A seeded random mix of methods, paths, query strings, headers and bodies
(valid, odd and malformed) goes to a real supervisor over raw sockets, so
even requests an HTTP library would refuse to build are sent.  Bounded: a
fixed count of requests, each with a socket timeout.
"""

from __future__ import annotations

import random
import socket

import pytest

from tests.support.proc import start_supervisor

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs

TOKEN = "fuzz-token"
CONFIG = """
[[groups]]
name = "kv"
sqlite = "{db}"
item_limit = "4KiB"

[[groups]]
name = "upper"
loader = "tests.support.loaders:sync_upper"
"""
METHODS = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH", "OPTIONS", "BREW"]
PATHS = ["/api", "/stats", "/healthz", "/metrics", "/cluster", "/_geecache/kv/k", "/_geecache/kv",
         "/_geecache/nosuch/x", "/", "/api/", "/%ff", "/api%00", "/" + "a" * 3000]
QUERIES = ["", "key=Tom", "key=", "key", "group=kv&key=k1", "group=upper&key=abc", "group=nosuch&key=a",
           "key=" + "x" * 251, "key=%ff%fe", "key=%00", "key=a&key=b", "group=&key=a", "key=é" * 60,
           "group=hot:kv&key=a", "key=a%2Fb&group=kv"]
HEADERS = ["", f"Authorization: Bearer {TOKEN}\r\n", "Authorization: Bearer wrong\r\n",
           "Authorization: Bearer \xff\r\n", "Content-Type: application/x-protobuf\r\n",
           "Authorization: Basic Zm9vOmJhcg==\r\n"]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "geecache.toml").write_text(CONFIG.format(db=tmp / "kv.db"))
    h = start_supervisor(tmp, "--config", str(tmp / "geecache.toml"), "--auth-token", TOKEN, workers=2)
    yield h
    assert h.stop() == 0


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)  # "Connection: close": the server ends the exchange
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def random_request(rng: random.Random) -> bytes:
    method = rng.choice(METHODS)
    target = rng.choice(PATHS)
    query = rng.choice(QUERIES)
    if query:
        target += "?" + query
    body = rng.choice([b"", b"value", bytes(rng.randrange(256) for _ in range(rng.randrange(64))),
                       b"x" * 5000, b"\x0a\xff\xff\xff"])
    head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{rng.choice(HEADERS)}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("utf-8", "surrogateescape") + body


def test_random_requests_never_get_a_5xx(host):
    rng = random.Random(20261122)
    statuses = {}
    for _ in range(400):
        request = random_request(rng)
        answer = raw_request(host.port, request)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), (request[:300], answer[:200])
        status = int(status_line.split()[1])
        assert status < 500, answer[:500]
        assert b"Traceback" not in answer
        statuses[status] = statuses.get(status, 0) + 1
    # The mix reached real answers as well as refusals.
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0 and statuses.get(404, 0) > 0
    assert statuses.get(401, 0) > 0 and statuses.get(405, 0) > 0
    assert "Traceback" not in host.log()
