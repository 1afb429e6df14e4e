"""An entry's lifetime between hosts: a duration on the wire, an expiry by one host's clock.

Hosts' clocks disagree (by minutes, or an hour when NTP is broken).  An
absolute expiry sent by one host and judged by another's clock makes a
6-second value live an hour, or be dead on arrival (invariant 10, "one clock
per expiry").  So a host sends how many seconds an entry has left, and the
receiver turns that into an expiry by its own clock: the only error is the
time the answer spent on the wire, which only shortens the copy's life.
Leaf module: standard library only.
"""

from __future__ import annotations

#: The least life an answer can claim: an entry about to expire is still alive when sent.
MIN_LEFT = 1e-3


def seconds_left(expire_at: float, now: float) -> float:
    """For a sender: the seconds an entry expiring at *expire_at* (0: never) has left at *now*;
    0 for one that never expires."""
    if not expire_at:
        return 0.0
    return max(expire_at - now, MIN_LEFT)


def local_expiry(expire_at: float, ttl_left: float, now: float) -> float:
    """For a receiver: the expiry by this host's clock (*now*) of an answer that carried
    *expire_at* (the sender's clock) and *ttl_left*; 0 = never.

    A sender from before ``ttl_left`` sends 0 there: its absolute expiry is all
    there is.
    """
    if not expire_at:
        return 0.0
    if ttl_left > 0:
        return now + ttl_left
    return expire_at
