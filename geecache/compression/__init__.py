"""Codec registry: none, gzip, snappy, lz4, zstd, by name or by wire id.

A value's codec id travels with it (arena slot, protobuf ``codec`` field), so
a reader needs no configuration to decode what any peer wrote.  To add a
codec: write one small class in ``codecs.py`` and list it in ``_ALL`` below;
ids are wire format, so never reuse or renumber one.
"""

from __future__ import annotations

from ..errors import CodecError
from .base import MAX_DECOMPRESSED, Codec
from .codecs import GzipCodec, Lz4Codec, NoneCodec, SnappyCodec, ZstdCodec

__all__ = [
    "CODECS", "MAX_DECOMPRESSED", "Codec", "codec_by_id", "get_codec", "pack", "unpack",
]

_ALL: tuple[Codec, ...] = (NoneCodec(), GzipCodec(), SnappyCodec(), Lz4Codec(), ZstdCodec())

#: Every codec, in id order.
CODECS: tuple[Codec, ...] = tuple(sorted(_ALL, key=lambda c: c.id))
_BY_NAME = {c.name: c for c in CODECS}
_BY_ID = {c.id: c for c in CODECS}
assert len(_BY_NAME) == len(_BY_ID) == len(CODECS), "codec names and ids must be unique"

#: A codec must save at least this fraction of the value's size to be used:
#: below it, the reader's decompress costs more than the bytes saved.
MIN_SAVING = 0.10
#: Values shorter than this are never compressed.  Measured on JSON: at 64
#: bytes every codec's output was larger than its input, at 96 none saved
#: 10%; skipping the attempt keeps small values off the codec entirely.
MIN_COMPRESS_BYTES = 96


def _known() -> str:
    return ", ".join(f"{c.name}({c.id})" for c in CODECS)


def get_codec(name: str | Codec) -> Codec:
    """The codec called *name* (a Codec passes through); CodecError if unknown."""
    if isinstance(name, Codec):
        return name
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise CodecError(f"unknown codec {name!r}; known codecs: {_known()}") from None


def codec_by_id(codec_id: int) -> Codec:
    """The codec with wire id *codec_id*; CodecError if unknown."""
    try:
        return _BY_ID[codec_id]
    except (KeyError, TypeError):
        raise CodecError(f"unknown codec id {codec_id!r}; known codecs: {_known()}") from None


def pack(value: bytes, codec: str | Codec) -> tuple[int, bytes]:
    """``(codec_id, payload)`` for *value*: compressed only when that saves >= 10%.

    Otherwise ``(0, value)``: small or incompressible values stay raw, so
    readers skip a pointless decompress.
    """
    codec = get_codec(codec)
    if codec.id == 0 or len(value) < MIN_COMPRESS_BYTES:
        return 0, bytes(value)
    payload = codec.compress(value)
    if len(payload) <= len(value) * (1 - MIN_SAVING):
        return codec.id, payload
    return 0, bytes(value)


def unpack(codec_id: int, payload: bytes, max_size: int = MAX_DECOMPRESSED) -> bytes:
    """The value *payload* holds under codec *codec_id*; CodecError when it cannot."""
    return codec_by_id(codec_id).decompress(payload, max_size)
