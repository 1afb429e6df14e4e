"""The data plane's bounds in time and number: slowloris, idle keep-alive, the connection cap,
clients that abort, back-pressure and the graceful close; plus metrics, TLS and the peer client.

Timeouts are configured short; tests wait for the server's close with a
bounded wait and never assert how long anything took.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import struct
import threading
import time

import pytest
from prometheus_client.utils import floatToGoString

from geecache.errors import NotFoundError, PeerError
from geecache.observability.metrics import LATENCY_BUCKETS
from geecache.cluster.httppeer import HTTPPeer
from geecache.cluster.pool import HTTPPool, StaticMembers
from tests.support.certs import client_context, self_signed
from tests.support.dataplane import HIT_PATHS, PlaneServer
from tests.support.h11client import exchange, read_answers, request_bytes
from workers.dataplane import Limits

#: SO_LINGER on with a zero timeout: close() sends a reset (a client that aborts).
RESET = struct.pack("ii", 1, 0)
SHORT = Limits(header_timeout=0.6, keepalive_timeout=0.6, max_connections=8, linger_timeout=0.5)
#: For the connection cap: timeouts no machine is slow enough to reach while the test fills the
#: cap, so the connections it holds open are still there when it asks for one more.
CAPPED = Limits(header_timeout=60.0, keepalive_timeout=60.0, max_connections=8, linger_timeout=0.5)


def wait_closed(sock: socket.socket, bound: float = 10.0) -> bytes:
    """Everything the server sends until it closes *sock* (bounded), or fail."""
    sock.settimeout(bound)
    data = b""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server did not close the connection")


@pytest.fixture(params=HIT_PATHS)
def short(tmp_path, request):
    server = PlaneServer(tmp_path, limits=SHORT, hit_path=request.param)
    yield server
    server.stop()


def test_slowloris_head_is_cut_off(short):
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", short.port), timeout=10)
            s.sendall(b"GET /api?key=a HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        for s in socks[:2]:  # trickling bytes does not extend the head's deadline
            s.sendall(b"a")
        for s in socks:
            answer = wait_closed(s)
            assert answer.startswith(b"HTTP/1.1 408 ") and b'"error"' in answer
    finally:
        for s in socks:
            s.close()
    assert short.run(lambda: short.plane.connections) == 0


def test_a_stalled_body_is_cut_off(short):
    with socket.create_connection(("127.0.0.1", short.port), timeout=10) as s:
        s.sendall(b"PUT /api?key=a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-some")
        assert wait_closed(s).startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connections_are_closed(short):
    with socket.create_connection(("127.0.0.1", short.port), timeout=10) as s:
        s.sendall(request_bytes("GET", "/healthz"))
        assert read_answers(s, ["GET"]).answers[0].status == 200
        assert wait_closed(s) == b""  # idle: closed without a word
    with socket.create_connection(("127.0.0.1", short.port), timeout=10) as s:
        assert wait_closed(s) == b""  # never sent anything


@pytest.fixture
def capped(tmp_path):
    server = PlaneServer(tmp_path, limits=CAPPED)
    yield server
    server.stop()


def _wait_connections(server, n: int) -> None:
    deadline = time.monotonic() + 10
    while server.run(lambda: server.plane.connections) != n:
        assert time.monotonic() < deadline, f"never {n} connections open"
        time.sleep(0.02)


def _served(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_bytes("GET", "/healthz", headers={"Connection": "close"}))
        return read_answers(s, ["GET"]).answers[0].status


def test_connection_cap_refuses_with_503_and_logs_when_no_connection_is_idle(capped, caplog):
    caplog.set_level(logging.WARNING, logger="geecache.worker")
    socks = []
    try:
        for _ in range(CAPPED.max_connections):  # each in the middle of a request head: busy
            s = socket.create_connection(("127.0.0.1", capped.port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        _wait_connections(capped, CAPPED.max_connections)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", capped.port), timeout=10) as extra:
                answer = wait_closed(extra)
                assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
        for s in socks:  # none of the busy ones was evicted: each finishes its request
            s.sendall(b"\r\n")
            assert read_answers(s, ["GET"]).answers[0].status == 200
    finally:
        for s in socks:
            s.close()
    cap_lines = [r for r in caplog.records if "the cap" in r.getMessage()]
    assert len(cap_lines) == 1  # rate-limited: one line for three refusals
    # Below the cap again, new clients are served.
    _wait_connections(capped, 0)
    assert _served(capped.port) == 200


def test_at_the_cap_the_longest_idle_connection_makes_room(capped, caplog):
    caplog.set_level(logging.WARNING, logger="geecache.worker")
    socks = []
    try:
        # Twice the cap of sockets that never send a byte (the header timeout is long here).
        for _ in range(2 * CAPPED.max_connections):
            socks.append(socket.create_connection(("127.0.0.1", capped.port), timeout=10))
        # Each new socket past the cap evicted the oldest idle one: the first half were closed
        # without a word, the second half are open.
        for s in socks[:CAPPED.max_connections]:
            assert wait_closed(s) == b""
        _wait_connections(capped, CAPPED.max_connections)
        statuses = [_served(capped.port) for _ in range(20)]
        assert statuses == [200] * 20
    finally:
        for s in socks:
            s.close()
    _wait_connections(capped, 0)
    # A served keep-alive client that has been idle the longest goes first.
    socks = []
    try:
        socks.append(socket.create_connection(("127.0.0.1", capped.port), timeout=10))
        socks[0].sendall(request_bytes("GET", "/healthz"))
        assert read_answers(socks[0], ["GET"]).answers[0].status == 200
        for _ in range(CAPPED.max_connections - 1):
            socks.append(socket.create_connection(("127.0.0.1", capped.port), timeout=10))
        _wait_connections(capped, CAPPED.max_connections)
        assert _served(capped.port) == 200
        assert wait_closed(socks[0]) == b""
        _wait_connections(capped, CAPPED.max_connections - 1)  # the others are all still open
    finally:
        for s in socks:
            s.close()
    assert any("closed" in r.getMessage() and "idle ones for new clients" in r.getMessage()
               for r in caplog.records)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(tmp_path):
    server = PlaneServer(tmp_path, limits=Limits(header_timeout=0.6, keepalive_timeout=300.0,
                                                 max_connections=8, linger_timeout=0.5))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as served:
            served.sendall(request_bytes("GET", "/healthz"))
            assert read_answers(served, ["GET"]).answers[0].status == 200
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
                assert wait_closed(silent, bound=60.0) == b""  # long before the keep-alive timeout
            # The served client, idle since before the silent one came, keeps its connection.
            served.sendall(request_bytes("GET", "/healthz"))
            assert read_answers(served, ["GET"]).answers[0].status == 200
    finally:
        server.stop()


@pytest.fixture(scope="module", params=HIT_PATHS)
def metered(tmp_path_factory, request):
    from prometheus_client import CollectorRegistry

    from geecache.observability.metrics import HttpMetrics

    registry = CollectorRegistry(auto_describe=False)
    server = PlaneServer(tmp_path_factory.mktemp("metered"), http_metrics=HttpMetrics(registry), auth_token="tok",
                         hit_path=request.param)
    server.registry = registry
    yield server
    server.stop()


def scrape(server) -> str:
    from prometheus_client import generate_latest

    server.run(server.plane._plane.metrics.flush)
    return generate_latest(server.registry).decode()


def sample(text: str, name: str, **labels) -> float:
    """The sample of *name* with exactly *labels*; a status like ``5xx`` sums its class's codes."""
    klass = labels.get("status", "")[:1] if str(labels.get("status", "")).endswith("xx") else None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = dict(part.split("=", 1) for part in line[len(name) + 1:line.index("}")].split(","))
            got = {k: v.strip('"') for k, v in got.items()}
            if klass is not None and got.get("status", "")[:1] == klass:
                got["status"] = labels["status"]
            if got == {k: str(v) for k, v in labels.items()}:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_client_aborts_are_not_errors(metered, caplog):
    caplog.set_level(logging.DEBUG)
    before = scrape(metered)

    def slow_loads() -> int:
        return metered.run(lambda: metered.groups["slow"].stats.snapshot().get("loads", 0))

    for i in range(10):
        with socket.create_connection(("127.0.0.1", metered.port), timeout=10) as s:
            s.sendall(b"PUT /api?key=abort HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                      b"Content-Length: 1000\r\n\r\nsome of it")
        with socket.create_connection(("127.0.0.1", metered.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            loads = slow_loads()
            s.sendall(request_bytes("GET", f"/api?group=slow&key=gone-{i}"))  # a load, then a reset
            # The server has read it (its load began) before the reset: an event, not a sleep.
            deadline = time.monotonic() + 15
            while slow_loads() == loads and time.monotonic() < deadline:
                time.sleep(0.005)
            assert slow_loads() > loads, "the server never read the request"
        with socket.create_connection(("127.0.0.1", metered.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            s.sendall(b"GET /api?key=abort HTTP/1.1\r\nHo")  # a reset mid-head
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and metered.run(lambda: len(metered.plane._plane.tasks)):
        time.sleep(0.05)
    after = scrape(metered)
    five = sum(sample(after, "geecache_http_requests_total", method=m, route=r, status="5xx")
               for m in ("GET", "PUT") for r in ("/api", "unmatched"))
    assert five == 0
    # (A load whose client reset meanwhile is counted as answered: reading is paused while it
    # runs, so the reset is only seen when the answer is written.)
    answered = sample(after, "geecache_http_requests_total", method="GET", route="/api", status="2xx") \
        - sample(before, "geecache_http_requests_total", method="GET", route="/api", status="2xx")
    assert answered + sample(after, "geecache_http_requests_total", method="GET", route="/api",
                             status="4xx") >= 10
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


def test_request_metrics_resolve_a_hit(metered):
    r = exchange(metered.port, request_bytes("PUT", "/api?key=m", b"v", headers={"Authorization": "Bearer tok"}),
                 ["PUT"])
    assert r.answers[0].status == 204
    before = scrape(metered)
    n = 50
    # One request a read (pipelined, every answer's duration would start at the read's).
    statuses = [exchange(metered.port, request_bytes("GET", "/api?key=m"), ["GET"]).answers[0].status
                for _ in range(n)]
    statuses.append(exchange(metered.port, request_bytes("GET", "/nope"), ["GET"]).answers[0].status)
    assert statuses == [200] * n + [404]
    text = scrape(metered)
    count = lambda t, **kw: sample(t, "geecache_http_requests_total", **kw)  # noqa: E731
    assert count(text, method="GET", route="/api", status="2xx") - count(before, method="GET", route="/api",
                                                                          status="2xx") == n
    assert count(text, method="GET", route="unmatched", status="4xx") >= 1
    # The lowest bucket is 25 us, and each hit lands in the bucket of its own duration (not all
    # in one coarse bucket): the bucket counts bound the recorded sum from both sides.  That
    # holds however fast or busy the machine is (a pause moves a hit up a few buckets, and the
    # sum with it).
    assert 'le="2.5e-05"' in text
    labels = {"method": "GET", "route": "/api", "status": "2xx"}

    def counts(t: str) -> list[float]:  # per bucket, not cumulative; +Inf last
        cum = [sample(t, "geecache_http_request_duration_seconds_bucket", le=floatToGoString(b), **labels)
               for b in (*LATENCY_BUCKETS, float("inf"))]
        return [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]

    got = [a - b for a, b in zip(counts(text), counts(before))]
    total = sample(text, "geecache_http_request_duration_seconds_sum", **labels) \
        - sample(before, "geecache_http_request_duration_seconds_sum", **labels)
    assert sum(got) == n
    lower = sum(c * lo for c, lo in zip(got, (0.0, *LATENCY_BUCKETS)))
    upper = sum(c * hi for c, hi in zip(got, LATENCY_BUCKETS)) + (float("inf") if got[-1] else 0.0)
    assert lower <= total * (1 + 1e-9) and total <= upper * (1 + 1e-9), (got, total)
    # PUT without the token: 401 with a challenge.
    answer = exchange(metered.port, request_bytes("PUT", "/api?key=m", b"v"), ["PUT"]).answers[0]
    assert answer.status == 401 and "bearer" in answer.headers["www-authenticate"].lower()


def test_graceful_close_finishes_in_flight_requests(tmp_path):
    server = PlaneServer(tmp_path)
    stopped = False
    try:
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle.sendall(request_bytes("GET", "/healthz"))
        assert read_answers(idle, ["GET"]).answers[0].status == 200
        busy.sendall(request_bytes("GET", "/api?group=slow&key=graceful"))  # a 0.3 s load
        deadline = time.monotonic() + 10
        while not server.run(lambda: len(server.plane._plane.tasks)) and time.monotonic() < deadline:
            time.sleep(0.01)
        closer = threading.Thread(target=server.stop, args=(10.0,))
        closer.start()
        stopped = True
        r = read_answers(busy, ["GET"], until_closed=True)
        assert (r.answers[0].status, r.answers[0].body) == (200, b"value-graceful") and r.closed
        assert wait_closed(idle) == b""
        closer.join(30)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        if not stopped:
            server.stop()


@pytest.mark.procs  # openssl makes the certificate
def test_tls(tmp_path):
    import ssl

    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = PlaneServer(tmp_path, ssl_context=ctx, auth_token="tls-token")
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=client_context(cert))
        try:
            conn.request("PUT", "/api?key=secure", body=b"over-tls", headers={"Authorization": "Bearer tls-token"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (204, b"")
            for _ in range(2):
                conn.request("GET", "/api?key=secure")
                resp = conn.getresponse()
                assert (resp.status, resp.read()) == (200, b"over-tls")
            conn.request("GET", "/api?key=%ff")
            resp = conn.getresponse()
            assert resp.status == 400 and b"error" in resp.read()
        finally:
            conn.close()

        async def peer_fetch():
            pool = HTTPPool("me:1", StaticMembers([]), token="tls-token", tls=True,
                            ssl_context=client_context(cert))
            peer = HTTPPeer(pool, f"127.0.0.1:{server.port}")
            try:
                return await peer.fetch("kv", "secure", 1 << 20)
            finally:
                peer.close()
        assert asyncio.run(peer_fetch())[0] == b"over-tls"
    finally:
        server.stop()


def test_peer_client_interoperates(tmp_path):
    server = PlaneServer(tmp_path, auth_token="peer-token")
    try:
        async def main():
            pool = HTTPPool("me:1", StaticMembers([]), token="peer-token", codecs={"kv": "zstd"})
            peer = HTTPPeer(pool, f"127.0.0.1:{server.port}")
            wrong = HTTPPeer(HTTPPool("me:1", StaticMembers([]), token="nope"), f"127.0.0.1:{server.port}")
            try:
                value = b"compressible " * 100
                await peer.set("kv", "a/b c", value, ttl=60)         # a key that needs quoting
                got, expire_at = await peer.fetch("kv", "a/b c", 1 << 20)
                assert got == value and expire_at > time.time()
                assert (await peer.fetch("upper", "remote", 100))[0] == b"REMOTE"  # a miss: loaded there
                assert (await peer.fetch("upper", "remote", 100))[0] == b"REMOTE"  # now a hit
                with pytest.raises(NotFoundError):
                    await peer.fetch("slow", "missing-peer", 100)
                await peer.invalidate("kv", ["a/b c"])
                assert await peer.delete("kv", "a/b c") is True
                assert await peer.delete("kv", "a/b c") is False
                with pytest.raises(PeerError, match="401"):
                    await wrong.fetch("kv", "x", 100)
                with pytest.raises(PeerError, match="400"):
                    await peer.fetch("nosuch", "x", 100)
            finally:
                peer.close()
                wrong.close()
        asyncio.run(main())
        assert server.groups["upper"].stats.snapshot()["peer_requests"] >= 2
    finally:
        server.stop()


def test_empty_lines_between_requests_are_not_a_slow_head(short):
    with socket.create_connection(("127.0.0.1", short.port), timeout=10) as s:
        s.sendall(request_bytes("GET", "/healthz"))
        assert read_answers(s, ["GET"]).answers[0].status == 200
        s.sendall(b"\r\n")  # a stray CRLF after the request: the connection is idle, not slow
        assert wait_closed(s) == b""  # closed by the idle timeout, without a 408
