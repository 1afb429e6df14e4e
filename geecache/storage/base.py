"""The Storage interface: the source of truth a group's Getter reads.

Versioned writes.  Every write may carry a *version* (the HLC
timestamp of the process that originated it, see ``geecache.hlc``), an
absolute *expire_at* and a *deadline*.  A store that keeps versions
(``versioned = True``: MemoryStorage, SQLiteStorage) keeps, per key, the
newest version and refuses a write whose version is less than or equal to
it, so a write that arrives late (an owner that was paused while the
originator fell back to writing itself) cannot undo a newer one.  Deletes
leave a tombstone carrying their version, else a late older set after a
delete would bring the key back.

``version=0`` is an unversioned write, what every caller sent before
versions existed: it always applies (as ``set``/``delete`` always did) and
is stored under a version above every one the key had, taken from this
process's HLC.  "Always applies" alone is not enough: stored as version 0
(or keeping the old version) it would lose to a late versioned write that
predates it, which is exactly the undone write versions exist to prevent.
An unversioned write is therefore ordered after everything the store has
seen for that key, which is what an unconditional write means.
"""

from __future__ import annotations

import functools
import time
from typing import Awaitable, Callable, NamedTuple

from ..errors import ReadOnlySourceError
from ..limits import as_bytes


class Row(NamedTuple):
    """A live value as a store keeps it."""

    value: bytes
    #: The version of the write that stored it (0: unknown, e.g. a loader function).
    version: int
    #: Unix seconds after which the value is gone; 0 = never.
    expire_at: float


class WriteResult(NamedTuple):
    """What a ``write`` did."""

    #: The write took effect.
    applied: bool
    #: A live value (not deleted, not expired) was stored before the write.
    existed: bool
    #: The key's version after the call: the write's own when applied, the
    #: newer stored one that refused it otherwise (0 when nothing is stored
    #: or the store keeps no versions).  An originator refused as stale can
    #: feed it to its HLC's ``update`` and re-stamp.
    version: int
    #: Refused because the deadline had passed when the store got to it.
    late: bool = False

    @property
    def stale(self) -> bool:
        """Refused because the store holds an equal or newer version."""
        return not self.applied and not self.late


class WriteOp(NamedTuple):
    """One row of a ``write_many``: the arguments of one ``write``."""

    key: str
    #: None deletes the key (a tombstone).
    value: bytes | None
    version: int = 0
    expire_at: float = 0.0
    deadline: float = 0.0


class Storage:
    """A key-value store of bytes that a Group loads from and writes through to.

    Every data method is async because the Group awaits them on its event
    loop.  ``get`` returns None for a missing key; ``b""`` is a value like
    any other.  A ``readonly`` store (a loader function) refuses ``set`` and
    ``delete`` with ReadOnlySourceError.

    A writable store implements ``write`` (and ``read``); ``set`` and
    ``delete`` are defined on top of it.  A store written before versions
    existed may instead override ``set(key, value)`` and ``delete(key)``;
    ``write`` then calls those and reports every write as applied, version 0.
    """

    #: True when ``set``/``delete`` are refused.
    readonly: bool = False
    #: True when ``write`` keeps versions, expiries and deadlines (see the module doc).
    versioned: bool = False

    async def get(self, key: str) -> bytes | None:
        """The value stored under *key*, or None when there is none (or it expired)."""
        raise NotImplementedError

    async def read(self, key: str) -> Row | None:
        """The live row of *key* (value, version, expiry), or None.

        The default wraps ``get``: version 0, no expiry.
        """
        value = await self.get(key)
        return None if value is None else Row(value, 0, 0.0)

    async def write(
        self,
        key: str,
        value: bytes | None,
        *,
        version: int = 0,
        expire_at: float = 0.0,
        deadline: float = 0.0,
    ) -> WriteResult:
        """Store *value* under *key*, or delete *key* when *value* is None.

        Refused (``applied`` False) when *version* is not above the key's
        stored version (``stale``), or when the store only got to it at or
        after *deadline* (Unix seconds, 0 = none; ``late``).  *expire_at*
        (Unix seconds, 0 = never) is when the value is gone: ``get`` then
        answers None, and the expired row no longer refuses any write.
        """
        if self.readonly:
            raise ReadOnlySourceError(f"{self!r} is read-only")
        cls = type(self)
        if cls.set is Storage.set or cls.delete is Storage.delete:
            raise NotImplementedError(f"{cls.__name__} implements neither write nor set/delete")
        # A legacy store: no versions, no expiry; the deadline checked here is
        # the best it can do.
        if deadline and time.time() >= deadline:
            return WriteResult(False, False, 0, late=True)
        if value is None:
            existed = bool(await self.delete(key))
            return WriteResult(True, existed, 0)
        await self.set(key, value)
        return WriteResult(True, False, 0)

    async def write_many(self, ops: list[WriteOp]) -> list[WriteResult | Exception]:
        """Apply every write of *ops* (in order); one answer per op, in order.

        Each op is judged as ``write`` would judge it alone: one refused for
        its version or deadline is answered so, and the others still apply.
        A store that commits (SQLiteStorage) puts them in one transaction; an
        op whose write failed is answered with its exception (a LoadError),
        not raised, so one bad row does not fail the rest.  The default runs
        them one ``write`` at a time.
        """
        return await write_one_at_a_time(self, ops)

    async def set(
        self, key: str, value: bytes, *, version: int = 0, expire_at: float = 0.0, deadline: float = 0.0
    ) -> bool:
        """Store *value* under *key*; True when applied (see ``write``)."""
        if self.readonly:
            raise ReadOnlySourceError(f"{self!r} is read-only")
        result = await self.write(key, as_bytes(value), version=version, expire_at=expire_at,
                                  deadline=deadline)
        return result.applied

    async def delete(self, key: str, *, version: int = 0, deadline: float = 0.0) -> bool:
        """Remove *key*; True when it held a live value and the delete applied."""
        if self.readonly:
            raise ReadOnlySourceError(f"{self!r} is read-only")
        result = await self.write(key, None, version=version, deadline=deadline)
        return result.applied and result.existed

    def close(self) -> None:
        """Release connections or files; the default holds none."""


def check_write(version: int, expire_at: float, deadline: float) -> None:
    """Reject a version outside 0..2**63 and a NaN/negative expiry or deadline."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 1 << 63:
        raise ValueError(f"version must be an int in 0..2**63, got {version!r}")
    for name, t in (("expire_at", expire_at), ("deadline", deadline)):
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < float("inf"):
            raise ValueError(f"{name} must be Unix seconds >= 0 (0 = none), got {t!r}")


def _defining_class(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


@functools.lru_cache(maxsize=256)
def _reads_rows(cls: type) -> bool:
    """*cls* defines ``read`` at or below the class that defines its ``get``."""
    read_at, get_at = _defining_class(cls, "read"), _defining_class(cls, "get")
    return read_at is not None and get_at is not None and issubclass(read_at, get_at)


@functools.lru_cache(maxsize=256)
def _queues_writes(cls: type) -> bool:
    """*cls* defines ``queue_write`` at or below the classes that define its ``write_many`` and ``write``."""
    at = _defining_class(cls, "queue_write")
    return at is not None and all(issubclass(at, _defining_class(cls, name) or object)
                                  for name in ("write_many", "write"))


def write_queue(source) -> Callable | None:
    """*source*'s ``queue_write(key, value, version, done)`` (a store that group-commits, as
    SQLiteStorage), or None: also when a subclass overrode ``write_many`` or ``write`` (to count
    or fail writes, say), which must then be called."""
    cls: type = type(source)  # declared ``type``, as in row_reader (lru_cache's Hashable)
    return source.queue_write if _queues_writes(cls) else None


def row_reader(source) -> Callable[[str], Awaitable[Row | None]]:
    """How a Group loads a row from *source*: its ``read``, unless a subclass overrode only ``get``.

    A subclass that wraps ``get`` (to count or slow loads, say) keeps being
    called through it; its rows then read as unversioned and unexpiring,
    which is what ``get`` can tell (it already hides expired rows).
    """
    # Declared ``type``: mypy matches a ``type[X]`` against lru_cache's Hashable by X's unbound
    # ``__hash__`` and refuses it; a class is hashable all the same.
    cls: type = type(source)
    if _reads_rows(cls):
        return source.read
    return functools.partial(Storage.read, source)


def source_writer(source) -> Callable[..., Awaitable[WriteResult]]:
    """*source*'s ``write``; for an object with only ``set``/``delete``, the legacy adapter."""
    write = getattr(source, "write", None)
    return write if write is not None else functools.partial(Storage.write, source)


async def write_one_at_a_time(source, ops: list[WriteOp]) -> list[WriteResult | Exception]:
    """``write_many`` for a store without one: each op through *source*'s writer in turn."""
    write = source_writer(source)
    out: list[WriteResult | Exception] = []
    for op in ops:
        try:
            out.append(await write(op.key, op.value, version=op.version, expire_at=op.expire_at,
                                   deadline=op.deadline))
        except (ReadOnlySourceError, ValueError):
            raise  # the caller's mistake, the same for every op
        except Exception as exc:  # noqa: BLE001 - answered per op, as write_many promises
            out.append(exc)
    return out


def batch_writer(source) -> Callable[[list[WriteOp]], Awaitable[list[WriteResult | Exception]]]:
    """*source*'s ``write_many``; for an object without one (a ``module:function`` store written
    before batches existed), its writes one at a time."""
    write_many = getattr(source, "write_many", None)
    return write_many if write_many is not None else functools.partial(write_one_at_a_time, source)
