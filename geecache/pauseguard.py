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

A host that served alone (its ring only itself: as it starts, or all
the while etcd could not be reached) missed every write elsewhere: the guard
drops its copies when its ring first holds other hosts too.  Copies a host
keeps while it is joining (the others do not route to it yet) are covered
by the others: a host that adds a member to its ring sends it the keys it
wrote in the last moments (``HTTPPool``).  As a backstop the guard drops
the copies once more ``settle`` seconds after a pause (a lease TTL: the
paused host may have left the ring and be re-joining).
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
    """Calls ``drop_copies()`` on every group after a gap in this loop's timer, and after joins.

    *clock* is monotonic (it keeps counting while a process is stopped).
    *settle* is how long after a pause the copies are dropped once more (0:
    not).  *members* (``HTTPPool.members``) and *self_address* let it see
    this host go from alone to a ring with others; without them only pauses
    are watched.  ``pauses`` counts the gaps seen, ``drops`` every time the
    copies were dropped.
    """

    def __init__(self, groups: Iterable, *, threshold: float = DEFAULT_THRESHOLD,
                 interval: float = DEFAULT_INTERVAL, settle: float = 0.0,
                 members: Callable[[], Iterable[str]] | None = None, self_address: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < interval < threshold:
            raise ValueError(f"need 0 < interval < threshold, got {interval!r}, {threshold!r}")
        self._groups = list(groups)
        self.threshold = threshold
        self.interval = interval
        self.settle = settle
        self._members = members
        self._self = self_address
        self._clock = clock
        self._last = clock()
        self._alone = self._serving_alone()
        self._due: list[float] = []  # monotonic times of the drops still to do
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Gaps over the threshold seen so far.
        self.pauses = 0
        #: Times the copies were dropped.
        self.drops = 0

    def _serving_alone(self) -> bool:
        """This host's ring is only itself (False when not watching the ring)."""
        if self._members is None:
            return False
        return set(self._members()) <= {self._self}

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the timer on *loop* (the running one by default)."""
        self._loop = loop or asyncio.get_running_loop()
        self._last = self._clock()
        self._handle = self._loop.call_later(self.interval, self.tick)

    def tick(self) -> None:
        """One run of the timer: drop the copies if the loop was away too long, or it is time."""
        try:
            self._check()
        finally:  # the timer must go on whatever a drop raised
            if self._handle is not None:
                self._handle = self._loop.call_later(self.interval, self.tick)

    def _check(self) -> None:
        now = self._clock()
        gap = now - self._last
        self._last = now
        if gap > self.threshold:
            self.pauses += 1
            self._drop()
            log.warning("worker loop did not run for %.1f s (paused?): dropped this host's cached "
                        "copies, which may have missed invalidations meanwhile", gap)
            if self.settle:
                self._due.append(now + self.settle)
        alone = self._serving_alone()
        if self._alone and not alone:
            self._drop()
            log.info("joined a ring: dropped the cached copies kept while serving alone")
        self._alone = alone
        if self._due and min(self._due) <= now:
            self._due = [t for t in self._due if t > now]
            self._drop()
            log.info("dropped this host's cached copies again, %g s after a pause", self.settle)

    def _drop(self) -> None:
        self.drops += 1
        for group in self._groups:
            try:
                group.drop_copies()
            except Exception:  # a shard lock a stalled process holds (LockTimeoutError): go on
                log.exception("dropping the cached copies of group %r failed", group.name)

    def stop(self) -> None:
        """Stop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
