"""geecache.cluster.getwire against the protobuf library: the same bytes out, the same fields in."""

from __future__ import annotations

import random
import struct

import pytest
from google.protobuf.message import DecodeError

from geecache.cluster import getwire
from geecache.geecachepb import GetResponse

SEED = 20261204


def _library_bytes(value: bytes, codec: int, expire_at: float, ttl_left: float) -> bytes:
    return GetResponse(value=value, codec=codec, expire_at=expire_at, ttl_left=ttl_left).SerializeToString()


def _library_fields(data: bytes):
    msg = GetResponse()
    msg.ParseFromString(data)
    return msg.value, msg.codec, msg.expire_at, msg.ttl_left


def _random_fields(rng: random.Random):
    size = rng.choice([0, 1, 2, 100, 127, 128, 129, 300, 16383, 16384, 70000])
    value = rng.randbytes(size)
    codec = rng.choice([0, 0, 1, 2, 3, 4, 127])
    expire_at = rng.choice([0.0, 1.0, 1.7e9 + rng.random(), rng.uniform(-1e6, 1e12), float("inf")])
    ttl_left = rng.choice([0.0, 1e-3, rng.uniform(0, 1e6)])
    return value, codec, expire_at, ttl_left


def test_encode_writes_what_the_library_writes():
    rng = random.Random(SEED)
    for _ in range(2000):
        fields = _random_fields(rng)
        assert getwire.encode(*fields) == _library_bytes(*fields), fields[1:]


def test_decode_reads_what_the_library_reads():
    rng = random.Random(SEED + 1)
    for _ in range(2000):
        data = _library_bytes(*_random_fields(rng))
        assert getwire.decode(data) == _library_fields(data)


def test_fields_in_any_order_repeated_or_unknown_decode_as_the_library_does():
    rng = random.Random(SEED + 2)
    parts = {
        "value": lambda: b"\x0a" + bytes([5]) + rng.randbytes(5),
        "long value": lambda: b"\x0a\x80\x01" + rng.randbytes(128),
        "codec": lambda: b"\x10" + bytes([rng.randrange(128)]),
        "big codec": lambda: b"\x10\xff\x01",
        "expire_at": lambda: b"\x19" + struct.pack("<d", rng.random() * 1e9),
        "ttl_left": lambda: b"\x29" + struct.pack("<d", rng.random()),
        "old minute_qps": lambda: b"\x20\x07",
        "unknown bytes": lambda: b"\x32\x03abc",
        "unknown fixed32": lambda: b"\x3d\x01\x02\x03\x04",
        "two-byte tag": lambda: b"\x82\x01\x01x",
    }
    names = list(parts)
    for _ in range(3000):
        data = b"".join(parts[rng.choice(names)]() for _ in range(rng.randrange(1, 6)))
        assert _outcome(getwire.decode, data) == _outcome(_library_fields, data), data


def _outcome(fn, data):
    """What decoding *data* gives, with each double as its bits (a NaN equals itself)."""
    try:
        value, codec, expire_at, ttl_left = fn(data)
    except DecodeError:
        return ("DecodeError", None)
    return ("ok", (value, codec, struct.pack("<d", expire_at), struct.pack("<d", ttl_left)))


def test_malformed_bytes_are_a_decode_error_exactly_when_the_library_says_so():
    rng = random.Random(SEED + 3)
    samples = []
    for _ in range(1500):
        good = _library_bytes(*_random_fields(rng))
        samples.append(good[:rng.randrange(len(good) + 1)])  # truncated anywhere
        samples.append(rng.randbytes(rng.randrange(1, 40)))  # noise
        mutated = bytearray(good or b"\x0a\x00")
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    samples += [b"\x0a", b"\x0a\x05ab", b"\x19\x00", b"\x29", b"\x10", b"\x0a\xff\xff\xff\xff\xff\x01"]
    for data in samples:
        assert _outcome(getwire.decode, data) == _outcome(_library_fields, data), data


def test_an_empty_answer_is_every_field_at_zero():
    assert getwire.decode(b"") == (b"", 0, 0.0, 0.0)
    assert getwire.encode(b"") == b""


@pytest.mark.parametrize("n", [0, 127, 128, 16384, 1 << 21])
def test_lengths_across_varint_sizes_round_trip(n):
    value = bytes(n)
    assert getwire.decode(getwire.encode(value, 2, 5.0, 1.5)) == (value, 2, 5.0, 1.5)
