"""Polling with a doubling, capped delay (``geecache.backoff``)."""

import asyncio
import itertools
import time

from geecache.backoff import CAP, FIRST, delays, wait_while


def test_delays_double_up_to_the_cap_and_go_on():
    assert list(itertools.islice(delays(1, 10), 7)) == [1, 2, 4, 8, 10, 10, 10]
    assert next(delays()) == FIRST
    assert all(d <= CAP for d in itertools.islice(delays(), 50))


def test_wait_while_returns_at_once_when_not_busy():
    calls = []

    def busy() -> bool:
        calls.append(1)
        return False

    asyncio.run(wait_while(busy, time.monotonic() + 60))
    assert len(calls) == 1


def test_wait_while_polls_until_not_busy():
    answers = iter([True, True, True, False])
    asked = []

    def busy() -> bool:
        asked.append(1)
        return next(answers)

    asyncio.run(wait_while(busy, time.monotonic() + 60))
    assert len(asked) == 4


def test_wait_while_stops_at_the_deadline_while_still_busy():
    asked = []

    def busy() -> bool:
        asked.append(1)
        return True

    asyncio.run(wait_while(busy, time.monotonic() - 1))  # already past
    assert len(asked) == 1
