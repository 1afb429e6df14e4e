"""Types of the compiled hit path (geecache/csrc/hitpath.c); see workers/dataplane/hitpath.py."""

from typing import Any, Callable

MAX_HASHED: int
OUT_LIMIT: int

def xxh3(data: bytes) -> int:
    """XXH3-64 of at most MAX_HASHED bytes (tests)."""

class HitPath:
    """The default group's ``GET /api`` hits answered per read."""

    head: bytes
    @property
    def live(self) -> bool: ...
    @property
    def answered(self) -> int: ...
    @property
    def miss(self) -> tuple[int, bytes] | None: ...
    def __init__(self, mapping: Any, layout: tuple[int, int, int, int, int, int],
                 main: tuple[int, int, bytes, int], hot: tuple[int, int, bytes, int],
                 cells: tuple[int, int, int, int], *, head: bytes, bounds: tuple[float, ...], tally: list,
                 max_url: int, max_header: int, accept_ok: bool, clock: Callable[[], float],
                 realtime: bool) -> None: ...
    def serve(self, data: bytes, transport: Any) -> int: ...
    def take_written(self) -> int: ...
    def release(self) -> None: ...
    def scan(self, data: bytes) -> list[tuple[int, bytes]]: ...
    def probe(self, key: bytes) -> tuple[str, bytes | None]: ...
