"""Group counters: the names every layer agrees on, and an in-process sink.

The arena keeps the same fields in per-process rows of shared memory (each
process writes only its own row, so no lock); ``LocalStats`` is the plain one.
"""

from __future__ import annotations

from typing import Protocol

#: Counter fields of a group, in the order the arena's stat rows store them.
STAT_FIELDS = (
    "gets",           # every Group.get
    "local_hits",     # served from the owner's cache on this host
    "hot_hits",       # served from the hot copy of a key another host owns
    "peer_hits",      # fetched from the owning peer
    "peer_errors",    # peer fetch failed; fell back to a local load
    "loads",          # source loads this process ran
    "loads_deduped",  # misses that waited for another caller's load instead
    "load_errors",    # source loads that raised
    "evictions",      # entries dropped to make room
    "expirations",    # entries dropped because their TTL passed
    "sets",           # Group.set calls
    "deletes",        # Group.delete calls
    "peer_requests",  # requests served for other hosts
    "lock_timeouts",  # cache writes given up: a stalled process held the shard lock
    "peer_skipped",   # peer calls not made: the owner's circuit breaker was open (served locally)
    "peer_trips",     # peer calls whose timeout or refusal opened that peer's circuit breaker
    "writes_refused", # writes the source did not apply: older than its version, or past the deadline
    "handoff_hits",   # owned misses served from the previous owner's cache after a ring change
    "handoff_misses", # handoff asks the previous owner could not answer (loaded from the source)
    "pause_drops",    # keys dropped after a pause or warm restart: another host wrote them meanwhile
    "pause_wipes",    # every copy dropped after a pause: the other hosts could not say what changed
    "source_commits", # transactions this process committed to the group's source (group commit)
    "source_writes",  # rows in those transactions: writes / commits is the rows shared per commit
    "warm_keys",      # entries a warm-up stored here after a join (asked of the keys' previous owners)
    "warm_drops",     # warmed entries dropped again: written elsewhere during the warm-up, or unsure
    "warmups",        # warm-ups of the group this host finished after joining a ring
    "handoff_cold",   # handoff asks not made: the previous owner said lately it holds nothing
)


class StatsSink(Protocol):
    """Where one process's counters of one group go."""

    def add(self, field: str, n: int = 1) -> None:
        """Add *n* to counter *field* (one of STAT_FIELDS)."""

    def snapshot(self) -> dict[str, int]:
        """Current values of every field."""


class LocalStats:
    """A StatsSink kept in a dict: for one process without an arena."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(STAT_FIELDS, 0)

    def add(self, field: str, n: int = 1) -> None:
        self._counts[field] += n

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)
