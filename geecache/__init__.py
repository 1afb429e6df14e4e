"""GeeCache for Python: a distributed cache in the line of groupcache.

The library's entry points: ``Group`` (a namespace over a source), the
storages a group loads from, and the HTTP clients of a running cluster.
"""

from .version import __version__
from .client import AsyncClient, Client
from .errors import (
    GeeCacheError,
    InvalidKeyError,
    LoadError,
    NotFoundError,
    ReadOnlySourceError,
    RefusedError,
    UnavailableError,
    ValueTooLargeError,
)
from .group import Group
from .storage import FunctionSource, MemoryStorage, SQLiteStorage, load_source

__all__ = [
    "AsyncClient", "Client", "FunctionSource", "GeeCacheError", "Group", "InvalidKeyError", "LoadError",
    "MemoryStorage", "NotFoundError", "ReadOnlySourceError", "RefusedError", "SQLiteStorage",
    "UnavailableError", "ValueTooLargeError", "__version__", "load_source",
]
