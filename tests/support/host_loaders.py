"""Loaders that misbehave on purpose, for the host's watchdog and timeout tests.

``tests.support.host_loaders:NAME`` in a config file.  Keys starting with
``block`` misbehave; any other key loads at once as ``value-<key>``.
"""

from __future__ import annotations

import asyncio
import os
import time

#: Seconds a misbehaving load takes (longer than any test's timeout).
STALL = 30.0


async def blocks_the_loop(key: str) -> bytes:
    """An ``async def`` that calls blocking code: the worker's event loop stops turning."""
    if key.startswith("block"):
        time.sleep(STALL)
    return f"value-{key}".encode()


def sleeps_in_a_thread(key: str) -> bytes:
    """A synchronous loader (run in the loads' threads): ``block*`` keys take up to STALL
    seconds while the file ``$GEECACHE_TEST_STALL_FILE`` exists, and load once it is gone."""
    stall = os.environ.get("GEECACHE_TEST_STALL_FILE")
    if key.startswith("block") and stall:
        deadline = time.monotonic() + STALL
        while os.path.exists(stall) and time.monotonic() < deadline:
            time.sleep(0.05)
    return f"value-{key}".encode()


async def sleeps_on_the_loop(key: str) -> bytes:
    """An ``async def`` that awaits STALL seconds for ``block*`` (cancellable)."""
    if key.startswith("block"):
        await asyncio.sleep(STALL)
    return f"value-{key}".encode()


async def blocks_the_loop_briefly(key: str) -> bytes:
    """``blocks_the_loop`` for ``$GEECACHE_TEST_BLOCK_SECONDS`` (1.5 by default): a stall the
    watchdog lets live, long enough for the pause guard to see."""
    if key.startswith("block"):
        time.sleep(float(os.environ.get("GEECACHE_TEST_BLOCK_SECONDS", "1.5")))
    return f"value-{key}".encode()
