"""Polling with a doubling, capped delay: how a process waits on another one.

A load or write waits on a load another process of this host is running
(the arena's in-flight table says who): there is nothing to be woken by
across processes, so the waiter polls.  The first re-check comes soon,
since most loads are short; the delay doubles so a long load costs few
polls, and is capped so the waiter notices the end within ``CAP``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Callable, Iterator

#: The first delay between polls (seconds).
FIRST = 0.001
#: The longest delay between polls (seconds).
CAP = 0.02


def delays(first: float = FIRST, cap: float = CAP) -> Iterator[float]:
    """The sleeps between polls: *first*, twice that, ... never more than *cap*; endless."""
    delay = first
    while delay < cap:
        yield delay
        delay *= 2
    yield from itertools.repeat(cap)


async def wait_while(busy: Callable[[], bool], deadline: float, *,
                     first: float = FIRST, cap: float = CAP) -> None:
    """Sleep while ``busy()`` is true and ``time.monotonic()`` is before *deadline*.

    ``busy`` is asked first, so nothing sleeps when it is already false;
    the last sleep may end up to *cap* past the deadline.
    """
    for delay in delays(first, cap):
        if not busy() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(delay)
