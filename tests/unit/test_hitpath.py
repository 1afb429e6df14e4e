"""The compiled hit path against the Python one: hash, parser, arena probe and whole answers.

``geecache._hitpath`` may answer a request only where the Python protocol would answer the
same bytes, and may read only what ``Arena.get_entry`` would return.  Each part is checked
against its Python counterpart on seeded random and adversarial inputs (bounded counts):

- XXH3-64 against the ``xxhash`` package on every length it handles;
- the parser against httptools plus the protocol's own rules (what it takes must be one
  complete message, a keep-alive ``GET /api?key=K`` with no field the protocol acts on, and
  every ordinary such request must be taken);
- the probe against ``Arena.get_entry`` on an arena of owned, hot, expiring, compressed and
  overwritten entries, then on the same arena with random bytes written over its slots and
  entries (a torn or garbage slot may make the C reader doubt, never answer wrongly or read
  outside the mapping; scripts/compiled_memcheck.sh runs this file under valgrind);
- a writer process SIGKILLed mid-write while the C reader reads: never a wrong value;
- whole exchanges: the same random request streams to a plane with the compiled path and
  one forced onto the Python path give the same bytes.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import time

import httptools
import pytest
from xxhash import xxh3_64_intdigest

from geecache.geecachepb import BatchRequest
from geecache.group import Group
from geecache.shm import Arena, shadow
from geecache.shm.layout import SLOT_SIZE, SLOT_VERSION_AT, U32, entry_size
from geecache.storage import MemoryStorage, SQLiteStorage, load_source
from tests.support.dataplane import PlaneServer
from tests.support.net import read_to_eof
from workers.dataplane import hitpath

_hitpath = pytest.importorskip("geecache._hitpath", reason="the compiled hit path is not built")

MAX_URL, MAX_HEADER = 8192, 16384
#: Share of the random cases to run (scripts/compiled_memcheck.sh runs a tenth under valgrind).
SCALE = float(os.environ.get("GEECACHE_FUZZ_SCALE", "1"))


def cases(n: int) -> range:
    return range(max(1, int(n * SCALE)))
#: Fields after which the protocol does not answer by ``_serve_api_key`` (Accept-Encoding is
#: one only for a group that packs; the groups here do not).
SPECIAL = {b"authorization", b"content-length", b"connection", b"expect", b"transfer-encoding", b"upgrade"}


class FakeClock:
    """An injected arena clock the tests move."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def reader(arena: Arena, group: Group, *, max_url=MAX_URL, max_header=MAX_HEADER, accept_ok=True, **kw):
    return arena.hit_reader(group.name, group._hot, _hitpath.HitPath, head=b"HEAD|", bounds=(0.001, float("inf")),
                            tally=[0, 0.0, 0, 0, 0],
                            max_url=max_url, max_header=max_header, accept_ok=accept_ok, **kw)


@pytest.fixture
def arena():
    a = Arena.create(8 << 20, shards=4, clock=FakeClock())
    yield a
    a.close()
    a.unlink()


def test_xxh3_matches_the_xxhash_package_on_every_length():
    rng = random.Random(3)
    for n in range(_hitpath.MAX_HASHED + 1):
        for _ in cases(20):
            data = bytes(rng.randrange(256) for _ in range(n))
            assert _hitpath.xxh3(data) == xxh3_64_intdigest(data), n
    with pytest.raises(ValueError):
        _hitpath.xxh3(b"x" * (_hitpath.MAX_HASHED + 1))


# -- the parser ----------------------------------------------------------------------------


class Recorder:
    """httptools callbacks, as the protocol sees them."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.parser = httptools.HttpRequestParser(self)
        self.keep = self.upgrade = None
        self.method = self.version = None

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.method = self.parser.get_method()
        self.version = self.parser.get_http_version()
        self.keep = self.parser.should_keep_alive()
        self.upgrade = self.parser.should_upgrade()

    def on_message_complete(self):
        self.complete += 1


def first_message(rec: "Recorder", data: bytes) -> int | None:
    """Feed *data* to *rec*'s parser byte by byte: the length of its first complete message, or
    None (incomplete, or refused by llhttp)."""
    for n in range(1, len(data) + 1):
        try:
            rec.parser.feed_data(data[n - 1:n])
        except httptools.HttpParserError:
            return None
        if rec.complete:
            return n
    return None


def plain_api_key(rec: "Recorder", methods, special_ok=()) -> bytes | None:
    """K when the message *rec* parsed is one of *methods* on ``/api?key=K`` that the protocol
    serves by its fast path: HTTP/1.1 kept, no upgrade, K needing no decoding, within the
    target and field limits, no field it acts on but those in *special_ok*; else None."""
    url, key = rec.url, rec.url[9:]
    if (rec.method not in methods or rec.version != "1.1" or not rec.keep or rec.upgrade
            or not url.startswith(b"/api?key=") or not key or any(c in key for c in b"&%+")
            or len(url) > MAX_URL or sum(len(a) + len(b) for a, b in rec.headers) > MAX_HEADER
            or any(name.lower() in SPECIAL - set(special_ok) for name, _ in rec.headers)):
        return None
    return key


def python_takes(data: bytes) -> tuple[int, bytes] | None:
    """What the protocol would answer by ``_serve_api_key`` as the first message of *data*."""
    rec = Recorder()
    n = first_message(rec, data)
    key = None if n is None else plain_api_key(rec, (b"GET",))
    return None if key is None else (n, key)


ODD_KEY_CHARS = "?#&%+ \t\"<>[]\\^`{|}\x00\x7f\xe9"
GOOD_NAMES = ["Host", "User-Agent", "Accept", "X-Trace", "Keep-Alive", "Accept-Encoding"]
ODD_NAMES = ["Authorization", "AUTHORIZATION", "Content-Length", "Connection", "connection",
             "Proxy-Connection", "Expect", "Transfer-Encoding", "Upgrade", "X Bad", "X:Bad", "", "Hóst",
             "X-\x00", "aZ-_!%&*+.^`|~"]
GOOD_VALUES = ["127.0.0.1", "wrk", "*/*", "a b", "keep-alive", "close", "gzip", "0", "x" * 300]
ODD_VALUES = ["", " ", "a\tb", "trail ", " lead", "\x00", "\x7f", "é", "100-continue", "chunked", "h2c"]


def pick(rng: random.Random, good, odd, p_odd: float = 0.08):
    """Mostly the ordinary choice: each request is odd in a place or two, or not at all."""
    return rng.choice(odd) if rng.random() < p_odd else rng.choice(good)


def random_request(rng: random.Random) -> bytes:
    klen = pick(rng, [1, 5, 30, 100, 250], [0, 251, 300])
    key = "".join(pick(rng, "abcXYZ019-._~!$'()*,;=:@/", ODD_KEY_CHARS, 0.01) for _ in range(klen))
    method = pick(rng, ["GET"], ["HEAD", "PUT", "get", "GET ", "GETX"])
    target = pick(rng, ["/api?key="], ["/api?group=kv&key=", "/api/?key=", "/API?key=", "/api?key"]) + key
    version = pick(rng, ["HTTP/1.1"], ["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1.10"])
    end = pick(rng, ["\r\n"], ["\n", "\r", "\r\r\n"], 0.03)
    lines = [f"{method} {target} {version}"]
    for _ in range(rng.choice([0, 1, 1, 2, 4])):
        name = pick(rng, GOOD_NAMES, ODD_NAMES, 0.15)
        sep = pick(rng, [": ", ":", ":  "], [" : ", ":\t"])
        lines.append(f"{name}{sep}{pick(rng, GOOD_VALUES, ODD_VALUES, 0.15)}")
    raw = (end.join(lines) + end + pick(rng, [end], ["\r\n", ""], 0.05)).encode("utf-8")
    if rng.random() < 0.05:
        data = bytearray(raw)
        data[rng.randrange(len(data))] = rng.randrange(256)
        raw = bytes(data)
    if rng.random() < 0.05:
        raw = raw[:rng.randrange(len(raw) + 1)]
    return raw


def test_the_parser_takes_only_what_the_python_protocol_would_answer(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    hp = reader(arena, g)
    rng = random.Random(20261204)
    taken = 0
    for _ in cases(4000):
        data = b"".join(random_request(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        pos = 0
        for used, key in hp.scan(data):
            assert python_takes(data[pos:]) == (used, key), data[pos:]
            pos += used
            taken += 1
    assert taken > 800 * SCALE  # the mix holds plenty of the common case


def test_the_parser_takes_every_ordinary_request(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    hp = reader(arena, g)
    rng = random.Random(7)
    ordinary = []
    for _ in range(300):
        key = "".join(rng.choice("abcXYZ019-._~!$'()*,;=:@/") for _ in range(rng.randrange(1, 251)))
        fields = "".join(f"{n}: {v}\r\n" for n, v in rng.sample(
            [("Host", "127.0.0.1:8080"), ("User-Agent", "wrk"), ("Accept", "*/*"), ("X-Id", "a b c")],
            rng.randrange(5)))
        ordinary.append(f"GET /api?key={key} HTTP/1.1\r\n{fields}\r\n".encode())
    data = b"".join(ordinary)
    assert [k for _, k in hp.scan(data)] == [r[13:r.index(b" HTTP/")] for r in ordinary]
    assert all(python_takes(r) == (len(r), r[13:r.index(b" HTTP/")]) for r in ordinary)


def test_the_parser_keeps_the_limits_and_accept_encoding_of_a_packing_group(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    small = reader(arena, g, max_url=20, max_header=10, accept_ok=False)
    assert small.scan(b"GET /api?key=abcdefghijk HTTP/1.1\r\n\r\n") == [(37, b"abcdefghijk")]  # url 20
    assert small.scan(b"GET /api?key=abcdefghijkl HTTP/1.1\r\n\r\n") == []                      # url 21
    assert small.scan(b"GET /api?key=a HTTP/1.1\r\nHost: 12345\r\n\r\n")                       # 4 + 5
    assert small.scan(b"GET /api?key=a HTTP/1.1\r\nHost: 1234567\r\n\r\n") == []               # 4 + 7
    assert small.scan(b"GET /api?key=a HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n") == []
    assert reader(arena, g).scan(b"GET /api?key=a HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")


MAX_BODY = 1 << 16


def put_reader(arena: Arena, group: Group, max_body: int = MAX_BODY):
    """A reader that hands writes back (the data plane's: *max_body* its smallest body limit)."""
    return reader(arena, group, max_body=max_body)


class BodyRecorder(Recorder):
    """Recorder with the body (httptools looks its callbacks up when the parser is made)."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        super().__init__()

    def on_body(self, body):
        self.body.append(body)


def python_takes_write(data: bytes) -> tuple[int, bytes, bytes | None] | None:
    """What the protocol would hand to ``_serve_put`` (no Authorization, a kept connection, a
    body within every limit) or ``_serve_delete`` (no body) as the first message of *data*:
    (length, key, body), body None for a DELETE."""
    rec = BodyRecorder()
    n = first_message(rec, data)
    key = None if n is None else plain_api_key(rec, (b"PUT", b"DELETE"), (b"content-length",))
    lengths = [int(v) for name, v in rec.headers if name.lower() == b"content-length"]
    if key is None or sum(lengths) > MAX_BODY:
        return None
    if rec.method == b"DELETE":
        # _serve takes a DELETE by _serve_delete only without a body (on_body never called).
        return (n, key, None) if not rec.body else None
    return n, key, b"".join(rec.body)


PUT_NAMES = ["Content-Length", "content-length", "CONTENT-LENGTH"]


def random_put(rng: random.Random) -> bytes:
    """A PUT like wrk's or a DELETE, odd in a place or two now and then (the head of random_request)."""
    head = random_request(rng)
    delete = rng.random() < 0.25
    if rng.random() < 0.9 and head[:3] == b"GET":
        head = (b"DELETE" if delete else b"PUT") + head[3:]
    body = bytes(rng.randrange(256) for _ in range(pick(rng, [0, 1, 100, 3000], [MAX_BODY, MAX_BODY + 1])))
    if delete and rng.random() < 0.8:
        body = b""
    line = pick(rng, PUT_NAMES, ["Content-Length: %d" % (len(body) + 1), "Content-Length: 0%d" % len(body),
                                 "Content-Length: -1", "Content-Length: 1e3", "Content-Length:%d" % len(body),
                                 "Content-Length: %d, %d" % (len(body), len(body)), "twice"], 0.2)
    if line in PUT_NAMES:
        line = "%s: %d" % (line, len(body))
    elif line == "twice":
        line = "Content-Length: %d\r\nContent-Length: %d" % (len(body), len(body))
    if rng.random() < 0.1:
        line = None  # no Content-Length: an empty body (and the bytes after the head are the next request)
    if line is not None and head.endswith(b"\r\n\r\n"):
        head = head[:-2] + line.encode() + b"\r\n\r\n"
    data = head + body
    if rng.random() < 0.05:
        data = data[:rng.randrange(len(data) + 1)]
    return data


def taken_as_python_takes(scan, make, python_takes, seed: int, n: int) -> int:
    """Run *n* random requests of *make* through the compiled parser's *scan*: what it takes, it
    takes as *python_takes* says the protocol would (what it leaves, httptools parses: any doubt
    is allowed).  How many it took."""
    rng = random.Random(seed)
    taken = 0
    for i in cases(n):
        data = make(rng)
        got = scan(data)
        if got is not None:
            assert got == python_takes(data), (i, data[:400])
            taken += 1
    return taken


def test_the_write_parser_takes_only_what_the_python_protocol_would_hand_to_serve_put_or_delete(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    taken = taken_as_python_takes(put_reader(arena, g).scan_write, random_put, python_takes_write, 20261207, 3000)
    assert taken > 400 * SCALE  # plenty of the common case (about a fifth)


def test_the_put_parser_takes_an_ordinary_put_and_its_limits(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    hp = put_reader(arena, g, max_body=100)
    wrk = b"PUT /api?key=w1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 100\r\n\r\n" + b"v" * 100
    assert hp.scan_write(wrk) == (len(wrk), b"w1", b"v" * 100)
    assert hp.scan_write(wrk + b"GET /") == (len(wrk), b"w1", b"v" * 100)  # the next request is not its body
    assert hp.scan_write(wrk[:-1]) is None  # the body's tail in a later read: httptools
    over = wrk.replace(b"100", b"101") + b"v"
    assert hp.scan_write(over) is None  # over the smallest body limit: on_headers_complete checks it
    assert hp.scan_write(b"PUT /api?key=e HTTP/1.1\r\n\r\n") == (27, b"e", b"")
    assert hp.scan_write(b"PUT /api?key=e HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 0\r\n\r\n") is None
    assert hp.scan_write(b"PUT /api?key=e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nv") is None
    assert hp.scan(wrk) == []  # no GET
    for delete in (b"DELETE /api?key=d HTTP/1.1\r\nHost: x\r\n\r\n",
                   b"DELETE /api?key=d HTTP/1.1\r\nContent-Length: 0\r\n\r\n"):
        assert hp.scan_write(delete) == (len(delete), b"d", None)
    assert hp.scan_write(b"DELETE /api?key=d HTTP/1.1\r\nContent-Length: 1\r\n\r\nx") is None  # a body: 400
    # A reader made without max_body (any other caller) hands no PUT back.
    assert reader(arena, g).scan_write(wrk) is None


def test_a_write_after_the_hits_of_a_read_is_handed_back_whole(arena):
    g = Group("m", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    arena.set(g.name, "k", b"v")
    hp = put_reader(arena, g)
    get = b"GET /api?key=k HTTP/1.1\r\nHost: x\r\n\r\n"
    put = b"PUT /api?key=n HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    sink = Sink()
    assert hp.serve(get + get + put + get, sink) == 2 * len(get)
    assert hp.handed == (len(put), b"n", b"abc")  # a write: three fields, not a miss
    assert sink.out.count(b"HEAD|") == 2  # the hits before it answered; nothing after it
    assert hp.serve(put, Sink()) == 0 and hp.handed == (len(put), b"n", b"abc")
    delete = b"DELETE /api?key=n HTTP/1.1\r\n\r\n"
    assert hp.serve(get + delete, Sink()) == len(get) and hp.handed == (len(delete), b"n", None)
    hp.serve(get, Sink())
    assert hp.handed is None  # a later call forgets it


BATCH_TARGET = b"/_geecache/p/_batch"


def batch_reader(arena: Arena, group: Group, max_body: int = MAX_BODY):
    """A reader that hands a peer's batch of *group* back (the data plane's)."""
    return reader(arena, group, max_body=max_body, batch_target=BATCH_TARGET)


def python_takes_batch(data: bytes) -> tuple[int, None, bytes, bytes | None] | None:
    """What the protocol would hand to ``_serve_other`` as the peer batch its first message is:
    a kept HTTP/1.1 POST of BATCH_TARGET, no field it acts on but one Content-Length and one
    Authorization, and a body of 1 to MAX_BODY bytes: (length, None, body, Authorization)."""
    rec = BodyRecorder()
    n = first_message(rec, data)
    if n is None:
        return None
    names = [name.lower() for name, _ in rec.headers]
    lengths = [int(v) for name, v in rec.headers if name.lower() == b"content-length"]
    auth = [v for name, v in rec.headers if name.lower() == b"authorization"]
    if (rec.method != b"POST" or rec.version != "1.1" or not rec.keep or rec.upgrade
            or rec.url != BATCH_TARGET or len(rec.url) > MAX_URL
            or sum(len(a) + len(b) for a, b in rec.headers) > MAX_HEADER
            or any(name in SPECIAL - {b"content-length", b"authorization"} for name in names)
            or names.count(b"authorization") > 1 or sum(lengths) > MAX_BODY or not rec.body):
        return None
    return n, None, b"".join(rec.body), auth[0] if auth else None


def random_batch(rng: random.Random) -> bytes:
    """A peer's batch as the pool writes it, odd in a place or two now and then (random_put's)."""
    data = random_put(rng)
    if rng.random() < 0.9 and data[:3] in (b"PUT", b"DEL", b"GET"):
        head, sep, rest = data.partition(b" HTTP/")
        if sep:
            target = pick(rng, [BATCH_TARGET], [b"/_geecache/p/_batch?x=1", b"/_geecache/q/_batch",
                                                b"/_geecache/p/_batchx", b"/_geecache/%70/_batch"])
            data = pick(rng, [b"POST"], [b"PUT", b"post"]) + b" " + target + sep + rest
    if rng.random() < 0.5 and b"\r\n\r\n" in data:
        auth = pick(rng, [b"Authorization: Bearer s3cret"], [b"Authorization: Bearer s3cret\r\nAuthorization: x",
                                                            b"authorization:", b"Authorization: t "])
        data = data.replace(b"\r\n", b"\r\n" + auth + b"\r\n", 1)
    return data


def test_the_batch_parser_takes_only_what_the_python_protocol_would_hand_to_serve_other(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    taken = taken_as_python_takes(batch_reader(arena, g).scan_batch, random_batch, python_takes_batch, 20261208, 3000)
    assert taken > 300 * SCALE  # plenty of the common case


def test_the_batch_parser_takes_the_pools_batch_and_keeps_its_limits(arena):
    g = Group("p", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    hp = batch_reader(arena, g, max_body=100)
    body = b"\x0a\x01p\x12\x04\x0a\x02k1"
    pool = (b"POST /_geecache/p/_batch HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nContent-Type: application/x-protobuf\r\n"
            b"Authorization: Bearer s3cret\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert hp.scan_batch(pool) == (len(pool), None, body, b"Bearer s3cret")
    assert hp.scan_batch(pool + b"GET /") == (len(pool), None, body, b"Bearer s3cret")
    bare = pool.replace(b"Authorization: Bearer s3cret\r\n", b"")
    assert hp.scan_batch(bare) == (len(bare), None, body, None)
    assert hp.scan_batch(pool[:-1]) is None  # the body's tail in a later read: httptools
    assert hp.scan_batch(pool.replace(b"Content-Length: %d" % len(body), b"Content-Length: 0")) is None  # no body
    big = pool.replace(b"Content-Length: %d" % len(body), b"Content-Length: 101") + b"x" * 200
    assert hp.scan_batch(big) is None  # over the smallest body limit: on_headers_complete checks it
    assert hp.scan_batch(pool.replace(b"Host:", b"Expect: 100-continue\r\nHost:")) is None
    assert hp.scan_write(pool) is None and hp.scan(pool) == []
    sink = Sink()
    assert hp.serve(pool, sink) == 0 and hp.handed == (len(pool), None, body, b"Bearer s3cret")
    assert hp.batch_target == BATCH_TARGET
    # A reader made without a batch target (any other caller) hands no batch back.
    assert put_reader(arena, g).scan_batch(pool) is None and put_reader(arena, g).batch_target == b""


# -- the arena probe -----------------------------------------------------------------------


def python_probe(arena: Arena, group: Group, key: str):
    """``Group.get_cached``'s reads, with the kind the C reader reports."""
    entry = arena.get_entry(group.name, key)
    if entry is None:
        entry = arena.get_entry(group._hot, key)
    return None if entry is None else entry


def fill(arena: Arena, clock: FakeClock, rng: random.Random):
    g = Group("g", MemoryStorage(), max_bytes=1 << 20, cache=arena, policy=rng.choice(["lru", "s3fifo"]))
    keys = [f"k{i}-" + "x" * rng.choice([0, 10, 100, 200]) for i in range(1500)]
    for k in keys:
        value = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100, 3000])))
        where = g._hot if rng.random() < 0.2 else g.name
        ttl = rng.choice([0, 0, 0, 5, 50])
        arena.set(where, k, value, ttl=ttl, codec=1 if rng.random() < 0.05 else 0)
        if rng.random() < 0.05:
            arena.delete(where, k)
    clock.now += 10  # some entries are expired now
    return g, keys


def test_the_probe_answers_what_get_entry_answers(arena):
    clock = arena._clock
    rng = random.Random(11)
    g, keys = fill(arena, clock, rng)
    hp = reader(arena, g)
    kinds: dict[str, int] = {}
    for k in keys + [f"absent-{i}" for i in range(200)]:
        before = arena.stats_sink(g.name).snapshot()
        kind, value = hp.probe(k.encode())
        kinds[kind] = kinds.get(kind, 0) + 1
        after = arena.stats_sink(g.name).snapshot()
        entry = python_probe(arena, g, k)
        if kind == "hit":
            assert entry is not None and entry[0] == value and entry[1] == 0, k
            assert after["gets"] == before["gets"] + 1
            assert after["local_hits"] + after["hot_hits"] == before["local_hits"] + before["hot_hits"] + 1
        elif kind == "miss":
            assert entry is None, k
            assert after == before
        else:  # a doubt: compressed or expired here (nothing raced this test)
            assert entry is None or entry[1] != 0, k
            assert after == before
    assert kinds.get("hit", 0) > 200 and kinds.get("miss", 0) > 100 and kinds.get("doubt", 0) > 10, kinds


def test_a_hit_raises_the_policy_byte_as_get_entry_does(arena):
    for policy, ref_max in (("lru", 1), ("s3fifo", 3)):
        g = Group(f"pol-{policy}", MemoryStorage(), max_bytes=1 << 20, cache=arena, policy=policy)
        arena.set(g.name, "k", b"v")
        rec = arena._group(g.name)
        h, s, i = arena._locate(rec, b"k")
        i = arena._find(s, h, b"k", rec.idx, i)
        ref_at = arena._refs_off + s * arena._sps + i
        hp = reader(arena, g)
        seen = []
        for _ in range(5):
            assert hp.probe(b"k") == ("hit", b"v")
            seen.append(arena._mm[ref_at])
        assert seen == [min(n, ref_max) for n in range(1, 6)]


def test_an_adaptive_hit_is_sampled_as_get_entry_samples_it(arena):
    """The compiled hit records (hash, entry bytes) of a sampled key in this process's sample
    ring, as Arena.get_entry does, and nothing for another policy's group."""
    assert (_hitpath.SAMPLE_RING, _hitpath.RING_BLOCK) == (shadow.SAMPLE_RING, shadow.RING_BLOCK)
    for policy in ("adaptive", "tinylfu"):
        g = Group(f"pol-{policy}", MemoryStorage(), max_bytes=1 << 20, cache=arena, policy=policy)
        keys = [f"k{i}" for i in range(600)]
        for k in keys:
            arena.set(g.name, k, b"v" * 40)
        rec = arena._group(g.name)
        hp = reader(arena, g)
        if policy == "tinylfu":
            assert rec.shadows is None and rec.sample_mask == (1 << 64) - 1
            assert all(hp.probe(k.encode())[0] == "hit" for k in keys)
            continue
        assert rec.sample_mask  # 1 MiB: a sixteenth of the keys
        rec.shadows.collect()  # from here on
        assert all(hp.probe(k.encode())[0] == "hit" for k in keys)
        compiled = rec.shadows.collect()
        assert all(arena.get(g.name, k) is not None for k in keys)
        assert compiled == rec.shadows.collect()
        want = [arena._locate(rec, k.encode())[0] for k in keys]
        want = [h for h in want if not h & rec.sample_mask]
        assert [h for h, _ in compiled] == want and 15 < len(want) < 80
        assert {size for _, size in compiled} == {entry_size(4, 40)}


def test_garbage_in_the_arena_is_never_served_or_read_past_the_mapping(arena):
    clock = arena._clock
    rng = random.Random(5)
    g, keys = fill(arena, clock, rng)
    hp = reader(arena, g)
    mm = arena._mm
    slots = (arena._slots_off, arena._refs_off)
    data = (arena._data_off, len(mm))
    for _round in cases(40):
        for _ in range(50):  # garbage over slots (hash, version, offset) and entry headers
            lo, hi = slots if rng.random() < 0.5 else data
            at = rng.randrange(lo, hi - 8)
            mm[at:at + 4] = rng.choice([os.urandom(4), b"\xff\xff\xff\xff", b"\xfe\xff\xff\x1f", b"\0\0\0\0"])
        for k in rng.sample(keys, 100):
            kind, value = hp.probe(k.encode())
            if kind == "hit":
                # Garbage may point a slot at any bytes; what the C reader serves is then what
                # the Python reader serves from the same bytes.
                entry = python_probe(arena, g, k)
                assert entry is not None and entry[0] == value
            elif kind == "miss":
                assert python_probe(arena, g, k) is None


def test_a_released_reader_answers_nothing(arena):
    g = Group("r", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    arena.set(g.name, "k", b"v")
    hp = reader(arena, g)
    assert hp.live and hp.probe(b"k") == ("hit", b"v")
    hp.release()
    assert not hp.live and hp.probe(b"k") == ("doubt", None)
    assert hp.serve(b"GET /api?key=k HTTP/1.1\r\n\r\n", None) == 0


def test_a_slot_met_mid_write_counts_a_seqlock_conflict_as_get_entry_does(arena):
    # The compiled reader counts it in this process's contention cell, then leaves the
    # request to the Python path (which reads again, and counts again if the writer is still
    # there); before, only the Python reads counted, so a conflict C met was never seen.
    g = Group("q", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    arena.set(g.name, "k", b"value")
    rec = arena._group(g.name)
    h, s, home = arena._locate(rec, b"k")
    i = arena._find(s, h, b"k", rec.idx, home)
    at = arena._slots_off + (s * arena._sps + i) * SLOT_SIZE + SLOT_VERSION_AT
    ver = U32.unpack_from(arena._mm, at)[0]
    hp = reader(arena, g)

    def conflicts() -> int:
        return next(r for r in arena.contention() if r["pid"] == os.getpid())["seqlock_conflicts"]

    U32.pack_into(arena._mm, at, ver + 1)  # a writer's first step: the version goes odd
    assert hp.probe(b"k") == ("doubt", None)
    assert hp.serve(b"GET /api?key=k HTTP/1.1\r\n\r\n", None) == 0  # nothing written, no transport asked
    assert conflicts() == 2
    assert arena.get_entry(g.name, "k") is None  # the Python read counts its own
    assert conflicts() == 3
    U32.pack_into(arena._mm, at, ver + 2)  # the writer's last step
    assert hp.probe(b"k") == ("hit", b"value")
    assert conflicts() == 3


class Sink:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.out = b""

    def write(self, data: bytes) -> None:
        self.out += data


def test_a_request_whose_key_is_cached_nowhere_is_handed_back_as_a_miss(arena):
    g = Group("m", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    arena.set(g.name, "k", b"v")
    arena.set(g._hot, "h", b"hot")
    arena.set(g.name, "z", b"packed", codec=1)
    hp = reader(arena, g)

    def get(key: bytes, extra: bytes = b"") -> bytes:
        return b"GET /api?key=%s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (key, extra)

    sink = Sink()
    data = get(b"k") + get(b"h") + get(b"absent") + get(b"k")
    n = hp.serve(data, sink)
    assert n == len(get(b"k") + get(b"h")) and sink.out.endswith(b"\r\n\r\nhot")
    # The miss: its length and key, and nothing after it answered (the Python path queues it).
    assert hp.handed == (len(get(b"absent")), b"absent")
    assert hp.serve(get(b"absent"), Sink()) == 0 and hp.handed == (len(get(b"absent")), b"absent")
    assert arena.stats(g.name)["gets"] == 2  # a miss counts nothing here (load_started counts it)
    # Anything else is no miss: a compressed entry, a field the protocol acts on, an incomplete
    # request, another target; and a later call forgets the last one's.
    for data in (get(b"z"), get(b"absent", b"Connection: close\r\n"), get(b"absent")[:-2],
                 b"GET /api?key=absent&group=m HTTP/1.1\r\n\r\n", get(b"k")):
        hp.serve(data, Sink())
        assert hp.handed is None, data


def test_closing_the_arena_releases_its_readers():
    a = Arena.create(4 << 20)
    try:
        g = Group("c", MemoryStorage(), max_bytes=1 << 20, cache=a)
        hp = reader(a, g)
        assert hp.live
        a.close()  # would raise BufferError if the reader still held the mapping
        assert not hp.live
    finally:
        a.unlink()


@pytest.mark.procs
def test_a_writer_killed_mid_write_never_makes_the_reader_serve_a_wrong_value(arena):
    # Every value names its key and is internally consistent, so any torn copy shows.
    g = Group("w", MemoryStorage(), max_bytes=1 << 20, cache=arena)
    keys = [f"w{i}" for i in range(64)]

    def value_of(key: str, n: int) -> bytes:
        body = f"{key}:{n}:".encode()
        return body * (1 + n % 40)

    def is_value_of(key: str, v: bytes) -> bool:
        head = v.split(b":")
        if len(head) < 3 or head[0] != key.encode():
            return False
        unit = f"{key}:{head[1].decode()}:".encode()
        return len(v) % len(unit) == 0 and v == unit * (len(v) // len(unit))

    hp = reader(arena, g)
    arena.lock_timeout = 5.0
    deadline = time.monotonic() + 6.0
    kills = hits = 0
    while kills < 12 and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:  # the writer: overwrite and delete until killed
            try:
                wr = random.Random(os.getpid())
                n = 0
                while True:
                    k = wr.choice(keys)
                    n += 1
                    arena.set(g.name, k, value_of(k, n)) if n % 7 else arena.delete(g.name, k)
            finally:
                os._exit(0)
        end = time.monotonic() + 0.05 + kills * 0.01
        while time.monotonic() < end:
            for k in keys:
                kind, v = hp.probe(k.encode())
                if kind == "hit":
                    hits += 1
                    assert is_value_of(k, v), (k, v[:80])
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
    assert kills >= 3 and hits > 100, (kills, hits)
    # Whatever the killed writers left (a held lock is repaired by the next writer), reads stay sane.
    arena.set(g.name, keys[0], value_of(keys[0], 1))
    assert hp.probe(keys[0].encode()) == ("hit", value_of(keys[0], 1))


# -- whole exchanges: compiled against Python ----------------------------------------------


def twin_groups(tmp, arena):
    def group(name, source, **kw):
        return Group(name, source, max_bytes=2 << 20, cache=arena, flight=arena, **kw)

    # kv on SQLite: an owned PUT or DELETE is answered from its commit's Future (no task).
    return {"kv": group("kv", SQLiteStorage(tmp / "kv.db"), item_limit=1 << 16),
            "upper": group("upper", load_source("tests.support.loaders:sync_upper"))}


def exchange(port: int, data: bytes, cuts: list[int]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            pos = 0
            for cut in cuts + [len(data)]:
                if cut > pos:
                    s.sendall(data[pos:cut])
                    pos = cut
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = read_to_eof(s)
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", answer)


def twin_request(rng: random.Random) -> bytes:
    if rng.random() < 0.15:
        key = rng.choice(["a", "b", "c", "long" * 40])
        value = bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 30000])))
        return b"PUT /api?key=%s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(value), value)
    if rng.random() < 0.5:
        key = rng.choice(["a", "b", "c", "nope", "long" * 40, "a+b", "a%20b"])
        group = rng.choice(["", "", "&group=upper"])
        fields = rng.choice(["Host: x\r\n", "", "Connection: close\r\n", "Accept-Encoding: gzip\r\n",
                             "Connection: keep-alive\r\n"])
        version = rng.choice(["1.1"] * 8 + ["1.0"])
        return f"GET /api?key={key}{group} HTTP/{version}\r\n{fields}\r\n".encode()
    return random_request(rng)


def test_the_compiled_and_the_python_plane_answer_alike(tmp_path):
    for name in ("c", "py"):
        (tmp_path / name).mkdir()
    fast = PlaneServer(tmp_path / "c", groups=twin_groups, item_limit=1 << 16)
    slow = PlaneServer(tmp_path / "py", groups=twin_groups, item_limit=1 << 16, hit_path="python")
    try:
        assert fast.compiled and not slow.compiled
        rng = random.Random(41)
        for i in range(250):
            data = b"".join(twin_request(rng) for _ in range(rng.choice([1, 2, 5, 20])))
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 0, 1, 3])))
            assert exchange(fast.port, data, cuts) == exchange(slow.port, data, cuts), (i, data[:300])
        for i in range(60):  # then the common case alone: pipelined hits and misses, cut anywhere
            data = b"".join(b"GET /api?key=%s HTTP/1.1\r\nHost: x\r\n\r\n" % rng.choice([b"a", b"b", b"c", b"nope"])
                            for _ in range(rng.randrange(1, 30)))
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 1, 3])))
            assert exchange(fast.port, data, cuts) == exchange(slow.port, data, cuts), (i, data[:300])
        for i in range(40):  # and writes among them, as wrk's (PUT, DELETE, then GETs read them back)
            data = b"".join(rng.choice([
                b"GET /api?key=%s HTTP/1.1\r\nHost: x\r\n\r\n",
                b"PUT /api?key=%%s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nv%02d" % i,
                b"DELETE /api?key=%s HTTP/1.1\r\nHost: x\r\n\r\n"]) % rng.choice([b"a", b"w", b"x"])
                for _ in range(rng.randrange(1, 8)))
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 0, 1])))
            assert exchange(fast.port, data, cuts) == exchange(slow.port, data, cuts), (i, data[:300])
        for i in range(40):  # and a peer's batches of the default group, as its pool writes them
            items = [rng.choice(["a", "b", "c", "w", "nope", "long" * 40]) for _ in range(rng.randrange(1, 6))]
            body = BatchRequest(group=rng.choice(["kv", ""]), items=[{"key": k} for k in items]).SerializeToString()
            batch = (b"POST /_geecache/kv/_batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     + rng.choice([b"", b"Authorization: Bearer t\r\n"]) + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            data = b"".join(rng.choice([batch, batch, b"GET /api?key=a HTTP/1.1\r\nHost: x\r\n\r\n"])
                            for _ in range(rng.randrange(1, 5)))
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 0, 1])))
            assert exchange(fast.port, data, cuts) == exchange(slow.port, data, cuts), (i, data[:300])
        for name in ("kv", "upper"):
            c, p = fast.arena.stats(name), slow.arena.stats(name)
            assert (c["gets"], c["local_hits"], c["hot_hits"]) == (p["gets"], p["local_hits"], p["hot_hits"]), name
        assert fast.arena.stats("kv")["local_hits"] > 300
        # ... and the compiled plane answered most of the second part in C.
        assert fast.plane._plane.hit_path.answered > 100  # (what follows a miss waits for its answer: Python)
    finally:
        fast.stop()
        slow.stop()


def test_the_environment_variable_forces_the_python_path(monkeypatch):
    monkeypatch.setenv(hitpath.PURE_PYTHON_ENV, "1")
    assert not hitpath.available()
    monkeypatch.setenv(hitpath.PURE_PYTHON_ENV, "0")
    assert hitpath.available()
