"""Eviction policies: what the log's hand does with a live entry at its tail.

Eviction is CLOCK expressed as FIFO-with-reinsertion over each (group,
shard) log (``log.py``): a get raises the slot's reference byte (a plain
byte store, no lock); when a write needs room, the hand at the log's tail
asks the group's policy whether to drop the entry or copy it to the head.
An expired entry is dropped before any policy is asked (no second chance).

A policy is one small class here and one line in ``POLICIES``; nothing
else changes to add one.  What a policy decides with:

- ``flags``: the entry's flag byte; ``F_HOT`` marks the second queue (lru2's
  hot list; S3-FIFO's main queue).
- ``ref``: the slot's reference byte, which lock-free reads raise up to the
  policy's ``ref_max`` (1: a bit; a frequency-counting policy such as
  S3-FIFO's 2-bit counter sets 3).
- ``hot``: live bytes of ``F_HOT`` entries in this log; ``slice_bytes``:
  the log's size.

``at_tail`` returns ``(new flags, new reference byte)`` to keep the entry,
or None to evict it.

A policy with ``small_share`` > 0 has two logs per (group, shard): the
slice is split into a small log (that share) and a main log (the rest).
New entries go to the small log; an entry whose flags gain ``F_HOT`` at
the small log's tail moves to the main log's head (which may run the main
log's hand); an entry the small log evicts is remembered in the ghost set
(``ghost.py``), and a remembered key set again goes to the main log
directly.  The plumbing is ``log.py`` (the move, the ghost) and
``Arena.set`` (which log a write goes to).
"""

from __future__ import annotations

from ..limits import POLICIES as _POLICY_NAMES
from .layout import F_HOT
from .shadow import GHOST

#: lru2: the hot (second) list may hold this share of a slice before the
#: hand demotes its unreferenced entries (measured in bench_arena.py).
HOT_SHARE = 0.75


class Policy:
    """One eviction policy; ``code`` is what the group record stores (``layout.GROUP``)."""

    name = ""
    code = -1
    #: How far lock-free reads count the reference byte (1: a reference bit).
    ref_max = 1
    #: Share of a slice for a small log before the main one (0: one log per slice).
    small_share = 0.0
    #: Whether the frequency sketch counts this policy's keys (``S3Lfu``).
    counts = False
    #: Whether the hand runs the windowed TinyLFU step (``Logs._tail_windowed``).
    windowed = False
    #: Whether miniature simulations choose the admission level (``Adaptive``, ``shadow.py``).
    adaptive = False

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


class S3Fifo(Policy):
    """S3-FIFO (Yang et al., SOSP'23): a small FIFO, a main FIFO, a ghost set.

    Reads count to 3 (a 2-bit counter).  At the small log's tail an entry
    read at least ``PROMOTE_AT`` times moves to the main log (counter
    kept), any other is evicted and its key remembered in the ghost set; at
    the main log's tail a read entry is reinserted with its counter one
    lower, an unread one is evicted.  New entries therefore meet the hand
    after a tenth of a slice of writes, and one-time keys (a scan) leave
    from the small log without touching the main one.
    """

    name = "s3fifo"
    code = 2
    ref_max = 3
    #: The paper's 10 %.
    small_share = 0.1
    #: Reads an entry needs in the small log to enter the main one (measured in bench_policy.py).
    PROMOTE_AT = 1

    def at_tail(self, flags, ref, hot, slice_bytes):
        """Small log: promote at PROMOTE_AT reads, else evict; main log: CLOCK with a counter."""
        if flags & F_HOT:
            return (flags, ref - 1) if ref else None
        return (flags | F_HOT, ref) if ref >= self.PROMOTE_AT else None


class S3Lfu(S3Fifo):
    """S3-FIFO with a TinyLFU admission sketch (Einziger et al., 2017) at the small log's tail.

    As S3-FIFO, but an entry the small log would evict unread still enters
    the main log when the frequency sketch (``sketch.py``) counts its key
    more often than the main log's tail entry (the next victim, with the
    reads its reference byte holds); a tie keeps the victim.  The sketch
    counts the reads the hand clears (the main log is CLOCK: keep a read
    entry, reference byte cleared, folded into the sketch, so a read counts
    once), so a key read in an earlier stay wins its place back from the
    main log's coldest, and a one-time key (a scan) never does.
    """

    name = "s3lfu"
    code = 3
    #: The hand counts the reads it clears into the frequency sketch.
    counts = True

    def at_tail(self, flags, ref, hot, slice_bytes):
        """Small log: promote at PROMOTE_AT reads, else None (admission decides); main log: CLOCK."""
        if flags & F_HOT:
            return (flags, 0) if ref else None
        return (flags | F_HOT, ref) if ref >= self.PROMOTE_AT else None

    def admits(self, candidate: int, victim: int) -> bool:
        """Whether a key counted *candidate* times takes the place of one counted *victim* times."""
        return candidate > victim


class TinyLfu(S3Lfu):
    """W-TinyLFU (Einziger et al., 2017; Caffeine's policy) in a window log and a main log.

    New keys enter the window (the small log, 2 % of a slice).  At its
    tail a read entry moves to the main log; an unread one is a candidate
    and enters the main log only when the frequency sketch counts it more
    often than the main log's next victim (a tie keeps the victim), else
    it is evicted and its key remembered in the ghost set.  The main log
    is CLOCK.  Unlike ``s3lfu``, the sketch counts misses as they are
    written as well as the reads the hands fold in, the victim is the
    entry the main log's hand would evict next (not merely its tail), and
    the ghost sends a key to the main log only within ``ghost_share`` of
    S3-FIFO's window (a key back that soon, not a loop's).  Reads raise the
    reference byte up to 15, so a fold carries how often, not only
    whether (the same lock-free byte store as every policy; only
    ``ref_max`` differs).  The hand's work is ``Logs._tail_windowed``.
    """

    name = "tinylfu"
    code = 4
    ref_max = 15
    #: Twice Caffeine's 1 % window (measured in bench_policy.py: 1 % lost 2.4 points on fresh
    #: keys, 10 % lost 4 on the loop).
    small_share = 0.02
    windowed = True
    #: The ghost's window as a share of S3-FIFO's (the main log's entry count).
    ghost_share = 0.05


class Adaptive(TinyLfu):
    """``tinylfu`` whose admission level miniature simulations choose (``shadow.py``).

    The same window log, main log, sketch and hands as ``tinylfu``; the
    group record's level byte (``GroupRecord.level_at``) says how a window
    candidate is admitted: ``FREQ`` as ``tinylfu``; ``GHOST`` as ``tinylfu``
    but with S3-FIFO's full ghost window; ``ALL`` every candidate enters
    the main log (the slice is one CLOCK).  Each process runs one
    miniature cache per level on a hash-sampled share of the host's
    requests (every process's sample ring) and writes the level whose
    miniature hit most lately.
    """

    name = "adaptive"
    code = 5
    adaptive = True

    def ghost_window_share(self, level: int) -> float:
        """The share of S3-FIFO's ghost window a key set again is heeded within, at *level*."""
        return 1.0 if level == GHOST else self.ghost_share


#: Policies by the name a group is configured with.
POLICIES: dict[str, Policy] = {p.name: p for p in (Lru(), Lru2(), S3Fifo(), S3Lfu(), TinyLfu(),
                                                   Adaptive())}
# The names are a naming rule every cache shares (``geecache.limits``): the
# config validates against it before any arena exists.
assert tuple(POLICIES) == _POLICY_NAMES, "geecache.limits.POLICIES must list the arena's policies"
#: Policies by the code stored in a group record.
BY_CODE: dict[int, Policy] = {p.code: p for p in POLICIES.values()}
