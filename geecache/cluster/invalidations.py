"""Invalidations to the other members: sent at once, owed until delivered, replayed to newcomers.

A write's owner tells every other member to drop its copies of the written keys
(``HTTPPool.invalidate``).  A member that does not answer (paused, partitioned, its
breaker open) is owed them: they wait in its mailbox and are retried after each
cooldown until it answers or leaves the ring.  The keys written in the last
``replay_window`` seconds are also remembered, and sent to members the ring adds: a
host joining serves (and keeps copies) before every other host routes to it, and
those copies missed the writes of hosts that did not know it yet.  The event loop's
single thread guards every mailbox and the list of recent writes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Iterable

from geecache.cluster.breaker import CLOSED, Breaker
from geecache.errors import PeerError

if TYPE_CHECKING:
    from geecache.cluster.httppeer import HTTPPeer

log = logging.getLogger("geecache.cluster.pool")

#: How long a write waits for an invalidation to a member whose breaker is open
#: or that has undelivered ones: long enough for a member that is back to answer
#: (on a LAN, milliseconds), short enough that a hung one costs writes little.
TRIPPED_WAIT = 0.05
#: Undelivered invalidations kept per member (keys over all groups); past it
#: more are dropped (logged) and those copies are healed by their TTL only.
MAX_UNDELIVERED = 100_000
#: Least pause between two deliveries to a member that did not answer.
RETRY_MIN = 0.1
#: Keys written recently that a pool remembers for members it adds (see ``HTTPPool``).
MAX_RECENT = 100_000


class _Mailbox:
    """Invalidations a member has not acknowledged: retried until it does or leaves the ring.

    A write done while its owner was unreachable (paused, partitioned) left
    that owner's copy stale; without the retry it would be served until its
    TTL, forever with none.  The event loop's single thread guards it.
    """

    __slots__ = ("keys", "size", "task", "dropped")

    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {}  # group -> keys
        self.size = 0
        self.task: asyncio.Task | None = None
        self.dropped = 0

    def post(self, group: str, keys: list[str]) -> None:
        held = self.keys.setdefault(group, set())
        for key in keys:
            if key not in held:
                if self.size >= MAX_UNDELIVERED:
                    self.dropped += 1
                    continue
                held.add(key)
                self.size += 1

    def take(self) -> dict[str, set[str]]:
        batch, self.keys, self.size = self.keys, {}, 0
        return batch


class Invalidations:
    """The invalidations this host sends the other members, and those it still owes them.

    ``address in invalidations`` is True while that member is owed some.
    """

    def __init__(self, breaker: Breaker, replay_window: float = 10.0) -> None:
        self.breaker = breaker
        self._mail: dict[str, _Mailbox] = {}  # address -> undelivered invalidations
        # (monotonic time, group, keys) of this host's recent invalidations, newest last,
        # for members added to the ring (``replay``).
        self.replay_window = float(replay_window)
        self._recent: collections.deque = collections.deque()
        self._recent_keys = 0

    def __contains__(self, address: object) -> bool:
        return address in self._mail

    async def send(self, peers: Iterable["HTTPPeer"], group: str, keys: list[str], timeout: float = 1.0) -> int:
        """Ask each of *peers* to drop its copies of *keys*; bounded by *timeout*.

        A member with a closed breaker and nothing pending is waited for (up
        to *timeout*), so a client that wrote here and reads there sees its
        write.  The keys are also remembered for ``replay_window`` seconds,
        for members added to the ring meanwhile.  One whose breaker is open,
        or that already has undelivered
        invalidations, gets them through its mailbox: sent at once, waited
        for only TRIPPED_WAIT, and retried after each cooldown until it
        answers or leaves the ring.  A member that fails or does not answer
        in time has the keys put in its mailbox.  Returns how many breakers
        this opened.
        """
        if self.replay_window > 0:
            self._remember(group, keys)
        calls: dict[asyncio.Future, HTTPPeer] = {}
        started = []
        for peer in peers:
            if self.breaker.state(peer.address) == CLOSED and peer.address not in self._mail:
                calls[asyncio.ensure_future(peer.invalidate(group, keys))] = peer
            else:
                task = self._post(peer, group, keys)
                if task is not None:
                    started.append(task)
        trips = 0
        if calls:
            done, pending = await asyncio.wait(calls, timeout=timeout)
            for call in pending:
                call.cancel()
                peer = calls[call]
                trips += self.breaker.failure(peer.address)
                self._post(peer, group, keys)
            for call in done:
                error = call.exception()
                if error is not None:
                    trips += bool(getattr(error, "tripped", False))
                    self._post(calls[call], group, keys)
        if started:
            await asyncio.wait(started, timeout=TRIPPED_WAIT)
        return trips

    def _remember(self, group: str, keys: list[str]) -> None:
        now = time.monotonic()
        self._recent.append((now, group, tuple(keys)))
        self._recent_keys += len(keys)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        recent = self._recent
        while recent and (recent[0][0] < now - self.replay_window or self._recent_keys > MAX_RECENT):
            self._recent_keys -= len(recent.popleft()[2])

    def replay(self, added: Iterable["HTTPPeer"]) -> None:
        """Send members just added to the ring the keys this host wrote in the replay window."""
        if not self._recent:
            return
        self._forget_old(time.monotonic())
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # outside the worker's loop (a test reading the ring): nobody to tell
            return
        for peer in added:
            for _, group, keys in self._recent:
                self._post(peer, group, list(keys))

    def _post(self, peer: "HTTPPeer", group: str, keys: list[str]) -> asyncio.Task | None:
        """Put *keys* in *peer*'s mailbox; the delivery task if this started one."""
        mail = self._mail.get(peer.address)
        if mail is None:
            mail = self._mail[peer.address] = _Mailbox()
        mail.post(group, keys)
        if mail.task is None or mail.task.done():
            mail.task = asyncio.ensure_future(self._deliver(peer, mail))
            return mail.task
        return None

    async def _deliver(self, peer: "HTTPPeer", mail: _Mailbox, timeout: float = 1.0) -> None:
        """Send *peer* its undelivered invalidations until it has them all."""
        while mail.size:
            batch = mail.take()
            failed = False
            for group, keys in batch.items():
                if failed:
                    mail.post(group, list(keys))
                    continue
                try:
                    await asyncio.wait_for(peer.invalidate(group, list(keys)), timeout)
                except (PeerError, asyncio.TimeoutError):
                    failed = True
                    self.breaker.failure(peer.address)
                    mail.post(group, list(keys))
            if mail.dropped:
                log.warning("peer %s: %d invalidations dropped (over %d undelivered); those copies "
                            "expire by their TTL only", peer.address, mail.dropped, MAX_UNDELIVERED)
                mail.dropped = 0
            if failed:
                await asyncio.sleep(max(self.breaker.retry_in(peer.address), RETRY_MIN))
        if self._mail.get(peer.address) is mail:
            del self._mail[peer.address]

    def drop(self, address: str) -> None:
        """Give up what *address* is owed (it left the ring)."""
        mail = self._mail.pop(address, None)
        if mail is not None and mail.task is not None:
            mail.task.cancel()

    def close(self) -> None:
        """Give up every undelivered invalidation."""
        for address in list(self._mail):
            self.drop(address)
