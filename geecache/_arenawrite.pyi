"""Types of the arena's compiled writer (geecache/csrc/arenawrite.c); see geecache/shm/arena.py."""

from typing import Any, Callable

MAX_HASHED: int
NOT_HANDLED: int
COUNTED: int
HOT_SHARE: float

WriteView = tuple[int, bytes, int, int, int, int, int, int]

class Writer:
    """The arena's set and delete for lru and lru2 groups, as geecache.shm.arena makes them."""

    def __init__(self, mapping: Any, geometry: tuple[int, int, int, int, int, int, int],
                 clock: Callable[[], float], realtime: bool) -> None: ...
    def set(self, group: WriteView, key: bytes, value: bytes, codec: int, expire_at: float) -> int: ...
    def delete(self, group: WriteView, key: bytes) -> int: ...
    def find_u64(self, offset: int, count: int, value: int, /) -> int: ...
    def take_counted(self) -> tuple[int, int]: ...
    def release(self) -> None: ...
