"""Drop a host's cached copies after its worker was paused long enough to miss invalidations.

An owner stopped for seconds (SIGSTOP, swap, a VM pause) misses the
invalidations other hosts send meanwhile: they give up on it after their
timeout (1 s), write through the source themselves, and the ring may even
drop it.  When it resumes, its copies of those keys are stale, and with a
group ``ttl`` of 0 they would be served forever.  Nothing tells it which
keys changed, so it drops every copy (the cache may lose anything at any
time; the source is the truth) the first time its loop runs again.

The guard is a timer on the worker's loop that notes when it last ran: a
gap longer than ``threshold`` means the process (or its loop) did not run
for that long.  Shorter pauses lose nothing: a sender still waiting for its
answer, and a write's originator waits longer still (the peer read timeout)
before it writes elsewhere.  The hosts's workers share the arena, so
whichever worker wakes first drops the copies for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable

log = logging.getLogger(__name__)

#: A loop that did not run for this long may have missed invalidations
#: (peers wait 1 s for one before giving up).
DEFAULT_THRESHOLD = 0.9
#: How often the guard's timer runs.
DEFAULT_INTERVAL = 0.1


class PauseGuard:
    """Calls ``drop_copies()`` on every group after a gap in this loop's timer.

    *clock* is monotonic (it keeps counting while a process is stopped).
    ``pauses`` counts the gaps seen.
    """

    def __init__(self, groups: Iterable, *, threshold: float = DEFAULT_THRESHOLD,
                 interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < interval < threshold:
            raise ValueError(f"need 0 < interval < threshold, got {interval!r}, {threshold!r}")
        self._groups = list(groups)
        self.threshold = threshold
        self.interval = interval
        self._clock = clock
        self._last = clock()
        self._handle: asyncio.TimerHandle | None = None
        #: Gaps over the threshold seen so far.
        self.pauses = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the timer on *loop* (the running one by default)."""
        self._loop = loop or asyncio.get_running_loop()
        self._last = self._clock()
        self._handle = self._loop.call_later(self.interval, self.tick)

    def tick(self) -> None:
        """One run of the timer: drop the copies if the loop was away too long."""
        now = self._clock()
        gap = now - self._last
        self._last = now
        if gap > self.threshold:
            self.pauses += 1
            for group in self._groups:
                group.drop_copies()
            log.warning("worker loop did not run for %.1f s (paused?): dropped this host's cached "
                        "copies, which may have missed invalidations meanwhile", gap)
        if self._handle is not None:
            self._handle = self._loop.call_later(self.interval, self.tick)

    def stop(self) -> None:
        """Stop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
