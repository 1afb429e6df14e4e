"""The Storage interface: the source of truth a group's Getter reads."""

from __future__ import annotations

from ..errors import ReadOnlySourceError


class Storage:
    """A key-value store of bytes that a Group loads from and writes through to.

    Every data method is async because the Group awaits them on its event
    loop.  ``get`` returns None for a missing key; ``b""`` is a value like
    any other.  A ``readonly`` store (a loader function) refuses ``set`` and
    ``delete`` with ReadOnlySourceError.
    """

    #: True when ``set``/``delete`` are refused.
    readonly: bool = False

    async def get(self, key: str) -> bytes | None:
        """The value stored under *key*, or None when there is none."""
        raise NotImplementedError

    async def set(self, key: str, value: bytes) -> None:
        """Store *value* under *key*, replacing any old value."""
        raise ReadOnlySourceError(f"{self!r} is read-only")

    async def delete(self, key: str) -> bool:
        """Remove *key*; True when it was present."""
        raise ReadOnlySourceError(f"{self!r} is read-only")

    def close(self) -> None:
        """Release connections or files; the default holds none."""
