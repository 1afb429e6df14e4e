"""Eviction policies: what the log's hand does with a live entry at its tail.

Eviction is CLOCK expressed as FIFO-with-reinsertion over each (group,
shard) log (``log.py``): a get raises the slot's reference byte (a plain
byte store, no lock); when a write needs room, the hand at the log's tail
asks the group's policy whether to drop the entry or copy it to the head.
An expired entry is dropped before any policy is asked (no second chance).

A policy is one small class here and one line in ``POLICIES``; nothing
else changes to add one.  What a policy decides with:

- ``flags``: the entry's flag byte; ``F_HOT`` marks the second queue (lru2's
  hot list; S3-FIFO's main queue would use it the same way).
- ``ref``: the slot's reference byte, which lock-free reads raise up to the
  policy's ``ref_max`` (1: a bit; a frequency-counting policy such as
  S3-FIFO's 2-bit counter sets 3).
- ``hot``: live bytes of ``F_HOT`` entries in this log; ``slice_bytes``:
  the log's size.

``at_tail`` returns ``(new flags, new reference byte)`` to keep the entry,
or None to evict it.
"""

from __future__ import annotations

from ..limits import POLICIES as _POLICY_NAMES
from .layout import F_HOT

#: lru2: the hot (second) list may hold this share of a slice before the
#: hand demotes its unreferenced entries (measured in bench_arena.py).
HOT_SHARE = 0.75


class Policy:
    """One eviction policy; ``code`` is what the group record stores (``layout.GROUP``)."""

    name = ""
    code = -1
    #: How far lock-free reads count the reference byte (1: a reference bit).
    ref_max = 1

    def at_tail(self, flags: int, ref: int, hot: int, slice_bytes: int) -> tuple[int, int] | None:
        """(flags, reference byte) to keep the entry at the tail with, or None to evict it."""
        raise NotImplementedError


class Lru(Policy):
    """CLOCK: a referenced entry gets a second chance, an unreferenced one is evicted."""

    name = "lru"
    code = 0

    def at_tail(self, flags, ref, hot, slice_bytes):
        """Keep (reference cleared) when referenced since the hand last passed."""
        return (flags, 0) if ref else None


class Lru2(Policy):
    """LCache's two lists as two CLOCK states.

    A new entry is *cold*; a cold entry referenced since the hand last
    passed is promoted to *hot* (the second list), an unreferenced cold one
    is evicted; a hot entry keeps its place while referenced and is demoted
    to cold when not, but only while the hot list is over ``HOT_SHARE`` of
    the slice.  Cold entries are therefore evicted first, and a one-time
    scan cannot push hot entries out in one sweep.
    """

    name = "lru2"
    code = 1

    def at_tail(self, flags, ref, hot, slice_bytes):
        """Promote referenced cold entries, demote unreferenced hot ones over the share."""
        if flags & F_HOT:
            # The second list only shrinks when over its share: a scan of
            # cold entries never pushes hot ones out.
            return (flags if ref or hot <= slice_bytes * HOT_SHARE else flags & ~F_HOT), 0
        return (flags | F_HOT, 0) if ref else None


#: Policies by the name a group is configured with.
POLICIES: dict[str, Policy] = {p.name: p for p in (Lru(), Lru2())}
# The names are a naming rule every cache shares (``geecache.limits``): the
# config validates against it before any arena exists.
assert tuple(POLICIES) == _POLICY_NAMES, "geecache.limits.POLICIES must list the arena's policies"
#: Policies by the code stored in a group record.
BY_CODE: dict[int, Policy] = {p.code: p for p in POLICIES.values()}
