"""Loader functions for tests: ``tests.support.loaders:NAME`` in a config file.

The supervisor imports these by name in its own process (config check) and
the workers call them.  ``counting`` records every call by appending a line to
the file named by ``$GEECACHE_TEST_COUNT_FILE`` (O_APPEND writes of one short
line are atomic, so concurrent workers never interleave), letting a test count
loads across processes.
"""

from __future__ import annotations

import asyncio
import os

#: Seconds ``counting`` sleeps so that concurrent requests overlap its load.
LOAD_DELAY = float(os.environ.get("GEECACHE_TEST_LOAD_DELAY", "0.3"))


def _record(key: str) -> None:
    path = os.environ.get("GEECACHE_TEST_COUNT_FILE")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {key}\n".encode())
        finally:
            os.close(fd)


def count_loads(path: str, key: str | None = None) -> int:
    """How many loads ``counting`` recorded in *path* (of *key*, or of all keys)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if key is None or line.split(" ", 1)[1] == key)


async def counting(key: str) -> bytes | None:
    """``value-<key>`` after a short sleep; None (not found) for keys starting ``missing``."""
    _record(key)
    await asyncio.sleep(LOAD_DELAY)
    if key.startswith("missing"):
        return None
    return f"value-{key}".encode()


def sync_upper(key: str) -> str | None:
    """A synchronous loader returning str: the key upper-cased."""
    _record(key)
    return None if key.startswith("missing") else key.upper()


def failing(key: str) -> bytes:
    """A loader that always raises: the server must answer 502, not crash."""
    raise RuntimeError(f"backend down for {key}")


# A child that dies at once, every time: importing this module (as the loader
# check in the supervisor does) arms it, so every worker the supervisor forks
# exits before it can boot.  Only the boot-storm test names this module.
def _die_in_child() -> None:
    if os.environ.get("GEECACHE_TEST_DIE_IN_CHILD") == "1":
        os._exit(1)


os.register_at_fork(after_in_child=_die_in_child)


def json_doc(key: str) -> bytes:
    """A JSON document of about 1 KB for *key* (compressible, as cached API answers are)."""
    return document(key)


def document(key: str, items: int = 12) -> bytes:
    """The JSON document ``json_doc`` loads: records of a user, each naming the key."""
    import json

    rows = [{"id": i, "user": f"user-{key}", "email": f"{key}@example.com", "active": i % 2 == 0,
             "score": i * 7} for i in range(items)]
    return json.dumps({"key": key, "rows": rows}).encode()
