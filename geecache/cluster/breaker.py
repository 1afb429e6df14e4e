"""A per-peer circuit breaker: a hung peer costs one timeout per cooldown, not one per request.

Why: while a stopped host's lease was still alive, every
request for its keys waited out the full peer timeout.  The breaker keeps,
per peer, one of three states:

- **closed** (the normal state; the peer has no entry at all): calls go
  through.  ``failures`` consecutive transport failures (a timeout, a
  refused or reset connection) open it.
- **open** until ``now + cooldown``: ``allow`` says no, and the caller
  routes that peer's keys as if it were down (loads locally, as it already
  does after a refusal).
- **half-open** once the cooldown has passed: the next ``allow`` lets ONE
  call through as a probe, every other caller still hears no.  The probe's
  success closes the breaker; its failure re-opens it with the cooldown
  multiplied by ``backoff``, up to ``max_cooldown``.  A probe that never
  reports (its task was cancelled) is given up after ``probe_timeout`` and
  another caller probes.

Why one failure opens it by default: a transport failure to a peer on the
cluster's own network is a timeout (the full read timeout, seconds) or a
refusal (the process is gone).  Waiting for N of them means N more
requests, and with C requests in flight, C x N, each paying the full
timeout; the price of a false trip is only that one peer's keys are served
by local loads for one cooldown, which the cluster already does whenever a
peer is down.  ``failures`` is configurable for networks that drop the odd
connection.  An *answer* from the peer, even a 5xx, is a success here: the
peer is alive and responding; only the transport failing counts.

Any success closes the breaker, not only the probe's: an answer is proof of
life.  A failure reported while open (a call that started before the trip)
changes nothing.

The hot path is ``allow``: a dict lookup for a closed peer (no entry, so
no clock read), a clock read and a float compare for an open one.  No
tasks, no locks: one event loop per process owns the breaker.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("geecache.cluster.breaker")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class _Tripped:
    """A peer whose breaker is open or half-open."""

    __slots__ = ("until", "cooldown", "probe_until")

    def __init__(self, until: float, cooldown: float) -> None:
        self.until = until  # open until then; half-open after
        self.cooldown = cooldown  # the cooldown that set ``until``
        self.probe_until = 0.0  # a probe is out until then (0: none)


class Breaker:
    """The circuit breakers of every peer of one process (see the module doc).

    *clock* is a monotonic clock in seconds (injectable for tests).
    *on_trip* is called with the peer each time its breaker opens (from
    closed, or again after a failed probe), e.g. to count it in a stat row.
    """

    def __init__(
        self,
        *,
        failures: int = 1,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        backoff: float = 2.0,
        probe_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_trip: Callable[[str], None] | None = None,
    ) -> None:
        if not (isinstance(failures, int) and failures >= 1):
            raise ValueError(f"failures must be an int >= 1, got {failures!r}")
        if not 0 < cooldown <= max_cooldown < float("inf"):
            raise ValueError(f"need 0 < cooldown <= max_cooldown < inf, got {cooldown!r}, {max_cooldown!r}")
        if not backoff >= 1:
            raise ValueError(f"backoff must be >= 1, got {backoff!r}")
        if not 0 < probe_timeout < float("inf"):
            raise ValueError(f"probe_timeout must be > 0 seconds, got {probe_timeout!r}")
        self.failures = failures
        self.cooldown = float(cooldown)
        self.max_cooldown = float(max_cooldown)
        self.backoff = float(backoff)
        self.probe_timeout = float(probe_timeout)
        self._clock = clock
        self._on_trip = on_trip
        self._tripped: dict[str, _Tripped] = {}  # only peers not closed
        self._failed: dict[str, int] = {}  # consecutive failures of closed peers (failures > 1)
        #: Times any breaker opened (closed -> open, or half-open -> open).
        self.trips = 0
        #: Calls ``allow`` refused (routed around the peer).
        self.rejected = 0
        #: Probes let through in half-open.
        self.probes = 0

    def allow(self, peer: str) -> bool:
        """May a call go to *peer* now?  False: route its keys as if it were down."""
        tripped = self._tripped.get(peer)
        if tripped is None:
            return True
        now = self._clock()
        if now < tripped.until or now < tripped.probe_until:
            self.rejected += 1
            return False
        tripped.probe_until = now + self.probe_timeout  # this caller is the probe
        self.probes += 1
        log.info("breaker %s: half-open, one probe call let through", peer)
        return True

    def success(self, peer: str) -> None:
        """A call to *peer* got an answer: close its breaker."""
        if self._tripped and self._tripped.pop(peer, None) is not None:
            log.info("breaker %s: closed (the peer answered)", peer)
        if self._failed:
            self._failed.pop(peer, None)

    def failure(self, peer: str) -> bool:
        """A call to *peer* timed out or was refused; True when that opened its breaker."""
        tripped = self._tripped.get(peer)
        now = self._clock()
        if tripped is None:
            if self.failures > 1:
                count = self._failed.get(peer, 0) + 1
                if count < self.failures:
                    self._failed[peer] = count
                    return False
                self._failed.pop(peer, None)
            self._open(peer, now, self.cooldown)
            return True
        if now >= tripped.until:  # half-open: the probe (or a straggler after the cooldown) failed
            self._open(peer, now, min(tripped.cooldown * self.backoff, self.max_cooldown))
            return True
        return False  # open already; a call that started before the trip adds nothing

    def _open(self, peer: str, now: float, cooldown: float) -> None:
        self._tripped[peer] = _Tripped(now + cooldown, cooldown)
        self.trips += 1
        log.warning("breaker %s: open for %gs (timed out or refused); its keys load locally", peer, cooldown)
        if self._on_trip is not None:
            self._on_trip(peer)

    def state(self, peer: str) -> str:
        """``closed``, ``open`` or ``half_open``."""
        tripped = self._tripped.get(peer)
        if tripped is None:
            return CLOSED
        return OPEN if self._clock() < tripped.until else HALF_OPEN

    def retry_in(self, peer: str) -> float:
        """Seconds until *peer*'s breaker lets a probe through (0 when closed or half-open)."""
        tripped = self._tripped.get(peer)
        return 0.0 if tripped is None else max(0.0, tripped.until - self._clock())

    def forget(self, peer: str) -> None:
        """Drop *peer*'s state (it left the ring); if it comes back it starts closed."""
        self._tripped.pop(peer, None)
        self._failed.pop(peer, None)

    def snapshot(self) -> dict:
        """States of the peers not closed, and the counters, for metrics and /cluster."""
        return {
            "peers": {peer: self.state(peer) for peer in self._tripped},
            "trips": self.trips,
            "rejected": self.rejected,
            "probes": self.probes,
        }
