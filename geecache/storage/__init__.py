"""Backing stores a Group loads from: the source of truth, never the cache.

``MemoryStorage`` (a dict), ``SQLiteStorage`` (the embedded default, safe for
many processes), ``FunctionSource`` (any ``fn(key)``, groupcache's
GetterFunc) and ``load_source("module:function")`` to name one in config.
"""

from .base import Row, Storage, WriteResult
from .function import FunctionSource, load_source
from .memory import MemoryStorage
from .sqlite import SQLiteStorage

__all__ = [
    "FunctionSource", "MemoryStorage", "Row", "SQLiteStorage", "Storage", "WriteResult", "load_source",
]
