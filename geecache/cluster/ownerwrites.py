"""The owner's side of the peer write API, apart from any HTTP server.

``PUT`` and ``DELETE /_geecache/<group>/<key>`` carry a SetRequest or a
DeleteRequest, ``POST /_geecache/<group>/_writes`` a WriteBatch of both; the owner applies the write through ``Group.apply_write``
(which refuses it after its deadline, and the source refuses it when older
than the key's stored version) and answers a WriteResponse with HTTP 200,
whatever the outcome: "not applied" is an answer, not an error.  The aiohttp
peer API and the lean data plane both serve these through here, so the rules
live in one place.  Malformed bodies raise CodecError (a 400).
"""

from __future__ import annotations

import math
import time

from google.protobuf.message import DecodeError

from geecache.compression import unpack
from geecache.errors import CodecError, GeeCacheError, ValueTooLargeError
from geecache.geecachepb import DeleteRequest, SetRequest, WriteBatch, WriteBatchResponse, WriteResponse
from geecache.hlc import LIMIT
from geecache.limits import check_key
from geecache.cluster.pauseguard import earliest_arrival

#: The longest write timeout a peer may ask for (its read timeout is seconds).
MAX_TIMEOUT = 3600.0


def _parse(body: bytes, message):
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise CodecError("malformed protobuf body") from None
    if not isinstance(message, WriteBatch):
        _check_stamps(message)
    return message


def _check_stamps(message) -> None:
    """A write's version and deadline as the wire allows them; CodecError otherwise."""
    if message.version >= LIMIT:
        raise CodecError(f"version {message.version} is not an HLC timestamp (below 2**63)")
    if not (math.isfinite(message.deadline) and message.deadline >= 0):
        raise CodecError(f"deadline {message.deadline!r} is not Unix seconds")
    if not 0 <= message.timeout <= MAX_TIMEOUT:  # also refuses NaN
        raise CodecError(f"timeout {message.timeout!r} is not seconds from 0 to {MAX_TIMEOUT:g}")


def _deadline(message) -> float:
    """The write's deadline by this host's clock (Unix seconds; 0 = none).

    From its timeout, counted from the earliest moment it may have arrived
    (before a pause it waited through), so the originator's clock never
    matters; an older originator sends only its absolute deadline.
    """
    if not message.timeout:
        return message.deadline
    return time.time() + (earliest_arrival() + message.timeout - time.monotonic())


def _answer(result) -> bytes:
    return WriteResponse(applied=result.applied, existed=result.existed, version=result.version,
                         late=result.late).SerializeToString()


async def serve_set(group, key: str, body: bytes) -> bytes:
    """Apply a peer's SetRequest *body* to *key* of *group*; the WriteResponse bytes."""
    msg = _parse(body, SetRequest())
    # Bounded by the item limit: a forged size must not make us allocate 64 MiB.
    value = unpack(msg.codec, msg.value, group.item_limit)
    result = await group.apply_write(key, value, msg.ttl, version=msg.version, deadline=_deadline(msg))
    return _answer(result)


async def serve_delete(group, key: str, body: bytes) -> bytes:
    """Apply a peer's DeleteRequest *body* (empty from an older peer) to *key*; the WriteResponse bytes."""
    msg = _parse(body, DeleteRequest())
    result = await group.apply_write(key, None, version=msg.version, deadline=_deadline(msg))
    return _answer(result)


async def serve_write_batch(group, body: bytes, max_items: int) -> bytes:
    """Apply a peer's WriteBatch *body* to *group* in one ``apply_writes``; the WriteBatchResponse bytes.

    A malformed body (CodecError: a 400), or more than *max_items* writes
    (ValueTooLargeError: a 413), refuses the whole batch; an item that
    fails its own checks (key, version, deadline, value) answers its error
    status and the others apply.
    """
    msg = _parse(body, WriteBatch())
    if len(msg.items) > max_items:
        raise ValueTooLargeError(f"a batch of {len(msg.items)} writes is over batch_max_keys ({max_items})")
    answers: list = [None] * len(msg.items)
    writes, where = [], []
    for i, item in enumerate(msg.items):
        try:
            check_key(item.key)
            _check_stamps(item)
            value = None if item.delete else unpack(item.codec, item.value, group.item_limit)
        except GeeCacheError as exc:
            answers[i] = exc
            continue
        writes.append((item.key, value, item.ttl, item.version, _deadline(item)))
        where.append(i)
    for i, answer in zip(where, await group.apply_writes(writes) if writes else []):
        answers[i] = answer
    out = WriteBatchResponse()
    for answer in answers:
        if isinstance(answer, GeeCacheError):
            out.items.add(status=answer.http_status, error=type(answer).__name__)  # no key echoed
        elif isinstance(answer, BaseException):
            raise answer  # a bug, not an answer about this key
        else:
            out.items.add(status=200, result=WriteResponse(applied=answer.applied, existed=answer.existed,
                                                           version=answer.version, late=answer.late))
    return out.SerializeToString()
