"""The data plane served for real in a test process: an event loop in a thread, a real arena.

``PlaneServer`` creates a shared-memory arena, builds real Groups over it
inside the loop's thread (SQLite connections belong to the thread that uses
them), serves them with ``workers.dataplane.serve_data_plane`` on a free
127.0.0.1 port, and on ``stop`` closes the plane gracefully and unlinks the
arena.  Every wait on the loop thread is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from pathlib import Path

from geecache.group import Group
from geecache.shm import Arena
from geecache.storage import MemoryStorage, SQLiteStorage, load_source

#: Seconds any call into the loop thread may take before the test fails.
CALL_TIMEOUT = 30.0
#: The data plane's hit paths (``workers/dataplane/hitpath.py``): fixtures that run a contract
#: on both take one of these.  "compiled" is the default (the Python path where it is not built).
HIT_PATHS = ("compiled", "python")


@contextlib.contextmanager
def hit_path_env(hit_path: str):
    """``GEECACHE_PURE_PYTHON`` set while a plane is built for the "python" hit path."""
    from workers.dataplane.hitpath import PURE_PYTHON_ENV

    before = os.environ.get(PURE_PYTHON_ENV)
    if hit_path == "python":
        os.environ[PURE_PYTHON_ENV] = "1"
    else:
        os.environ.pop(PURE_PYTHON_ENV, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PURE_PYTHON_ENV, None)
        else:
            os.environ[PURE_PYTHON_ENV] = before


def standard_groups(tmp: Path, arena) -> dict[str, Group]:
    """The groups most data-plane tests use: a writable SQLite one first (the default)."""
    def group(name, source, **kw):
        return Group(name, source, max_bytes=2 << 20, cache=arena, flight=arena, **kw)

    return {
        "kv": group("kv", SQLiteStorage(tmp / "kv.db"), item_limit=1 << 20),
        "small": group("small", MemoryStorage(), item_limit=16),
        "upper": group("upper", load_source("tests.support.loaders:sync_upper")),
        "slow": group("slow", load_source("tests.support.loaders:counting")),
        "broken": group("broken", load_source("tests.support.loaders:failing")),
    }


class PlaneServer:
    """A running data plane on ``port``; ``call`` runs a coroutine function on its loop."""

    def __init__(self, tmp: Path, *, groups=standard_groups, item_limit: int = 1 << 20,
                 arena_bytes: int = 24 << 20, hit_path: str = "compiled", **serve_kwargs) -> None:
        import uvloop

        from workers.dataplane import serve_data_plane

        self.tmp = Path(tmp)
        self.arena = Arena.create(arena_bytes, item_limit=item_limit)
        self.loop = uvloop.new_event_loop()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.groups: dict[str, Group] = {}
        self.plane = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="dataplane", daemon=True)
        self._thread.start()

        async def boot():
            self.groups = groups(self.tmp, self.arena)
            with hit_path_env(hit_path):
                self.plane = await serve_data_plane(self.sock, self.groups, item_limit=item_limit, **serve_kwargs)

        try:
            self.call(boot)
        except BaseException:
            self._shutdown_loop()
            self._free_arena()
            raise

    @property
    def compiled(self) -> bool:
        """True when this plane answers hits with the compiled hit path."""
        return self.plane._plane.hit_path is not None

    def call(self, fn, *args, timeout: float = CALL_TIMEOUT):
        """Run ``fn(*args)`` (a coroutine function) on the plane's loop; its result."""
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)

    def run(self, fn, *args, timeout: float = CALL_TIMEOUT):
        """Run the plain function ``fn(*args)`` on the plane's loop thread; its result."""
        async def wrapper():
            return fn(*args)
        return self.call(wrapper, timeout=timeout)

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        if not self._thread.is_alive():
            self.loop.close()

    def _free_arena(self) -> None:
        self.arena.close()
        self.arena.unlink()

    def stop(self, grace: float = 5.0) -> None:
        """Close the plane gracefully, stop the loop, close the sources, unlink the arena."""
        try:
            if self.plane is not None:
                self.call(self.plane.close, grace, timeout=grace + CALL_TIMEOUT)

            async def close_sources():
                for g in self.groups.values():
                    close = getattr(g.source, "close", None)
                    if callable(close):
                        close()
            self.call(close_sources)
        finally:
            self.sock.close()
            self._shutdown_loop()
            self._free_arena()
