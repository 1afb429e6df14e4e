"""MemoryStorage: a dict as the source of truth, for tests and demos."""

from __future__ import annotations

from ..limits import as_bytes
from .base import Storage


class MemoryStorage(Storage):
    """A process-local dict store: what a test or an example needs, nothing more.

    Not shared between processes: each forked worker gets its own copy.
    """

    def __init__(self, initial: dict[str, bytes | str] | None = None) -> None:
        # Guarded by the event loop's single thread (no await inside a method).
        self._data: dict[str, bytes] = {k: as_bytes(v) for k, v in (initial or {}).items()}

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self._data[key] = as_bytes(value)

    async def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._data)} keys)"
