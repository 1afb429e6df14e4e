"""Group records: which groups the arena holds, each with a budget, a policy and a data region.

A record (``layout.GROUP``) is written once, under the CONFIG lock, and
published by its state byte last: a process killed while writing one leaves
it invisible, so CONFIG needs no repair.  Records are never changed or
removed (but for ``adaptive``'s level byte, a hint any process stores alone,
``shadow.py``); each process caches the ones it has read (``GroupTable.get``).
"""

from __future__ import annotations

import copy

from ..errors import ConfigError, UnknownGroupError
from .layout import (
    DATA_USED_AT, F_HOT, F_LIVE, GROUP, GROUP_LEVEL_AT, GROUP_READY, GROUP_SIZE, GSTATE, GSTATE_BANKS, GSTATE_SIZE, MAX_GROUP_NAME,
    U64,
)
from .policy import BY_CODE, POLICIES
from .shadow import Shadows, rings_at, rings_bytes, sample_mask

#: Budgets under n_shards x this use fewer shards, so a slice is never tiny.
_MIN_SLICE = 64 * 1024


class GroupRecord:
    """What a process caches about a configured group (immutable once READY).

    ``data`` is the absolute offset of the group's data region, ``gstate``
    that of its shard-0 log state (shard *s*'s is ``gstate + s *
    GSTATE_SIZE``); ``shards`` are the arena shards its keys hash to.

    A record is also the view of one log per shard that ``log.py`` works
    on (``data``, ``slice``, ``gstate``).  A two-log policy
    (``Policy.small_share``) makes the record the small logs' view and
    ``main`` the main logs' (the same group, its data region's second
    part, gstate bank 1, entries flagged ``F_HOT``); ``logs`` is every view, ``other`` the view a
    view is not (None for one log).
    """

    __slots__ = ("idx", "name", "prefix", "policy", "ref_max", "max_bytes", "gshards", "slice",
                 "region", "data", "gstate", "shards", "main", "other", "logs",
                 "entry_flags", "level_at", "sample_mask", "rings", "shadows", "write_view")

    def __init__(self, idx, name, policy, max_bytes, gshards, slice_, region, data_off, gstate_off,
                 n_shards, level_at=0, mm=None, max_procs=1):
        self.idx = idx
        self.name = name
        self.prefix = name.encode("utf-8") + b"\0"
        self.policy = policy
        self.ref_max = policy.ref_max
        self.max_bytes = max_bytes
        self.gshards = gshards
        self.slice = slice_
        self.region = region
        self.data = data_off + region
        self.gstate = gstate_off + idx * GSTATE_BANKS * n_shards * GSTATE_SIZE
        self.shards = tuple((idx + j) % n_shards for j in range(gshards))
        self.main = self.other = None
        self.logs = (self,)
        #: The flag byte a new entry in this view's logs starts with.
        self.entry_flags = F_LIVE
        #: ``adaptive``: the record's level byte (``layout.GROUP_LEVEL_AT``), the group's
        #: sample rings (one per stat row, after its slices: ``shadow.rings_at``), this
        #: process's miniatures (``shadow.Shadows``) and the hash bits a sampled key has clear.
        #: Every other policy: a mask no hash passes (a hash is never 0), so a hit's sample
        #: test fails.
        self.level_at = level_at
        self.sample_mask = (1 << 64) - 1
        self.rings = 0
        self.shadows = None
        #: What the compiled writer (``geecache._arenawrite``) needs of a one-log group that
        #: samples nothing (``lru``, ``lru2``): (index, hash prefix, shards, data, slice, log
        #: states, new entries' flags, policy code).  None for every other policy: Python
        #: writes those.
        self.write_view = None
        if policy.adaptive:
            self.sample_mask = sample_mask(max_bytes)
            self.rings = rings_at(data_off + region + slice_ * gshards)
            self.shadows = Shadows(max_bytes, policy.small_share, policy.ghost_share, mm,
                                   self.rings, max_procs)
        if policy.small_share:
            small = max(8, int(slice_ * policy.small_share) & ~7)
            main = copy.copy(self)
            main.slice = slice_ - small
            main.data = self.data + small * gshards  # every shard's small log, then the main logs
            main.gstate = self.gstate + n_shards * GSTATE_SIZE
            main.entry_flags = F_LIVE | F_HOT  # every main-log entry is in the main queue
            self.slice = small
            self.main = self.other = main
            main.other = self
            self.logs = main.logs = (self, main)
        if not policy.small_share and not policy.adaptive:
            self.write_view = (idx, self.prefix, gshards, self.data, self.slice, self.gstate,
                               self.entry_flags, policy.code)


class GroupTable:
    """The group records of one arena mapping; ``configure`` holds lock *lock* of *locks*."""

    def __init__(self, mm, locks, lock: int, off: int, max_groups: int, n_shards: int,
                 gstate_off: int, data_off: int, data_bytes: int, max_procs: int) -> None:
        self._mm = mm
        self._max_procs = max_procs
        self._held = locks.held(lock)
        self._off = off
        self._max_groups = max_groups
        self._n_shards = n_shards
        self._gstate_off = gstate_off
        self._data_off = data_off
        self._data_bytes = data_bytes
        #: name -> record, filled as records are read (hot paths look here first).
        self.by_name: dict[str, GroupRecord] = {}

    def configure(self, group: str, max_bytes: int, policy: str) -> None:
        """Publish a record for *group* (see ``Arena.configure_group``)."""
        if policy not in POLICIES:
            raise ConfigError("policy", f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        raw = group.encode("utf-8") if isinstance(group, str) else b""
        if not raw or len(raw) > MAX_GROUP_NAME or b"\0" in raw:
            raise ConfigError("group", f"group name must be 1..{MAX_GROUP_NAME} UTF-8 bytes without NUL")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError("max_bytes", "must be a positive integer")
        mm = self._mm
        with self._held:
            existing = self.find(group)
            if existing is not None:
                if existing.max_bytes != max_bytes or existing.policy is not POLICIES[policy]:
                    raise ConfigError("group", (
                        f"group {group!r} is already configured with max_bytes="
                        f"{existing.max_bytes}, policy={existing.policy.name}"))
                return
            free_idx = self._free_index()
            # A value larger than a slice is not cached.
            gshards = max(1, min(self._n_shards, max_bytes // _MIN_SLICE))
            slice_ = (max_bytes // gshards) & ~7
            used = U64.unpack_from(mm, DATA_USED_AT)[0]
            # adaptive: the sample rings follow the slices (``shadow.rings_at``).
            rings = rings_bytes(self._max_procs) if POLICIES[policy].adaptive else 0
            if used + slice_ * gshards + rings > self._data_bytes:
                raise ConfigError("max_bytes", (
                    f"group {group!r} needs {max_bytes} bytes; the arena has "
                    f"{self._data_bytes - used} of {self._data_bytes} data bytes left"))
            at = self._off + free_idx * GROUP_SIZE
            GROUP.pack_into(mm, at, 0, POLICIES[policy].code, len(raw), gshards, max_bytes,
                            used, slice_, 0, 0, raw)
            for j in range(gshards):
                s = (free_idx + j) % self._n_shards
                for bank in range(GSTATE_BANKS):
                    GSTATE.pack_into(mm, self._gstate_off + ((free_idx * GSTATE_BANKS + bank) * self._n_shards
                                                            + s) * GSTATE_SIZE, 0, 0, 0, 0, 0, 0)
            if rings:  # zero counts: every ring starts empty
                at_rings = self._data_off + used + slice_ * gshards
                mm[at_rings:at_rings + rings] = bytes(rings)
            U64.pack_into(mm, DATA_USED_AT, used + slice_ * gshards + rings)
            mm[at] = GROUP_READY  # published last: a crash before leaves it invisible

    def _free_index(self) -> int:
        for idx in range(self._max_groups):
            if self._mm[self._off + idx * GROUP_SIZE] != GROUP_READY:
                return idx
        raise ConfigError("group", f"the arena holds at most {self._max_groups} groups")

    def _read(self, idx: int) -> GroupRecord | None:
        state, code, nlen, gshards, max_bytes, region, slice_, _a, _b, raw = \
            GROUP.unpack_from(self._mm, self._off + idx * GROUP_SIZE)
        if state != GROUP_READY:
            return None
        return GroupRecord(idx, raw[:nlen].decode("utf-8"), BY_CODE[code], max_bytes, gshards,
                           slice_, region, self._data_off, self._gstate_off, self._n_shards,
                           self._off + idx * GROUP_SIZE + GROUP_LEVEL_AT, self._mm, self._max_procs)

    def all(self) -> list[GroupRecord]:
        """Every published record, read from the segment now."""
        return [g for g in map(self._read, range(self._max_groups)) if g is not None]

    def find(self, name: str) -> GroupRecord | None:
        """The record of *name* read from the segment (and cached), or None."""
        for g in self.all():
            if g.name == name:
                # A record never changes: keep the one cached first, whose per-process state
                # (``adaptive``'s miniatures, which a compiled reader may append to) lives on.
                return self.by_name.setdefault(name, g)
        return None

    def get(self, name: str) -> GroupRecord:
        """The record of *name*, cached after the first read; UnknownGroupError if none."""
        g = self.by_name.get(name)
        if g is None:
            g = self.find(name)
            if g is None:
                raise UnknownGroupError(f"group {name!r} is not configured in the arena")
        return g
