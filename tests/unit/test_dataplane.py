"""The data plane's HTTP/1.1, served for real over a real arena, read by several real clients.

Every raw exchange is parsed by h11 (``tests.support.h11client``), a parser
that shares no code with the server; curl, ``http.client`` and aiohttp's
client talk to it as they would to any server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import subprocess

import aiohttp
import pytest

from tests.support.dataplane import HIT_PATHS, PlaneServer
from tests.support.h11client import Reader, exchange, read_answers, request_bytes


@pytest.fixture(scope="module", params=HIT_PATHS)
def plane(tmp_path_factory, request):
    server = PlaneServer(tmp_path_factory.mktemp("dataplane"), auth_token=None, hit_path=request.param)
    yield server
    server.stop()


def put(plane, key: str, value: bytes, group: str = "kv") -> None:
    r = exchange(plane.port, request_bytes("PUT", f"/api?key={key}&group={group}", value), ["PUT"])
    assert r.answers[0].status == 204, r.answers[0]


# -- hits, misses and the route table ------------------------------------------------------


def test_hit_miss_and_headers(plane):
    r = exchange(plane.port, request_bytes("GET", "/api?group=upper&key=abc") * 2, ["GET", "GET"])
    miss, hit = r.answers
    assert (miss.status, miss.body) == (200, b"ABC") and (hit.status, hit.body) == (200, b"ABC")
    assert hit.headers["content-type"] == "application/octet-stream"
    assert hit.headers["content-length"] == "3" and "date" in hit.headers
    assert not r.closed


def test_default_group_is_the_first(plane):
    put(plane, "Tom", b"630")
    answer = exchange(plane.port, request_bytes("GET", "/api?key=Tom"), ["GET"]).answers[0]
    assert (answer.status, answer.body) == (200, b"630")


@pytest.mark.parametrize("method,target,status", [
    ("GET", "/api", 400),                       # no key
    ("GET", "/api?key=", 400),                  # empty key
    ("GET", "/api?key=" + "k" * 251, 400),      # over the key limit
    ("GET", "/api?key=a&group=nope", 400),
    ("GET", "/api?key=a&group=", 400),
    ("GET", "/api?group=slow&key=missing-1", 404),
    ("GET", "/api?group=broken&key=x", 502),    # the source raised: the client sees a 502, not a crash
    ("POST", "/api?key=a", 405),
    ("PATCH", "/healthz", 405),
    ("GET", "/nope", 404),
    ("GET", "/api/", 404),
    ("GET", "/stats", 404),                     # the admin plane's, not the data port's
    ("GET", "/_geecache/", 404),
    ("GET", "/_geecache/kv/", 404),
    ("GET", "/_geecache/kv", 405),              # the invalidate path takes POST only
    ("GET", "/_geecache/nope/k", 400),
    ("PUT", "/api?key=a&group=upper", 405),     # read-only source
    ("PUT", "/api?key=a&ttl=soon", 400),
    ("PUT", "/api?key=big&group=small", 413),   # over the group's item limit
    ("DELETE", "/api?key=never-there", 404),
])
def test_errors_are_json_with_a_reason(plane, method, target, status):
    body = b"0123456789abcdefXYZ" if method == "PUT" else b""
    answer = exchange(plane.port, request_bytes(method, target, body), [method]).answers[0]
    assert answer.status == status, answer
    reason = answer.json["error"]
    assert reason and "Traceback" not in reason
    if status == 405:
        assert "GET" in answer.headers["allow"] or "POST" in answer.headers["allow"]


def test_405_lists_allowed_methods(plane):
    answer = exchange(plane.port, request_bytes("OPTIONS", "/api?key=a"), ["OPTIONS"]).answers[0]
    assert answer.status == 405 and answer.headers["allow"] == "DELETE, GET, HEAD, PUT"
    answer = exchange(plane.port, request_bytes("PUT", "/api?key=a&group=upper", b"x"), ["PUT"]).answers[0]
    assert answer.status == 405 and answer.headers["allow"] == "GET, HEAD"


def test_put_get_delete_round_trip_with_ttl_param(plane):
    put(plane, "Ann", b"701")
    r = exchange(plane.port, request_bytes("GET", "/api?key=Ann") + request_bytes("DELETE", "/api?key=Ann")
                 + request_bytes("GET", "/api?key=Ann") + request_bytes("PUT", "/api?key=Ann&ttl=30", b"9"),
                 ["GET", "DELETE", "GET", "PUT"])
    assert [a.status for a in r.answers] == [200, 204, 404, 204]
    assert r.answers[0].body == b"701" and "content-length" not in r.answers[1].headers


def test_put_and_delete_of_an_owned_key_are_answered_from_their_commits_without_a_task(plane):
    """PUT and DELETE /api?key=K of a key this plane owns (no peers) are answered from their
    commit's Future: no task is spawned, and pipelined they still answer in order."""
    spawned = []
    inner = plane.plane._plane

    def counting(coro):
        spawned.append(coro)
        return type(inner).spawn(inner, coro)

    plane.run(setattr, inner, "spawn", counting)
    try:
        r = exchange(plane.port, request_bytes("PUT", "/api?key=fast-del", b"v") + request_bytes(
            "DELETE", "/api?key=fast-del") + request_bytes("DELETE", "/api?key=fast-del"),
            ["PUT", "DELETE", "DELETE"])
        one = exchange(plane.port, request_bytes("DELETE", "/api?key=fast-del"), ["DELETE"])
    finally:
        plane.run(delattr, inner, "spawn")
    assert [a.status for a in r.answers] == [204, 204, 404], r.answers
    assert "error" in json.loads(r.answers[2].body)
    assert one.answers[0].status == 404
    assert spawned == []
    # Deleted from the source and the cache: a GET loads nothing.
    assert exchange(plane.port, request_bytes("GET", "/api?key=fast-del"), ["GET"]).answers[0].status == 404


def test_healthz(plane):
    answer = exchange(plane.port, request_bytes("GET", "/healthz"), ["GET"]).answers[0]
    assert answer.json["status"] == "ok" and answer.json["groups"][0] == "kv"


# -- keys from the raw query -----------------------------------------------------------------


def test_invalid_utf8_keys_are_refused_and_never_collide(plane):
    for target in ("/api?key=%ff", "/api?key=%fe", "/api?key=a%c3", "/api?key=ok&group=%ff"):
        answer = exchange(plane.port, request_bytes("GET", target), ["GET"]).answers[0]
        assert answer.status == 400 and "UTF-8" in answer.json["error"], target
    answer = exchange(plane.port, request_bytes("PUT", "/api?key=%ff", b"v"), ["PUT"]).answers[0]
    assert answer.status == 400
    # A literal U+FFFD is an ordinary key of its own.
    put(plane, "%EF%BF%BD", b"replacement-char")
    answer = exchange(plane.port, request_bytes("GET", "/api?key=%EF%BF%BD"), ["GET"]).answers[0]
    assert answer.body == b"replacement-char"


def test_query_decoding_matches_what_aiohttp_gave(plane):
    put(plane, "a+b", b"plus-is-space")            # '+' is a space, as yarl decoded it
    for target in ("/api?key=a%20b", "/api?key=a+b", "/api?k%65y=a+b", "/api?key=a+b&key=other"):
        answer = exchange(plane.port, request_bytes("GET", target), ["GET"]).answers[0]
        assert (answer.status, answer.body) == (200, b"plus-is-space"), target
    put(plane, "x%2By", b"literal-plus")
    answer = exchange(plane.port, request_bytes("GET", "/api?group=kv&key=x%2By"), ["GET"]).answers[0]
    assert answer.body == b"literal-plus"
    put(plane, "%C3%A9t%C3%A9%20%2F%26x", bytes(range(256)))
    answer = exchange(plane.port, request_bytes("GET", "/api?key=%C3%A9t%C3%A9%20%2F%26x"), ["GET"]).answers[0]
    assert answer.body == bytes(range(256))


# -- HTTP semantics ----------------------------------------------------------------------------


def test_pipelined_requests_answer_in_order_with_a_miss_between_hits(plane):
    put(plane, "p1", b"one")
    put(plane, "p2", b"two")
    targets = ["/api?key=p1", "/api?group=slow&key=pipe-miss", "/api?key=p2", "/healthz",
               "/api?group=slow&key=missing-pipe", "/api?key=p1", "/nope", "/api?key=p2"]
    raw = b"".join(request_bytes("GET", t) for t in targets)
    r = exchange(plane.port, raw, ["GET"] * len(targets))
    statuses = [a.status for a in r.answers]
    assert statuses == [200, 200, 200, 200, 404, 200, 404, 200]
    bodies = [a.body for a in r.answers]
    assert bodies[0] == b"one" and bodies[1] == b"value-pipe-miss" and bodies[2] == b"two"
    assert bodies[5] == b"one" and bodies[7] == b"two"


def test_pipelined_requests_split_at_every_byte(plane):
    put(plane, "split", b"bytes")
    raw = request_bytes("GET", "/api?key=split") + request_bytes("PUT", "/api?key=split2", b"xyz") \
        + request_bytes("HEAD", "/api?key=split") + request_bytes("GET", "/api?key=split2")
    with socket.create_connection(("127.0.0.1", plane.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            sock.send(raw[i:i + 1])
        r = read_answers(sock, ["GET", "PUT", "HEAD", "GET"])
    assert [a.status for a in r.answers] == [200, 204, 200, 200]
    assert r.answers[2].body == b"" and r.answers[2].headers["content-length"] == "5"
    assert r.answers[3].body == b"xyz"


def test_a_commits_answer_reaches_a_client_that_half_closed(plane):
    # A commit's 204 is held to the end of the loop's turn: a client that shut its sending
    # side after the PUT still gets it before the connection closes.
    for i in range(20):
        with socket.create_connection(("127.0.0.1", plane.port), timeout=10) as sock:
            sock.sendall(request_bytes("PUT", f"/api?key=half-{i}", b"v%d" % i))
            sock.shutdown(socket.SHUT_WR)
            r = read_answers(sock, ["PUT"])
        assert r.answers[0].status == 204
    assert exchange(plane.port, request_bytes("GET", "/api?key=half-19"), ["GET"]).answers[0].body == b"v19"


def test_answers_of_one_commit_go_to_their_own_connections_in_order(plane):
    # Many connections' PUTs share commits, their 204s written together at the turn's end;
    # each connection then reads its own value, and a pipelined PUT-then-GET reads in order.
    socks = [socket.create_connection(("127.0.0.1", plane.port), timeout=10) for _ in range(16)]
    try:
        for rnd in range(5):
            for i, sock in enumerate(socks):
                sock.sendall(request_bytes("PUT", f"/api?key=batch-{i}", b"r%d-%d" % (rnd, i)))
            for sock in socks:
                assert read_answers(sock, ["PUT"]).answers[0].status == 204
            for i, sock in enumerate(socks):
                sock.sendall(request_bytes("PUT", f"/api?key=batch-{i}", b"p%d-%d" % (rnd, i))
                             + request_bytes("GET", f"/api?key=batch-{i}"))
            for i, sock in enumerate(socks):
                put_answer, get_answer = read_answers(sock, ["PUT", "GET"]).answers
                assert put_answer.status == 204 and get_answer.body == b"p%d-%d" % (rnd, i)
    finally:
        for sock in socks:
            sock.close()


def test_head_has_the_get_headers_and_no_body(plane):
    put(plane, "headed", b"12345")
    r = exchange(plane.port, request_bytes("HEAD", "/api?key=headed") + request_bytes("HEAD", "/nope")
                 + request_bytes("GET", "/api?key=headed"), ["HEAD", "HEAD", "GET"])
    head, missing, get = r.answers
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "5"
    assert missing.status == 404 and missing.body == b"" and int(missing.headers["content-length"]) > 0
    assert get.body == b"12345"


def test_http_10_closes_unless_keep_alive_is_asked(plane):
    put(plane, "old", b"v10")
    r = exchange(plane.port, request_bytes("GET", "/api?key=old", version="1.0"), ["GET"], until_closed=True)
    assert r.answers[0].body == b"v10" and r.closed
    raw = request_bytes("GET", "/api?key=old", headers={"Connection": "keep-alive"}, version="1.0")
    with socket.create_connection(("127.0.0.1", plane.port), timeout=10) as sock:
        sock.sendall(raw)
        first = sock.recv(65536)
        assert b"Connection: keep-alive" in first and first.endswith(b"v10")
        sock.sendall(raw)  # the connection is still open for a second request
        assert sock.recv(65536).endswith(b"v10")


def test_connection_close_is_honoured_and_later_requests_ignored(plane):
    put(plane, "bye", b"last")
    raw = request_bytes("GET", "/api?key=bye", headers={"Connection": "close"}) + request_bytes("GET", "/healthz")
    r = exchange(plane.port, raw, ["GET", "GET"], until_closed=True)
    assert len(r.answers) == 1 and r.answers[0].headers["connection"] == "close" and r.closed


def test_chunked_put(plane):
    raw = (b"PUT /api?key=chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
    r = exchange(plane.port, raw + request_bytes("GET", "/api?key=chunky"), ["PUT", "GET"])
    assert [a.status for a in r.answers] == [204, 200] and r.answers[1].body == b"hello world"


def test_expect_100_continue_both_ways(plane):
    with socket.create_connection(("127.0.0.1", plane.port), timeout=10) as sock:
        sock.sendall(b"PUT /api?key=expected HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert read_answers(sock, ["PUT"]).answers[0].status == 204
    # Too large: a 413 instead of a 100, and the body is never asked for.
    with socket.create_connection(("127.0.0.1", plane.port), timeout=10) as sock:
        sock.sendall(b"PUT /api?key=expected HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        r = read_answers(sock, ["PUT"], until_closed=True)
    assert r.answers[0].status == 413 and r.answers[0].informational == [] and r.closed
    assert "too large" in r.answers[0].json["error"]


# -- limits: every refusal is JSON, closes, and echoes nothing -----------------------------------

MARKER = "ECHO-MARKER-7f3a"


@pytest.mark.parametrize("raw,status", [
    (request_bytes("GET", "/api?key=" + MARKER + "x" * 9000), 414),
    (request_bytes("GET", "/api?key=a", headers={"X-Big": MARKER + "y" * 20000}), 431),
    (request_bytes("GET", "/api?key=a", headers={f"X-{i}-{MARKER}": "z" * 100 for i in range(200)}), 431),
    (request_bytes("PUT", "/api?key=a", b"x" * ((1 << 20) + 2048)), 413),
    (b"PUT /api?key=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     + (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * 20, 413),
    (b"GET /api?key=" + MARKER.encode() + b" HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARKER.encode() + b"\r\n\r\n", 400),  # TLS to plain
    (b"GET /api?key=\xff" + MARKER.encode() + b" HTTP/1.1\r\n\r\n", 400),
    (b"PUT /api?key=a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    (b"PUT /api?key=a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 400),
    (b"BREW /" + MARKER.encode() + b" HTTP/1.1\r\n\r\n", 400),
])
def test_refusals(plane, raw, status):
    r = exchange(plane.port, raw, ["GET"], until_closed=True)
    answer = r.answers[0]
    assert answer.status == status, answer
    assert answer.headers["connection"] == "close" and r.closed
    assert answer.json["error"] and MARKER not in answer.body.decode()


def test_a_refusal_after_pipelined_requests_comes_last(plane):
    put(plane, "before", b"b4")
    raw = request_bytes("GET", "/api?group=slow&key=before-bad") + request_bytes("GET", "/api?key=before") \
        + b"NOT HTTP AT ALL\r\n\r\n"
    r = exchange(plane.port, raw, ["GET", "GET", "GET"], until_closed=True)
    assert [a.status for a in r.answers] == [200, 200, 400] and r.answers[1].body == b"b4"


def test_large_values_under_write_back_pressure_stay_in_order(plane):
    big = bytes(range(256)) * 2048  # 512 KiB
    put(plane, "large", big)
    put(plane, "tiny", b"t")
    n = 40
    raw = b"".join(request_bytes("GET", "/api?key=large" if i % 2 == 0 else "/api?key=tiny") for i in range(n))
    with socket.create_connection(("127.0.0.1", plane.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(raw)
        # Not reading until the server's write buffer has filled and it paused writing: the
        # case this test is about, waited for as an event on the plane, not for a time.
        import time
        deadline = time.monotonic() + 20
        while not plane.run(lambda: any(c._write_paused for c in plane.plane._plane.conns)):
            assert time.monotonic() < deadline, "the server never had to pause its writes"
            time.sleep(0.01)
        r = read_answers(sock, ["GET"] * n, timeout=20)
    assert [a.body for a in r.answers] == [big if i % 2 == 0 else b"t" for i in range(n)]


# -- real clients ---------------------------------------------------------------------------------


def test_http_client_keep_alive_head_and_chunked_put(plane):
    conn = http.client.HTTPConnection("127.0.0.1", plane.port, timeout=10)
    try:
        conn.request("PUT", "/api?key=hc", body=iter([b"chunk", b"ed"]), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 204 and resp.read() == b""
        for _ in range(3):  # the same connection, again and again
            conn.request("GET", "/api?key=hc")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"chunked")
        conn.request("HEAD", "/api?key=hc")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "7" and resp.read() == b""
        conn.request("GET", "/api?key=%ff")
        resp = conn.getresponse()
        assert resp.status == 400 and json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_aiohttp_client_pool_and_expect100(plane):
    async def main():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            base = f"http://127.0.0.1:{plane.port}"
            async with session.put(base + "/api?key=aio", data=b"x" * 5000, expect100=True) as resp:
                assert resp.status == 204
            async def one(i):
                async with session.get(base + ("/api?key=aio" if i % 3 else f"/api?group=upper&key=k{i}")) as resp:
                    return resp.status, await resp.read()
            results = await asyncio.gather(*(one(i) for i in range(60)))
            assert all(status == 200 for status, _ in results)
            assert results[1][1] == b"x" * 5000 and results[3][1] == b"K3"
            async with session.head(base + "/api?key=aio") as resp:
                assert resp.status == 200 and resp.headers["Content-Length"] == "5000"
    asyncio.run(main())


@pytest.mark.procs
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not on PATH")
def test_curl(plane):
    def curl(*args):
        out = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", *args], capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return out.stdout

    base = f"http://127.0.0.1:{plane.port}"
    curl("-X", "PUT", "--data-binary", "curl-value", base + "/api?key=curl")

    def parsed(raw: bytes, method: str = "GET"):
        reader = Reader([method])
        reader.feed(raw)
        reader.feed(b"")
        return reader.answers[0]

    answer = parsed(curl(base + "/api?key=curl"))
    assert (answer.status, answer.body) == (200, b"curl-value")
    answer = parsed(curl("--http1.0", base + "/api?key=curl"))
    assert (answer.status, answer.body) == (200, b"curl-value")
    answer = parsed(curl("-I", base + "/api?key=curl"), "HEAD")
    assert answer.status == 200 and answer.headers["content-length"] == "10"
    # Two URLs on one connection: curl reuses it (keep-alive works).
    out = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", base + "/api?key=curl", base + "/healthz"],
                         capture_output=True, timeout=20)
    assert b"Re-using existing connection" in out.stderr or b"Reusing existing" in out.stderr
    # A chunked upload with Expect: 100-continue (curl waits for the 100).
    raw = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", "-X", "PUT", "-H", "Transfer-Encoding: chunked",
                          "-H", "Expect: 100-continue", "--data-binary", "@-", base + "/api?key=curl2"],
                         input=b"streamed", capture_output=True, timeout=20).stdout
    assert b"100 Continue" in raw and b"204" in raw
    assert parsed(curl(base + "/api?key=curl2")).body == b"streamed"
    answer = parsed(curl(base + "/api?key=%fe"))
    assert answer.status == 400 and answer.json["error"]
