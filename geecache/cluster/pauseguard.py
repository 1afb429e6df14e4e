"""After a pause, drop the copies that were written elsewhere meanwhile (invariant 9).

An owner stopped for seconds (SIGSTOP, swap, a VM pause, a loader that
blocks its loop) misses the invalidations other hosts send meanwhile: they
give up on it after their timeout (1 s), write through the source
themselves, and the ring may even drop it.  When it resumes, its copies of
those keys are stale, and with a group ``ttl`` of 0 they would be served
forever.

The guard is a timer on the worker's loop that notes when it last ran: a
gap longer than ``threshold`` means the process (or its loop) did not run
for that long.  Shorter pauses lose nothing: a sender still waiting for its
answer, and a write's originator waits longer still (the peer read timeout)
before it writes elsewhere.  After a longer one it asks every other member
which keys it wrote in that time (their ``geecache.writelog``, over the peer
API) and drops this host's copies of those keys only; only when a member
cannot say (unreachable, or its log does not reach back so far) does it drop
every copy.  A host with no peers drops nothing: nobody else writes.  The
question blocks the loop (bounded), so once the guard has seen the pause no
request is served from a copy it is about to drop; a request the loop reads
before the guard's timer runs, in the very turn it resumes, can still be
served from such a copy.  The host's workers share the arena, so whichever
worker asks drops the copies for all of them.

A host that served alone (its ring only itself: as it starts, or all
the while etcd could not be reached) missed every write elsewhere: the guard
drops its copies when its ring first holds other hosts too.  Copies a host
keeps while it is joining (the others do not route to it yet) are covered
by the others: a host that adds a member to its ring sends it the keys it
wrote in the last moments (``HTTPPool``).  As a backstop the guard asks once
more ``settle`` seconds after a pause, for the whole time since it began (a
lease TTL: the paused host may have left the ring and be re-joining).

A warm restart is an absence too (``unsure_since`` of the write log, set by
the supervisor that reattached the arena): ``after_absence`` settles it the
same way before the worker serves.
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
#: Seconds the question reaches back before the pause began: an invalidation
#: sent just before it may still have been unread (a sender waits 1 s for its
#: answer), and the loop last ran up to one interval before the stop.
MARGIN = 2.0

#: How long after a pause a request read is taken to have arrived when the pause began: what
#: sat in the socket meanwhile is read in the first turns of the loop after it.
RESUME_GRACE = 1.0

#: The guard of this process's event loop (a worker has one), for ``earliest_arrival``; set by
#: ``PauseGuard.start`` on the loop's thread, which is the only one that reads it.
_current: "PauseGuard | None" = None


def earliest_arrival() -> float:
    """The earliest ``time.monotonic()`` at which a request this loop reads now may have arrived.

    Now, unless the loop was paused lately (or is in a pause its guard has not
    seen yet, in this very turn): then when that pause began, since the request
    may have waited in its socket all along.  A peer's write is applied only
    within its timeout of this (``geecache.cluster.ownerwrites``), judged by this host's
    clock alone.
    """
    now = time.monotonic()
    guard = _current
    return now if guard is None else guard.earliest_arrival(now)


def unsure_now() -> bool:
    """True while this loop's host may hold copies written elsewhere that it has not dropped yet:
    a pause the guard has not seen (this very turn), one that ended within RESUME_GRACE, or one
    whose second question (``settle``) is still due.  A previous owner that is unsure sends no
    warm-up (``geecache.cluster.warmup``): it would hand its doubt on to a host that was never away."""
    guard = _current
    return guard is not None and guard.unsure(time.monotonic())


#: ask(within, members before) -> (group -> keys written elsewhere in the last *within* seconds, "")
#: or (None, why): why when a member cannot say, or one of *members before* left the ring meanwhile.
Ask = Callable[[float, Iterable[str]], "tuple[dict[str, set[str]] | None, str]"]


class PauseGuard:
    """After a gap in this loop's timer, drops the copies written elsewhere meanwhile; after a
    join, every copy.

    *clock* is monotonic (it keeps counting while a process is stopped).
    *ask* (``HTTPPool.writes_elsewhere``) asks the other members; without it
    (a host with no peers) a pause drops nothing.  *settle* is how long after
    a pause it asks once more, for the whole time since the pause began (0:
    not).  *members* (``HTTPPool.members``) and *self_address* let it see
    this host go from alone to a ring with others.  ``pauses`` counts the
    gaps seen, ``drops`` the times every copy was dropped, ``dropped`` the
    keys dropped because they were written elsewhere.
    """

    def __init__(self, groups: Iterable, *, threshold: float = DEFAULT_THRESHOLD,
                 interval: float = DEFAULT_INTERVAL, settle: float = 0.0,
                 members: Callable[[], Iterable[str]] | None = None, self_address: str | None = None,
                 ask: Ask | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < interval < threshold:
            raise ValueError(f"need 0 < interval < threshold, got {interval!r}, {threshold!r}")
        self._groups = {group.name: group for group in groups}
        self.threshold = threshold
        self.interval = interval
        self.settle = settle
        self._members = members
        self._self = self_address
        self._ask = ask
        self._clock = clock
        self._last = clock()
        self._ring_seen: tuple[str, ...] = ()  # the members at the last tick: whom a pause may have cost
        self._alone = self._serving_alone()
        self._due: list[tuple[float, float]] = []  # (when to ask again, when the pause began), monotonic
        self._last_pause = (0.0, float("-inf"))  # (began, ended) of the latest pause, monotonic
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Gaps over the threshold seen so far.
        self.pauses = 0
        #: Times every copy was dropped.
        self.drops = 0
        #: Keys dropped because another host wrote them during a pause.
        self.dropped = 0

    def _serving_alone(self) -> bool:
        """This host's ring is only itself (False when not watching the ring)."""
        if self._members is None:
            return False
        self._ring_seen = tuple(self._members())
        return set(self._ring_seen) <= {self._self}

    def _has_peers(self) -> bool:
        if self._ask is None:
            return False
        return self._members is None or not self._serving_alone()

    def earliest_arrival(self, now: float) -> float:
        """See the module's ``earliest_arrival``; *now* by this guard's clock."""
        arrival = now
        if now - self._last > 2 * self.interval:  # the loop has not ticked lately: a pause being seen
            arrival = self._last
        began, ended = self._last_pause
        return min(arrival, began) if now - ended <= RESUME_GRACE else arrival

    def unsure(self, now: float) -> bool:
        """See the module's ``unsure_now``; *now* by this guard's clock."""
        return now - self._last > self.threshold or now - self._last_pause[1] <= RESUME_GRACE \
            or bool(self._due)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the timer on *loop* (the running one by default); this process's requests are
        judged by it (``earliest_arrival``)."""
        global _current
        _current = self
        self._loop = loop or asyncio.get_running_loop()
        self._last = self._clock()
        self._handle = self._loop.call_later(self.interval, self.tick)

    def tick(self) -> None:
        """One run of the timer: settle a pause the loop was away for, or a join, or a pause due again."""
        try:
            self._check()
        finally:  # the timer must go on whatever a drop raised
            if self._handle is not None:
                assert self._loop is not None  # start() set it before it set the timer
                self._handle = self._loop.call_later(self.interval, self.tick)

    def _check(self) -> None:
        now = self._clock()
        gap = now - self._last
        began = self._last
        self._last = now
        if gap > self.threshold:
            self.pauses += 1
            self._last_pause = (began, now)
            self.after_absence(began, f"worker loop did not run for {gap:.1f} s (paused?)", self._ring_seen)
            self._last_pause = (began, self._clock())  # the asking blocked the loop too
            if self.settle:
                self._due.append((now + self.settle, began))
        alone = self._serving_alone()  # (a refresh that finds a join calls ``joined`` itself)
        if self._alone and not alone:
            self.joined()
        self._alone = alone
        if self._due and min(self._due)[0] <= now:
            due = [began for at, began in self._due if at <= now]
            self._due = [entry for entry in self._due if entry[0] > now]
            self.after_absence(min(due), f"{self.settle:g} s after a pause, asked again", self._ring_seen)
        self._last = self._clock()  # the asking blocked the loop: that is no pause

    def joined(self) -> None:
        """The ring just gained other members: if this worker served alone, drop every copy now.

        A host serving alone (starting, or cut off from etcd) missed every write
        elsewhere.  Called by the peer pool inside the ring refresh that sees
        the join, so no key is routed by the new ring before the drop: copies
        cached after it were loaded by the new ring and stay.  (Dropped on the
        next timer tick instead, the ones a request cached in between went too.)
        """
        if not self._alone:
            return
        self._alone = False
        self._drop_all(counted=False)  # the cache of a host starting: not a pause's loss
        log.info("joined a ring: dropped the cached copies kept while serving alone")

    def after_absence(self, began: float, what: str, members_before: Iterable[str] = ()) -> None:
        """Drop what other hosts wrote since *began* (monotonic), or every copy if they cannot say;
        log one line saying which, starting with *what*.

        *members_before* (the ring before the absence): a member that left it
        meanwhile cannot be asked, and its writes may be among those missed.
        """
        members_before = tuple(members_before)
        # Settled against this ring by asking, not by the join drop: a join the refresh here
        # finds (a warm restart's first ring with the others) must not drop what is settled.
        self._alone = False
        self._alone = self._serving_alone()
        if not self._has_peers() and set(members_before) <= {self._self}:
            log.warning("%s: this host has no peers, nothing dropped", what)
            return
        within = self._clock() - began + MARGIN
        written, why = self._ask(within, members_before) if self._ask is not None else (None, "no peers to ask")
        if written is None:
            self._drop_all()
            log.warning("%s: dropped every cached copy, since the other hosts could not say which keys "
                        "they wrote meanwhile (%s)", what, why)
            return
        dropped = 0
        for name, keys in written.items():
            group = self._groups.get(name)
            if group is None:
                continue  # a group this host does not serve
            try:
                group.invalidate(list(keys))
            except Exception:  # a shard lock a stalled process holds (LockTimeoutError): drop it all
                self._drop_all([group])
                log.exception("dropping the copies of group %r written elsewhere failed; dropped all", name)
                continue
            group.stats.add("pause_drops", len(keys))
            dropped += len(keys)
        self.dropped += dropped
        log.warning("%s: dropped %d cached keys other hosts wrote meanwhile (asked over the last %.1f s)",
                    what, dropped, within)

    def _drop_all(self, groups=None, counted: bool = True) -> None:
        self.drops += 1
        for group in groups or self._groups.values():
            try:
                if counted:
                    group.stats.add("pause_wipes")
                group.drop_copies()
            except Exception:  # a shard lock a stalled process holds (LockTimeoutError): go on
                log.exception("dropping the cached copies of group %r failed", group.name)

    def stop(self) -> None:
        """Stop the timer."""
        global _current
        if _current is self:
            _current = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
