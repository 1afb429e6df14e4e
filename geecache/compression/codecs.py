"""The codecs themselves: one small class each.

Each checks the output size before it allocates when the format says it
(snappy, lz4's stored size, zstd's frame header) and streams with a cap
when it does not (gzip, zstd frames without a content size).
"""

from __future__ import annotations

import os
import threading
import zlib

import lz4.block
import snappy
import zstandard

from .base import Codec, TooLarge


class NoneCodec(Codec):
    """Identity: the value is stored and sent as is."""

    name, id = "none", 0

    def _compress(self, data: bytes) -> bytes:
        return bytes(data)

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        if len(data) > max_size:
            raise TooLarge(len(data))
        return bytes(data)


class GzipCodec(Codec):
    """gzip (RFC 1952): slowest, but any HTTP client can read it."""

    name, id = "gzip", 1
    #: zlib's default level: level 9 measured ~3x slower for ~2% smaller text.
    level = 6

    def _compress(self, data: bytes) -> bytes:
        c = zlib.compressobj(self.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # max_length caps the output buffer: a bomb stops at max_size + 1.
        out = d.decompress(data, max_size + 1)
        if len(out) > max_size:
            raise TooLarge(f">{max_size}")
        if not d.eof:
            raise ValueError("truncated gzip stream")
        if d.unused_data:
            raise ValueError(f"{len(d.unused_data)} bytes after the gzip stream")
        return out


class SnappyCodec(Codec):
    """Snappy raw format (``snappy.compress``): fast, modest ratio."""

    name, id = "snappy", 2

    def _compress(self, data: bytes) -> bytes:
        return snappy.compress(data)

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        # The raw format starts with the uncompressed length: check it before
        # the library allocates that much.
        size = _snappy_length(data)
        if size > max_size:
            raise TooLarge(size)
        return snappy.uncompress(data)


def _snappy_length(data: bytes) -> int:
    """The uncompressed length a raw snappy stream declares (a <=5-byte varint)."""
    size = shift = 0
    for byte in data[:5]:
        size |= (byte & 0x7F) << shift
        if byte < 0x80:
            return size
        shift += 7
    raise ValueError("bad snappy length header")


class Lz4Codec(Codec):
    """LZ4 block with its 4-byte stored size: the fastest to decompress.

    The block format (not lz4.frame) because cache values are small and the
    frame header would cost ~15 bytes each.
    """

    name, id = "lz4", 3

    def _compress(self, data: bytes) -> bytes:
        return lz4.block.compress(data, store_size=True)

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        if len(data) < 4:
            raise ValueError("shorter than the 4-byte size header")
        size = int.from_bytes(data[:4], "little")
        if size > max_size:
            raise TooLarge(size)
        return lz4.block.decompress(data)


class ZstdCodec(Codec):
    """Zstandard: the best ratio for its speed."""

    name, id = "zstd", 4
    level = 3  # zstd's own default

    def __init__(self) -> None:
        # Contexts are reusable (cheaper than one per call) but not safe for
        # two threads at once nor meant to be shared across a fork: one pair
        # per thread, recreated when the pid changes.  The thread-local is the
        # guard.
        self._local = threading.local()

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pair = (zstandard.ZstdCompressor(level=self.level), zstandard.ZstdDecompressor())
            local.pid = os.getpid()
        return local.pair

    def _compress(self, data: bytes) -> bytes:
        # One-shot compress writes the content size into the frame header,
        # which lets the reader check it before allocating.
        return self._contexts()[0].compress(data)

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        dctx = self._contexts()[1]
        size = zstandard.frame_content_size(data)
        if size > max_size:
            raise TooLarge(size)
        # With a known size the library allocates exactly that; without one
        # (streamed frames) max_output_size caps the buffer, and a frame that
        # needs more fails as incomplete.
        if size >= 0:
            return dctx.decompress(data, allow_extra_data=False)
        try:
            return dctx.decompress(data, max_output_size=max_size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise ValueError(f"{exc} (a frame without a content size must fit in {max_size} bytes)")
