"""Codecs: round trips, corrupt input, bounded decompression, pack/unpack."""

import os
import struct
import threading
import zlib

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from geecache.compression import (
    CODECS, MAX_DECOMPRESSED, Codec, codec_by_id, get_codec, pack, unpack,
)
from geecache.errors import CodecError

NAMES_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
COMPRESSING = [c for c in CODECS if c.id != 0]
TEXT = b"the quick brown fox jumps over the lazy dog; " * 200


def test_registry_names_and_ids():
    assert {c.name: c.id for c in CODECS} == NAMES_IDS
    for name, cid in NAMES_IDS.items():
        assert get_codec(name) is codec_by_id(cid)
        assert get_codec(name).name == name
        assert isinstance(get_codec(name), Codec)


@pytest.mark.parametrize("bad", ["brotli", "", None, "GZIP"])
def test_unknown_name_names_the_known_codecs(bad):
    with pytest.raises(CodecError) as info:
        get_codec(bad)
    assert isinstance(info.value, ValueError)
    for name in NAMES_IDS:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [5, -1, 255, "1", None])
def test_unknown_id(bad):
    with pytest.raises(CodecError, match="known codecs: none"):
        codec_by_id(bad)
    with pytest.raises(CodecError):
        unpack(bad, b"x")


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096))
def test_round_trip(codec, data):
    assert codec.decompress(codec.compress(data)) == data


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_round_trip_empty_and_large(codec):
    for value in (b"", TEXT, bytes(range(256)) * 4096):
        assert codec.decompress(codec.compress(value)) == value


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=512))
def test_garbage_raises_codec_error_or_decodes(codec, garbage):
    # Some short garbage is a valid stream by chance; what must never happen
    # is another exception type escaping, or a crash.
    try:
        out = codec.decompress(garbage)
    except CodecError:
        return
    assert isinstance(out, bytes)


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_every_truncation_is_refused(codec):
    frame = codec.compress(TEXT)
    for cut in range(len(frame)):
        with pytest.raises(CodecError, match=codec.name):
            codec.decompress(frame[:cut])


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_flipped_bytes_are_refused_or_harmless(codec):
    frame = bytearray(codec.compress(TEXT))
    for i in range(0, len(frame), 3):
        bad = bytearray(frame)
        bad[i] ^= 0xFF
        try:
            codec.decompress(bytes(bad))
        except CodecError:
            pass


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_output_over_max_size_is_refused(codec):
    frame = codec.compress(bytes(100_000))
    assert codec.decompress(frame, max_size=100_000) == bytes(100_000)
    with pytest.raises(CodecError, match="exceeds the limit of 99999"):
        codec.decompress(frame, max_size=99_999)


def _gzip_bomb(size):
    # Streamed, so the test itself never holds the expanded bytes.
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + c.flush()


def _zstd_bomb_without_size(size):
    c = zstandard.ZstdCompressor().compressobj()
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(size >> 20)) + c.flush()


def test_decompression_bombs_hit_the_default_limit():
    big = MAX_DECOMPRESSED + (1 << 20)
    bombs = {
        "gzip": _gzip_bomb(big),
        "zstd": _zstd_bomb_without_size(big),  # refused as "must fit in"
        # Forged size headers: refused before anything is allocated.
        "lz4": struct.pack("<I", 0xFFFFFFF0) + b"\x00" * 16,
        "snappy": b"\xff\xff\xff\xff\x0f" + b"\x00" * 16,
    }
    assert len(bombs["gzip"]) < 200_000 and len(bombs["zstd"]) < 200_000
    for name, bomb in bombs.items():
        with pytest.raises(CodecError, match=f"{name}: .*(exceeds the limit|must fit in {MAX_DECOMPRESSED})"):
            get_codec(name).decompress(bomb)


def test_zstd_frame_with_forged_content_size_is_refused_early():
    frame = get_codec("zstd").compress(b"x" * 1000)
    assert zstandard.frame_content_size(frame) == 1000
    with pytest.raises(CodecError, match="decompressed size 1000 exceeds"):
        get_codec("zstd").decompress(frame, max_size=999)


def test_trailing_bytes_are_refused():
    for name in ("gzip", "zstd"):
        frame = get_codec(name).compress(TEXT)
        with pytest.raises(CodecError):
            get_codec(name).decompress(frame + b"junk")


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_pack_compresses_when_it_pays(codec):
    cid, payload = pack(TEXT, codec.name)
    assert cid == codec.id
    assert len(payload) <= 0.9 * len(TEXT)
    assert unpack(cid, payload) == TEXT


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_pack_keeps_small_or_incompressible_values_raw(codec):
    noise = os.urandom(4096)
    for value in (b"", b"abc", noise):
        cid, payload = pack(value, codec)
        assert (cid, payload) == (0, value)
        assert unpack(cid, payload) == value


def test_pack_unknown_codec():
    with pytest.raises(CodecError):
        pack(b"x", "brotli")


def test_zstd_contexts_are_per_thread():
    zstd = get_codec("zstd")
    errors = []

    def work(seed):
        try:
            for i in range(200):
                v = (b"%d-%d " % (seed, i)) * 100
                assert zstd.decompress(zstd.compress(v)) == v
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
