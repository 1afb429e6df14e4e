"""A peer GET's answer (``GetResponse``) as bytes, without a protobuf message object.

The owner encodes one per remote hit and the asker decodes one: a message
object built with keyword arguments, serialized, then parsed and read field
by field is most of the protobuf cost of a remote hit.  ``GetResponse`` has
four scalar fields, so both directions are a few byte operations here.

The bytes are exactly what the protobuf library writes (proto3: a field at
its zero value is left out; fields in number order), and ``decode`` reads
any order and the last of a repeated field, as the library does.  Anything
else — an unknown field, a wire type we do not expect, a truncated field —
is handed to the library itself, so an answer from a newer or older peer
decodes exactly as before.  ``tests/unit/test_getwire.py`` checks both against the
library on random and malformed messages.

Leaf module: ``struct`` and the generated messages only.
"""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from geecache.geecachepb import GetResponse

_DOUBLE = struct.Struct("<d")
_pack_double = _DOUBLE.pack
_unpack_double = _DOUBLE.unpack_from
#: Field tags: (number << 3) | wire type.
_VALUE = 0x0A        # 1, length-delimited
_CODEC = 0x10        # 2, varint
_EXPIRE_AT = 0x19    # 3, 64-bit
_TTL_LEFT = 0x29     # 5, 64-bit
#: The one-byte length prefixes (and the value tag before them), prebuilt.
_SHORT_HEADS = [bytes((_VALUE, n)) for n in range(128)]


def varint(n: int) -> bytes:
    """The protobuf varint bytes of *n* (not negative)."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(value: bytes, codec: int = 0, expire_at: float = 0.0, ttl_left: float = 0.0) -> bytes:
    """The ``GetResponse`` bytes of (*value*, *codec*, *expire_at*, *ttl_left*), as the library writes them."""
    n = len(value)
    if n < 128:
        out = _SHORT_HEADS[n] + value if n else b""
    else:
        out = b"\x0a" + varint(n) + value
    if codec:
        out += b"\x10" + varint(codec)
    if expire_at:
        out += b"\x19" + _pack_double(expire_at)
    if ttl_left:
        out += b"\x29" + _pack_double(ttl_left)
    return out


def _library(data: bytes) -> tuple[bytes, int, float, float]:
    msg = GetResponse()
    msg.ParseFromString(data)  # DecodeError on malformed bytes
    return msg.value, msg.codec, msg.expire_at, msg.ttl_left


def read_length(data: bytes, i: int) -> tuple[int, int]:
    """(length, offset after it) of the varint length at *i* (at most 5 bytes), else ValueError."""
    n = data[i]
    i += 1
    if n < 0x80:
        return n, i
    n &= 0x7F
    shift = 7
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7
        if shift > 28:
            raise ValueError("a length over 5 bytes")


def decode(data: bytes) -> tuple[bytes, int, float, float]:
    """(value, codec, expire_at, ttl_left) of ``GetResponse`` bytes; DecodeError when malformed."""
    value = b""
    codec = 0
    expire_at = ttl_left = 0.0
    i = 0
    end = len(data)
    try:
        while i < end:
            tag = data[i]
            if tag == _VALUE:
                n = data[i + 1]
                i += 2
                if n > 0x7F:  # a longer length (at most 4 bytes for a 64 MiB body)
                    try:
                        n, i = read_length(data, i - 1)
                    except ValueError:
                        return _library(data)
                if i + n > end:
                    raise DecodeError("truncated value")
                value = data[i:i + n]
                i += n
            elif tag == _CODEC:
                b = data[i + 1]
                if b > 0x7F:  # no codec id needs more than one byte: the library decides
                    return _library(data)
                codec = b
                i += 2
            elif tag == _EXPIRE_AT:
                expire_at = _unpack_double(data, i + 1)[0]
                i += 9
            elif tag == _TTL_LEFT:
                ttl_left = _unpack_double(data, i + 1)[0]
                i += 9
            else:  # another field, or a tag of more than one byte: the library's rules
                return _library(data)
    except (IndexError, struct.error):
        raise DecodeError("truncated GetResponse") from None
    return value, codec, expire_at, ttl_left
