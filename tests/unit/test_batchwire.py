"""geecache.cluster.batchwire against the protobuf library: the same bytes out, the same fields in,
on random answers, fields in odd orders, unknown fields and malformed bytes."""

from __future__ import annotations

import random
import struct

import pytest
from google.protobuf.message import DecodeError

from geecache.cluster import batchwire
from geecache.geecachepb import BatchResponse

SEED = 20261204


def _library_response(body: bytes):
    msg = BatchResponse.FromString(body)
    return [(i.status, i.value, i.codec, i.expire_at, i.ttl_left, i.error) for i in msg.items]


def _random_hits(rng: random.Random):
    out = []
    for _ in range(rng.choice([0, 1, 2, 3, 10, 64])):
        payload = rng.randbytes(rng.choice([0, 1, 100, 127, 128, 300, 20000]))
        codec = rng.choice([0, 0, 1, 2, 3, 127, 128, 300])
        expire_at = rng.choice([0.0, 1.7e9 + rng.random(), rng.uniform(1, 1e12), float("inf")])
        ttl_left = rng.choice([0.0, 1e-3, rng.uniform(0, 1e6), -5.0])
        out.append((payload, codec, expire_at, ttl_left))
    return out


def _hits_message(entries) -> bytes:
    msg = BatchResponse()
    for payload, codec, expire_at, ttl_left in entries:
        msg.items.add(status=200, value=payload, codec=codec, expire_at=expire_at, ttl_left=ttl_left)
    return msg.SerializeToString()


def test_hits_are_written_as_the_library_writes_them():
    rng = random.Random(SEED + 1)
    for _ in range(2000):
        entries = _random_hits(rng)
        assert batchwire.encode_hits(entries) == _hits_message(entries)


def test_a_response_reads_as_the_library_reads_it():
    rng = random.Random(SEED + 3)
    for _ in range(2000):
        msg = BatchResponse()
        for payload, codec, expire_at, ttl_left in _random_hits(rng):
            status = rng.choice([200, 200, 404, 413, 500, 503, 0, 99999])
            extra = {"error": rng.choice(["", "over batch_max_bytes", "é😀"])} if status != 200 else {}
            if rng.random() < 0.05:
                extra["key"] = "k"  # an answer naming its key: the library's to read
            msg.items.add(status=status, value=payload, codec=codec, expire_at=expire_at, ttl_left=ttl_left,
                          **extra)
        body = msg.SerializeToString()
        assert batchwire.decode_response(body) == _library_response(body)


def _same_outcome(ours, library, body: bytes) -> None:
    try:
        expected = library(body)
    except DecodeError:
        with pytest.raises(DecodeError):
            ours(body)
        return
    assert ours(body) == expected


def test_odd_orders_repeats_unknown_fields_and_garbage_read_as_the_library_reads_them():
    rng = random.Random(SEED + 4)
    item_parts = [
        lambda: b"\x12\x03abc", lambda: b"\x12\x00", lambda: b"\x18\x02", lambda: b"\x18\x80\x01",
        lambda: b"\x28\xc8\x01", lambda: b"\x28\x94\x03", lambda: b"\x28\xff\xff\x03",
        lambda: b"\x31" + struct.pack("<d", rng.random() * 1e9), lambda: b"\x41" + struct.pack("<d", rng.random()),
        lambda: b"\x3a\x02ok", lambda: b"\x3a\x02\xff\xfe", lambda: b"\x0a\x01k", lambda: b"\x21" + bytes(8),
        lambda: b"\x4a\x01z", lambda: b"\x50\x01",
    ]
    for _ in range(5000):
        items = [b"".join(rng.choice(item_parts)() for _ in range(rng.randrange(5))) for _ in range(rng.randrange(4))]
        body = b"".join(bytes((0x0A, len(it))) + it for it in items)
        if rng.random() < 0.3:
            body = body[:rng.randrange(len(body) + 1)]  # truncated
        if rng.random() < 0.1:
            body += rng.randbytes(rng.randrange(1, 6))  # garbage after
        _same_outcome(batchwire.decode_response, _library_response, body)
    for _ in range(3000):
        blob = rng.randbytes(rng.randrange(40))
        _same_outcome(batchwire.decode_response, _library_response, blob)
