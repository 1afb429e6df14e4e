"""The owner's side of the peer write API, apart from any HTTP server.

``PUT`` and ``DELETE /_geecache/<group>/<key>`` carry a SetRequest or a
DeleteRequest; the owner applies the write through ``Group.apply_write``
(which refuses it after its deadline, and the source refuses it when older
than the key's stored version) and answers a WriteResponse with HTTP 200,
whatever the outcome: "not applied" is an answer, not an error.  The aiohttp
peer API and the lean data plane both serve these through here, so the rules
live in one place.  Malformed bodies raise CodecError (a 400).
"""

from __future__ import annotations

import math

from google.protobuf.message import DecodeError

from .compression import unpack
from .errors import CodecError
from .geecachepb import DeleteRequest, SetRequest, WriteResponse
from .hlc import LIMIT


def _parse(body: bytes, message):
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise CodecError("malformed protobuf body") from None
    if message.version >= LIMIT:
        raise CodecError(f"version {message.version} is not an HLC timestamp (below 2**63)")
    if not (math.isfinite(message.deadline) and message.deadline >= 0):
        raise CodecError(f"deadline {message.deadline!r} is not Unix seconds")
    return message


def _answer(result) -> bytes:
    return WriteResponse(applied=result.applied, existed=result.existed, version=result.version,
                         late=result.late).SerializeToString()


async def serve_set(group, key: str, body: bytes) -> bytes:
    """Apply a peer's SetRequest *body* to *key* of *group*; the WriteResponse bytes."""
    msg = _parse(body, SetRequest())
    # Bounded by the item limit: a forged size must not make us allocate 64 MiB.
    value = unpack(msg.codec, msg.value, group.item_limit)
    result = await group.apply_write(key, value, msg.ttl, version=msg.version, deadline=msg.deadline)
    return _answer(result)


async def serve_delete(group, key: str, body: bytes) -> bytes:
    """Apply a peer's DeleteRequest *body* (empty from an older peer) to *key*; the WriteResponse bytes."""
    msg = _parse(body, DeleteRequest())
    result = await group.apply_write(key, None, version=msg.version, deadline=msg.deadline)
    return _answer(result)
