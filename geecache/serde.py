"""Serializers for the clients' ``serializer=`` / ``deserializer=`` hooks.

pymemcache calls the pair a *serde*, redis-py has ``decode_responses``: the
client turns a Python value into the bytes it stores, and the bytes it reads
back into a value.  The cache itself only ever holds bytes.  Each helper here
is a dict to spread into a client's arguments:

    Client(url, **geecache.serde.JSON).set("cfg", {"retries": 3})

TEXT stores str as UTF-8 and reads str back (redis-py's
``decode_responses=True``); JSON any JSON document; PICKLE any picklable
object, for data only your own code writes: unpickling runs code, so never
point PICKLE at a cache that anyone else can write to.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Callable

__all__ = ["Serializer", "Deserializer", "TEXT", "JSON", "PICKLE"]

#: Turns a value into the bytes stored.
Serializer = Callable[[Any], bytes]
#: Turns stored bytes back into a value.
Deserializer = Callable[[bytes], Any]


def _text_dumps(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"TEXT stores str values, got {type(value).__name__}")
    return value.encode("utf-8")


def _text_loads(data: bytes) -> str:
    return data.decode("utf-8")


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_loads(data: bytes) -> Any:
    return json.loads(data)


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 (the caller chose PICKLE for data it alone writes)


TEXT: dict[str, Callable] = {"serializer": _text_dumps, "deserializer": _text_loads}
JSON: dict[str, Callable] = {"serializer": _json_dumps, "deserializer": _json_loads}
PICKLE: dict[str, Callable] = {"serializer": _pickle_dumps, "deserializer": _pickle_loads}
