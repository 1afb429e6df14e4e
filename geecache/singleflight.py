"""In-process single flight: concurrent loads of one key run once (asyncio).

groupcache's ``singleflight`` for one event loop.  The host-wide flight (many
worker processes) lives in the shared-memory arena; this one collapses the
callers inside one worker before they get that far.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable


class Group:
    """Runs at most one call per key at a time; the others wait for its result.

    Every caller gets the result or the exception of the one call.  The key
    is forgotten as soon as that call ends, so a later caller runs ``fn``
    again: this collapses concurrent loads, it never caches.

    A Group belongs to one event loop; it is not thread-safe (asyncio's
    single thread is what guards ``_calls``).
    """

    def __init__(self) -> None:
        # key -> the task running the one call for it (or a claimed Future).  Guarded by the event
        # loop's single thread: nothing awaits between lookup and insert.
        self._calls: dict[str, asyncio.Future] = {}

    async def do(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``fn()`` once for all concurrent callers of *key*; its result."""
        value, _ = await self.do_ex(key, fn)
        return value

    async def do_ex(self, key: str, fn: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Like ``do``; also says whether this caller shared another's call.

        The flag is what a Group counts as a deduplicated load.
        """
        task = self._calls.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(key, fn))
            self._calls[key] = task
        # The call runs in its own task behind a shield, so cancelling one
        # waiter (a client that hung up) never cancels the load the others
        # are waiting for; the cancelled waiter just stops waiting.  When all
        # waiters are gone, shield marks a failure as retrieved, so asyncio
        # logs nothing (tested).
        return await asyncio.shield(task), shared

    def claim(self, key: str) -> asyncio.Future | None:
        """Take the call for *key* without a task: a Future the caller settles, then ``release``s.

        None when a call for *key* already runs (join it with ``do``).  A
        batch claims its keys this way, so one task serves many keys and a
        concurrent ``do`` of one of them waits for the batch's answer.
        """
        if key in self._calls:
            return None
        future = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        return future

    def release(self, key: str, future: asyncio.Future) -> None:
        """The claimed call for *key* is over (its Future settled)."""
        if self._calls.get(key) is future:
            del self._calls[key]

    def current(self, key: str) -> asyncio.Future | None:
        """The call running for *key* (a task or a claimed Future), to join; None when there is none."""
        return self._calls.get(key)

    def in_flight(self, key: str) -> bool:
        """True while a call for *key* is running."""
        return key in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    async def _run(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        finally:
            # Forget the key the moment the call ends, not in a later done
            # callback: a caller arriving after this point must run fn anew.
            if self._calls.get(key) is asyncio.current_task():
                del self._calls[key]

