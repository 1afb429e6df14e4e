"""Types of the arena's compiled writer (geecache/csrc/arenawrite.c); see geecache/shm/arena.py."""

from typing import Any

MAX_HASHED: int
NOT_HANDLED: int

class Writer:
    """The arena's common set and delete, as geecache.shm.arena makes them."""

    def __init__(self, mapping: Any, geometry: tuple[int, int, int, int, int, int, int]) -> None: ...
    def set(self, group: tuple[int, bytes, int, int, int, int, int], key: bytes, value: bytes,
            codec: int, expire_at: float) -> int: ...
    def delete(self, group: tuple[int, bytes, int, int, int, int, int], key: bytes) -> int: ...
    def release(self) -> None: ...
