"""The shared-memory arena: one segment, N processes, one byte cache.

Reads take no lock: a slot is a seqlock (its version is odd while a writer
changes it), so a reader copies the entry, rechecks the version and treats
any change as a miss (a miss is always safe; the source is the truth).
Writes take the lock of one shard (a robust pthread mutex, see ``lock.py``).
If the holder of a shard lock dies, the next holder empties that shard: every
slot is cleared and every log of the shard reset, which is correct whatever
instruction the dead writer stopped at.  Layout: ``layout.py``.

Eviction is CLOCK expressed as FIFO-with-reinsertion over each (group,
shard) log: a get sets the slot's reference byte (a plain byte store, no
lock); when a write needs room, the hand at the log's tail either drops the
entry or copies it to the head with the bit cleared.

- ``lru``: referenced -> second chance; unreferenced -> evicted.
- ``lru2`` (LCache's two lists, as two CLOCK states): a new entry is *cold*;
  a cold entry referenced since the hand last passed is promoted to *hot*
  (the second list), an unreferenced cold one is evicted; a hot entry keeps
  its place while referenced and is demoted to cold when not.  Cold entries
  are therefore evicted first, and a one-time scan cannot push hot entries
  out in one sweep.
- An expired entry gets no second chance under either policy.
"""

from __future__ import annotations

import os
import time
import weakref

from xxhash import xxh3_64_intdigest

from ..errors import ArenaError, ConfigError, UnknownGroupError
from ..limits import DEFAULT_ITEM_LIMIT, check_key, check_value
from ..stats import STAT_FIELDS
from .lock import Locks, trylock as _trylock, unlock as _unlock
from . import segment
from .flight import Flight
from .layout import (
    CONFIG, DATA_USED_AT, ENTRY, ENTRY_FLAGS_AT, ENTRY_SIZE, F_HOT, F_LIVE, F_WRAP,
    GROUP, GROUP_READY, GROUP_SIZE, GSTATE, GSTATE_SIZE, HEADER, LAYOUT_VERSION,
    LOCK_SIZE, MAGIC, MAX_GROUP_NAME, MAX_LOAD, POLICIES, POLICY_NAMES,
    SHARD_COUNT_AT, SLOT, SLOT_OFF_AT, SLOT_SIZE, SLOT_VERSION_AT, FLIGHT, RING, STATS,
    HOT_SHARE, U32, U64, WRAP_MARK, Geometry, entry_size,
)
from .ring import Ring
from .stats import StatRows

_M32 = 0xFFFFFFFF
_MIN_SLICE = 64 * 1024
_slot_unpack = SLOT.unpack_from
_entry_unpack = ENTRY.unpack_from
_entry_pack = ENTRY.pack
_u32_unpack = U32.unpack_from
_u32_pack = U32.pack_into
_u64_pack = U64.pack_into

#: Arenas of this process, reset in a forked child (their per-process state).
_live: "weakref.WeakSet[Arena]" = weakref.WeakSet()


def _after_fork() -> None:
    for arena in list(_live):
        arena._forked()


os.register_at_fork(after_in_child=_after_fork)


def _key_bytes(key) -> bytes:
    """check_key's result, with the common valid case inlined (hot path)."""
    if key.__class__ is str and 0 < len(key) <= 62:  # <= 62 chars is <= 248 UTF-8 bytes
        try:
            return key.encode()
        except UnicodeEncodeError:
            pass
    return check_key(key)


class _Group:
    """What a process caches about a configured group (immutable once READY)."""

    __slots__ = ("idx", "name", "prefix", "policy", "max_bytes", "gshards", "slice", "region")

    def __init__(self, idx, name, policy, max_bytes, gshards, slice_, region):
        self.idx = idx
        self.name = name
        self.prefix = name.encode("utf-8") + b"\0"
        self.policy = policy
        self.max_bytes = max_bytes
        self.gshards = gshards
        self.slice = slice_
        self.region = region


class Arena:
    """A byte cache in one shared-memory segment, shared by the host's processes.

    Implements ``geecache.cache.Cache`` and ``geecache.cache.HostFlight``.
    Create it once in the supervisor (``Arena.create``); forked children use
    the inherited object; unrelated processes ``Arena.attach(name)``.
    """

    # ------------------------------------------------------------ lifecycle

    def __init__(self, name: str, mm, creator: bool, clock=time.time) -> None:
        self._name = name
        self._mm = mm
        self._buf = memoryview(mm)
        self._clock = clock
        self._creator_pid = os.getpid() if creator else 0
        magic, version, _hs, size, *rest = HEADER.unpack_from(mm, 0)
        if magic != MAGIC:
            self._close_map()
            raise ArenaError(f"shared memory {name!r} is not a geecache arena")
        if version != LAYOUT_VERSION:
            self._close_map()
            raise ArenaError(f"arena {name!r} has layout {version}; this code reads {LAYOUT_VERSION}")
        (self._n_shards, self._sps, self._max_groups, self._max_procs, self._item_limit,
         flight_slots, ring_bytes, n_locks, locks_off, self._groups_off, self._gstate_off,
         self._slots_off, self._refs_off, self._data_off, self._data_bytes, stats_off,
         ring_off, flight_off, _used, _pid) = rest
        self._locks = Locks(mm, locks_off, n_locks, self._repair)
        self._locks_off = locks_off
        self._groups: dict[str, _Group] = {}
        extra = self._n_shards  # the locks after the shard locks
        self._stats = StatRows(mm, self._locks, extra + STATS, stats_off, self._max_procs, self._max_groups)
        self._ring = Ring(mm, self._locks, extra + RING, ring_off, ring_bytes)
        self._flight = Flight(mm, self._locks, extra + FLIGHT, flight_off, flight_slots)
        self._closed = False
        _live.add(self)

    @classmethod
    def create(cls, size_bytes: int, name: str | None = None, *, shards: int = 8,
               max_groups: int = 32, max_procs: int = 64,
               item_limit: int = DEFAULT_ITEM_LIMIT, flight_slots: int = 512,
               ring_bytes: int = 64 * 1024, avg_entry_bytes: int = 144,
               clock=time.time) -> "Arena":
        """Create a new segment of *size_bytes* (a unique ``geecache-`` name if None).

        *avg_entry_bytes* (entry header included) balances the slot table
        against the data area; *clock* is injectable so tests can move time.
        """
        if shards < 1 or max_groups < 1 or max_procs < 1 or flight_slots < 1:
            raise ConfigError("arena", "shards, max_groups, max_procs and flight_slots must be >= 1")
        try:
            geo = Geometry(size_bytes, shards, max_groups, max_procs, item_limit,
                           flight_slots, ring_bytes, avg_entry_bytes, len(STAT_FIELDS))
        except ValueError as exc:
            raise ConfigError("size_bytes", str(exc)) from None
        chosen, mm = segment.create(size_bytes, name)
        try:
            Locks.init_region(mm, geo.locks_off, geo.n_locks)
            mm[0:HEADER.size] = geo.pack_header(os.getpid())
            return cls(chosen, mm, True, clock)
        except BaseException:
            mm.close()
            segment.unlink(chosen)
            raise

    @classmethod
    def attach(cls, name: str, clock=time.time) -> "Arena":
        """Map the arena another process created; never registers with the resource tracker."""
        try:
            mm = segment.attach(name)
        except FileNotFoundError:
            raise ArenaError(f"no shared-memory arena named {name!r}") from None
        return cls(name, mm, False, clock)

    @property
    def name(self) -> str:
        """The segment name to pass to ``Arena.attach``."""
        return self._name

    @property
    def item_limit(self) -> int:
        """The largest value ``set`` accepts, in bytes."""
        return self._item_limit

    def close(self) -> None:
        """Unmap the segment in this process (the segment stays for the others)."""
        if not self._closed:
            self._closed = True
            _live.discard(self)
            self._close_map()

    def _close_map(self) -> None:
        self._buf.release() if hasattr(self, "_buf") else None
        self._mm.close()

    def unlink(self) -> None:
        """Remove the segment name; only the creating process may (forked children may not)."""
        if self._creator_pid != os.getpid():
            raise ArenaError("only the process that created the arena may unlink it")
        segment.unlink(self._name)

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        creator = self._creator_pid == os.getpid()
        self.close()
        if creator:
            segment.unlink(self._name)

    def _forked(self) -> None:
        # A child has a new pid: it must not write the parent's stat row.
        self._creator_pid = 0
        self._stats.forked()

    def register_process(self) -> None:
        """Claim this process's stat row now (otherwise done on first use)."""
        self._stats.claim()

    # ------------------------------------------------------------ locking

    def _repair(self, i: int) -> None:
        """The previous holder of lock *i* died inside its critical section (``Locks`` calls this)."""
        if i < self._n_shards:
            self._wipe_shard(i)
        elif i - self._n_shards == FLIGHT:
            self._flight.repair()
        # CONFIG: a group record is published by its state byte last, so a
        # half-written one is invisible; STATS/RING: single stores, nothing to fix.

    def _wipe_shard(self, s: int) -> None:
        """Empty shard *s*: clear its slots (seqlock order) and reset its logs."""
        mm = self._mm
        sps = self._sps
        base = self._slots_off + s * sps * SLOT_SIZE
        for i in range(sps):
            p = base + i * SLOT_SIZE
            h, ver, _off = _slot_unpack(mm, p)
            if h or ver & 1:
                v = (ver | 1) & _M32  # odd: readers back off
                _u32_pack(mm, p + SLOT_VERSION_AT, v)
                _u64_pack(mm, p, 0)
                _u32_pack(mm, p + SLOT_VERSION_AT, (v + 1) & _M32)
        _u32_pack(mm, self._locks_off + s * LOCK_SIZE + SHARD_COUNT_AT, 0)
        for g in self._all_groups():
            j = (s - g.idx) % self._n_shards
            if j < g.gshards:
                GSTATE.pack_into(mm, self._gstate_at(g, s), 0, 0, 0, 0, 0, 0)

    def repairs(self) -> int:
        """How many times a lock's guarded state was repaired after its holder died."""
        return self._locks.repairs()

    # ------------------------------------------------------------ groups

    def configure_group(self, group: str, max_bytes: int, policy: str = "lru") -> None:
        """Declare *group* with a byte budget carved from the data area.

        Idempotent for the same budget and policy (every worker calls it);
        a different budget or policy for an existing group is a ConfigError,
        as is a budget the data area cannot hold.
        """
        if policy not in POLICIES:
            raise ConfigError("policy", f"unknown policy {policy!r}; known: lru, lru2")
        raw = group.encode("utf-8") if isinstance(group, str) else b""
        if not raw or len(raw) > MAX_GROUP_NAME or b"\0" in raw:
            raise ConfigError("group", f"group name must be 1..{MAX_GROUP_NAME} UTF-8 bytes without NUL")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError("max_bytes", "must be a positive integer")
        with self._locks.held(self._n_shards + CONFIG):
            existing = self._find_group(group)
            if existing is not None:
                if existing.max_bytes != max_bytes or existing.policy != POLICIES[policy]:
                    raise ConfigError("group", (
                        f"group {group!r} is already configured with max_bytes="
                        f"{existing.max_bytes}, policy={POLICY_NAMES[existing.policy]}"))
                return
            free_idx = self._free_group_index()
            # Budgets under n_shards x 64 KiB use fewer shards, so a slice
            # is never tiny; a value larger than a slice is not cached.
            gshards = max(1, min(self._n_shards, max_bytes // _MIN_SLICE))
            slice_ = (max_bytes // gshards) & ~7
            used = U64.unpack_from(self._mm, DATA_USED_AT)[0]
            if used + slice_ * gshards > self._data_bytes:
                raise ConfigError("max_bytes", (
                    f"group {group!r} needs {max_bytes} bytes; the arena has "
                    f"{self._data_bytes - used} of {self._data_bytes} data bytes left"))
            at = self._groups_off + free_idx * GROUP_SIZE
            GROUP.pack_into(self._mm, at, 0, POLICIES[policy], len(raw), gshards, max_bytes,
                            used, slice_, 0, 0, raw)
            for j in range(gshards):
                s = (free_idx + j) % self._n_shards
                GSTATE.pack_into(self._mm, self._gstate_off + (free_idx * self._n_shards + s) * GSTATE_SIZE,
                                 0, 0, 0, 0, 0, 0)
            _u64_pack(self._mm, DATA_USED_AT, used + slice_ * gshards)
            self._mm[at] = GROUP_READY  # published last: a crash before leaves it invisible

    def groups(self) -> list[str]:
        """Names of the configured groups."""
        return [g.name for g in self._all_groups()]

    def _free_group_index(self) -> int:
        for idx in range(self._max_groups):
            if self._mm[self._groups_off + idx * GROUP_SIZE] != GROUP_READY:
                return idx
        raise ConfigError("group", f"the arena holds at most {self._max_groups} groups")

    def _read_group(self, idx: int) -> _Group | None:
        state, policy, nlen, gshards, max_bytes, region, slice_, _a, _b, raw = \
            GROUP.unpack_from(self._mm, self._groups_off + idx * GROUP_SIZE)
        if state != GROUP_READY:
            return None
        return _Group(idx, raw[:nlen].decode("utf-8"), policy, max_bytes, gshards, slice_, region)

    def _all_groups(self) -> list[_Group]:
        return [g for g in map(self._read_group, range(self._max_groups)) if g is not None]

    def _find_group(self, name: str) -> _Group | None:
        for g in self._all_groups():
            if g.name == name:
                self._groups[name] = g
                return g
        return None

    def _group(self, name: str) -> _Group:
        g = self._groups.get(name)
        if g is None:
            g = self._find_group(name)
            if g is None:
                raise UnknownGroupError(f"group {name!r} is not configured in the arena")
        return g

    def _gstate_at(self, g: _Group, s: int) -> int:
        return self._gstate_off + (g.idx * self._n_shards + s) * GSTATE_SIZE

    def _locate(self, g: _Group, kb: bytes) -> tuple[int, int, int]:
        """(hash, shard, home slot index) of key bytes *kb* in group *g*."""
        h = xxh3_64_intdigest(g.prefix + kb) or 1  # 0 marks an empty slot
        s = (g.idx + (h >> 40) % g.gshards) % self._n_shards
        return h, s, h % self._sps

    # ------------------------------------------------------------ reads

    def get(self, group: str, key: str) -> bytes | None:
        """The cached value, or None on a miss, an expired entry, or a slot being written."""
        e = self.get_entry(group, key)
        return None if e is None else e[0]

    def get_entry(self, group: str, key: str) -> tuple[bytes, int, float] | None:
        """(value, codec id, expire_at or 0) for *key*, or None.  Takes no lock."""
        g = self._groups.get(group) or self._group(group)
        kb = _key_bytes(key)
        h = xxh3_64_intdigest(g.prefix + kb) or 1
        spsz = self._sps
        s = (g.idx + (h >> 40) % g.gshards) % self._n_shards
        base = self._slots_off + s * spsz * SLOT_SIZE
        i = h % spsz
        mm = self._mm
        klen_want = len(kb)
        try:
            for _ in range(spsz):
                p = base + i * SLOT_SIZE
                sh, ver, off = _slot_unpack(mm, p)
                if sh == h:
                    if ver & 1:
                        return None
                    q = self._data_off + off * 8
                    klen, codec, _f, vlen, _slot, gidx, exp = _entry_unpack(mm, q)
                    if klen == klen_want and gidx == g.idx and vlen <= self._item_limit:
                        q += ENTRY_SIZE
                        kv = mm[q:q + klen + vlen]
                        if _u32_unpack(mm, p + SLOT_VERSION_AT)[0] != ver:
                            return None
                        if kv[:klen] == kb:
                            break
                elif not sh:
                    return None
                i += 1
                if i == spsz:
                    i = 0
            else:
                return None
        except (ValueError, IndexError, OverflowError):
            # A torn slot pointed outside the segment: it was being rewritten.
            return None
        if exp and exp <= self._clock():
            self._expire_slot(g, s, i, ver)  # outside the try: it takes the lock
            return None
        r = self._refs_off + s * spsz + i
        if not mm[r]:
            mm[r] = 1
        return kv[klen:], codec, exp

    # ------------------------------------------------------------ writes

    def set(self, group: str, key: str, value: bytes, ttl: float = 0, codec: int = 0) -> None:
        """Store *value* under *key* with an optional *ttl* in seconds and a codec id.

        Evicts by the group's policy to stay in budget.  A value larger than
        the item limit raises ValueTooLargeError; one that fits the limit but
        not the group's shard slice is not cached (and any old copy dropped).
        """
        g = self._groups.get(group) or self._group(group)
        kb = _key_bytes(key)
        if value.__class__ is not bytes or len(value) > self._item_limit:
            value = check_value(value, self._item_limit)
        if codec.__class__ is not int or not 0 <= codec <= 255:
            raise ConfigError("codec", f"codec id must be an int 0..255, got {codec!r}")
        exp = self._clock() + ttl if ttl and ttl > 0 else 0.0
        h = xxh3_64_intdigest(g.prefix + kb) or 1
        s = (g.idx + (h >> 40) % g.gshards) % self._n_shards
        esize = (ENTRY_SIZE + 7 + len(kb) + len(value)) & ~7
        gs_at = self._gstate_off + (g.idx * self._n_shards + s) * GSTATE_SIZE
        # The shard lock inlined (not ``held``): set is a hot path.
        addr = self._locks.addrs[s]
        rc = _trylock(addr)
        if rc:
            self._locks.acquire(s, rc)
        try:
            st = list(GSTATE.unpack_from(self._mm, gs_at))
            home = h % self._sps
            i = self._find(s, h, kb, g.idx, home)
            if esize > g.slice or (i < 0 and not self._make_slot_room(g, s, st)):
                pos = -1
            else:
                # Fast path: room at the head without evicting, so no slot
                # moves and an existing key's slot is simply repointed.
                pos = self._fit(g, s, st, esize)
                if pos < 0:
                    if i >= 0:
                        self._remove(g, s, i, st)
                        i = -1
                    pos = self._alloc(g, s, st, esize)
            if pos < 0 and i >= 0:
                self._remove(g, s, i, st)  # never leave the old value behind a failed set
            elif pos >= 0:
                self._insert(g, s, st, h, home, i, pos, esize, kb, value, codec, exp)
            GSTATE.pack_into(self._mm, gs_at, *st)
        finally:
            _unlock(addr)

    def delete(self, group: str, key: str) -> bool:
        """Drop *key*; True when it was present (expired or not)."""
        g = self._groups.get(group) or self._group(group)
        kb = check_key(key)
        h, s, home = self._locate(g, kb)
        with self._locks.held(s):
            i = self._find(s, h, kb, g.idx, home)
            if i < 0:
                return False
            st = list(GSTATE.unpack_from(self._mm, self._gstate_at(g, s)))
            self._remove(g, s, i, st)
            GSTATE.pack_into(self._mm, self._gstate_at(g, s), *st)
            return True

    def clear(self, group: str) -> None:
        """Drop every entry of *group*, one shard at a time."""
        g = self._group(group)
        for j in range(g.gshards):
            s = (g.idx + j) % self._n_shards
            with self._locks.held(s):
                st = list(GSTATE.unpack_from(self._mm, self._gstate_at(g, s)))
                while st[2]:
                    self._reclaim_tail(g, s, st, "clear")
                GSTATE.pack_into(self._mm, self._gstate_at(g, s), 0, 0, 0, 0, 0, 0)

    def _expire_slot(self, g: _Group, s: int, i: int, ver: int) -> None:
        """A reader found slot *i* expired: drop it if nobody changed it since."""
        with self._locks.held(s):
            p = self._slots_off + (s * self._sps + i) * SLOT_SIZE
            if _u32_unpack(self._mm, p + SLOT_VERSION_AT)[0] != ver:
                return
            st = list(GSTATE.unpack_from(self._mm, self._gstate_at(g, s)))
            self._remove(g, s, i, st)
            GSTATE.pack_into(self._mm, self._gstate_at(g, s), *st)
            self._stats.add(g.idx, "expirations")

    # ---- slot table (callers hold the shard lock)

    def _find(self, s: int, h: int, kb: bytes, gidx: int, i: int) -> int:
        mm = self._mm
        spsz = self._sps
        base = self._slots_off + s * spsz * SLOT_SIZE
        for _ in range(spsz):
            sh, _v, off = _slot_unpack(mm, base + i * SLOT_SIZE)
            if not sh:
                return -1
            if sh == h:
                q = self._data_off + off * 8
                klen, _c, _f, _vl, _sl, eg, _e = _entry_unpack(mm, q)
                if eg == gidx and mm[q + ENTRY_SIZE:q + ENTRY_SIZE + klen] == kb:
                    return i
            i = i + 1 if i + 1 < spsz else 0
        return -1

    def _slot_write(self, p: int, h: int, off: int) -> None:
        """Rewrite the slot at byte *p* in seqlock order (odd, fields, even)."""
        mm = self._mm
        v = _u32_unpack(mm, p + SLOT_VERSION_AT)[0]
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 1) & _M32)
        _u64_pack(mm, p, h)
        _u32_pack(mm, p + SLOT_OFF_AT, off)
        _u32_pack(mm, p + SLOT_VERSION_AT, (v + 2) & _M32)

    def _shard_count_add(self, s: int, n: int) -> int:
        at = self._locks_off + s * LOCK_SIZE + SHARD_COUNT_AT
        c = _u32_unpack(self._mm, at)[0] + n
        _u32_pack(self._mm, at, c)
        return c

    def _make_slot_room(self, g: _Group, s: int, st: list) -> bool:
        """Keep the shard's slot load under MAX_LOAD by evicting from *g*'s log."""
        limit = int(self._sps * MAX_LOAD)
        while self._shard_count_add(s, 0) >= limit:
            if not st[2]:
                return False
            self._reclaim_tail(g, s, st, "evict")
        return True

    def _insert(self, g, s, st, h, home, i, pos, esize, kb, value, codec, exp) -> None:
        """Write the entry at *pos* and point a slot at it: slot *i* if >= 0, else a free one."""
        mm = self._mm
        spsz = self._sps
        base = self._slots_off + s * spsz * SLOT_SIZE
        new = i < 0
        if new:
            i = home
            while _slot_unpack(mm, base + i * SLOT_SIZE)[0]:
                i = i + 1 if i + 1 < spsz else 0
        q = self._data_off + g.region + (s - g.idx) % self._n_shards * g.slice + pos
        # One copy of header, key and value (measured: cheaper than three).
        mm[q:q + ENTRY_SIZE + len(kb) + len(value)] = \
            _entry_pack(len(kb), codec, F_LIVE, len(value), i, g.idx, exp) + kb + value
        q += ENTRY_SIZE
        if new:
            self._shard_count_add(s, 1)
        else:
            self._kill(s, i, st)
        mm[self._refs_off + s * spsz + i] = 0
        p = base + i * SLOT_SIZE + SLOT_VERSION_AT
        v = _u32_unpack(mm, p)[0]
        _u32_pack(mm, p, (v + 1) & _M32)  # seqlock: odd, fields, even (as _slot_write)
        _u64_pack(mm, p - SLOT_VERSION_AT, h)
        _u32_pack(mm, p + 4, (q - ENTRY_SIZE - self._data_off) >> 3)
        _u32_pack(mm, p, (v + 2) & _M32)
        st[3] += esize
        st[4] += 1

    def _kill(self, s: int, i: int, st: list) -> None:
        """Mark the entry slot *i* points at dead (its bytes return when the hand passes)."""
        mm = self._mm
        off = _u32_unpack(mm, self._slots_off + (s * self._sps + i) * SLOT_SIZE + SLOT_OFF_AT)[0]
        q = self._data_off + off * 8
        klen, _c, flags, vlen, _sl, _g, _e = _entry_unpack(mm, q)
        mm[q + ENTRY_FLAGS_AT] = flags & ~(F_LIVE | F_HOT)
        st[3] -= entry_size(klen, vlen)
        st[4] -= 1
        if flags & F_HOT:
            st[5] -= entry_size(klen, vlen)

    def _remove(self, g: _Group, s: int, i: int, st: list) -> None:
        """Drop the entry in slot *i*: mark its log bytes dead, then delete the slot."""
        self._kill(s, i, st)
        self._delete_slot(s, i)

    def _delete_slot(self, s: int, i: int) -> None:
        """Backward-shift deletion: later members of the probe run move up.

        Each moved slot is written before its old place is cleared, so a
        concurrent reader sees the entry in one place or the other, or
        misses; the back pointer in the moved entry's header follows it.
        """
        mm = self._mm
        spsz = self._sps
        base = self._slots_off + s * spsz * SLOT_SIZE
        refs = self._refs_off + s * spsz
        j = i
        while True:
            j = j + 1 if j + 1 < spsz else 0
            hj, _v, offj = _slot_unpack(mm, base + j * SLOT_SIZE)
            if not hj:
                break
            k = hj % spsz
            # Stay when the home k lies cyclically in (i, j].
            if (i < j and i < k <= j) or (i > j and (k > i or k <= j)):
                continue
            self._slot_write(base + i * SLOT_SIZE, hj, offj)
            mm[refs + i] = mm[refs + j]
            _u32_pack(mm, self._data_off + offj * 8 + 8, i)  # ENTRY.slot
            i = j
        self._slot_write(base + i * SLOT_SIZE, 0, 0)
        self._shard_count_add(s, -1)

    # ---- the log (callers hold the shard lock; st = [head, tail, used, live, entries, hot])

    def _alloc(self, g: _Group, s: int, st: list, esize: int) -> int:
        """Offset in the slice for *esize* bytes, evicting at the tail as needed; -1 if impossible."""
        budget = 3 * st[4] + 8  # a full CLOCK cycle or three, then force
        while True:
            pos = self._fit(g, s, st, esize)
            if pos >= 0:
                return pos
            if not st[2]:
                return -1
            budget -= 1
            self._reclaim_tail(g, s, st, "evict" if budget > 0 else "force")

    def _fit(self, g: _Group, s: int, st: list, esize: int) -> int:
        """Reserve *esize* bytes at the head without evicting; -1 when they do not fit."""
        head, tail, used = st[0], st[1], st[2]
        L = g.slice
        if not used:
            head = tail = st[0] = st[1] = 0
        if head > tail or not used:
            if esize <= L - head:
                pos = head
            elif esize <= tail:
                # Skip the slice's end: the hand treats the marker as used bytes.
                q = self._data_off + g.region + (s - g.idx) % self._n_shards * g.slice + head
                WRAP_MARK.pack_into(self._mm, q, 0, 0, F_WRAP)  # may be only 8 bytes left
                st[2] += L - head
                pos = 0
            else:
                return -1
        elif head < tail and esize <= tail - head:
            pos = head
        else:
            return -1
        st[0] = (pos + esize) % L
        st[2] += esize
        return pos

    def _reclaim_tail(self, g: _Group, s: int, st: list, mode: str) -> None:
        """Advance the hand over the record at the tail.

        *mode*: ``evict`` applies the policy (second chances), ``force``
        drops a live entry whatever its bits, ``clear`` drops without
        counting an eviction.
        """
        mm = self._mm
        L = g.slice
        slice_at = self._data_off + g.region + (s - g.idx) % self._n_shards * L
        t = st[1]
        q = slice_at + t
        klen, codec, flags, vlen, i, _g, exp = _entry_unpack(mm, q)
        if flags & F_WRAP:
            st[2] -= L - t
            st[1] = 0
            return
        esize = entry_size(klen, vlen)
        st[1] = (t + esize) % L
        st[2] -= esize
        if not flags & F_LIVE:
            return
        refs = self._refs_off + s * self._sps
        if mode == "evict":
            if exp and exp <= self._clock():
                self._drop(g, s, i, st, esize, flags, "expirations")
                return
            ref = mm[refs + i]
            if g.policy == 0:
                keep = ref
                new_flags = flags
            elif flags & F_HOT:
                # The second list only shrinks when over its share: a scan of
                # cold entries never pushes hot ones out.
                keep = True
                new_flags = flags if ref or st[5] <= g.slice * HOT_SHARE else flags & ~F_HOT
            else:
                keep = ref
                new_flags = flags | F_HOT
            if keep:
                pos = self._fit(g, s, st, esize)
                if pos >= 0:
                    self._move(g, s, i, q, slice_at + pos, esize, new_flags, st, flags)
                    mm[refs + i] = 0
                    return
        self._drop(g, s, i, st, esize, flags, None if mode == "clear" else "evictions")

    def _drop(self, g, s, i, st, esize, flags, counter) -> None:
        st[3] -= esize
        st[4] -= 1
        if flags & F_HOT:
            st[5] -= esize
        self._delete_slot(s, i)
        if counter:
            self._stats.add(g.idx, counter)

    def _move(self, g, s, i, src, dst, esize, new_flags, st, old_flags) -> None:
        """Second chance: copy the entry to the head and repoint its slot."""
        mm = self._mm
        p = self._slots_off + (s * self._sps + i) * SLOT_SIZE
        h, ver, _off = _slot_unpack(mm, p)
        _u32_pack(mm, p + SLOT_VERSION_AT, (ver + 1) & _M32)
        mm[dst:dst + esize] = mm[src:src + esize]  # bytes copy: regions may overlap
        mm[dst + ENTRY_FLAGS_AT] = new_flags
        _u32_pack(mm, p + SLOT_OFF_AT, (dst - self._data_off) >> 3)
        _u32_pack(mm, p + SLOT_VERSION_AT, (ver + 2) & _M32)
        if (new_flags ^ old_flags) & F_HOT:
            st[5] += esize if new_flags & F_HOT else -esize

    # ------------------------------------------------------------ accounting

    def usage(self, group: str) -> tuple[int, int]:
        """(bytes, entries) *group* holds; bytes count entry headers and padding."""
        g = self._group(group)
        nbytes = entries = 0
        for j in range(g.gshards):
            st = GSTATE.unpack_from(self._mm, self._gstate_at(g, (g.idx + j) % self._n_shards))
            nbytes += st[3]
            entries += st[4]
        return nbytes, entries

    def audit(self, group: str) -> tuple[int, int]:
        """(bytes, entries) of *group* by a full slot-table scan under each shard lock.

        For tests and debugging: it must always equal ``usage(group)``.
        """
        g = self._group(group)
        nbytes = entries = 0
        for j in range(g.gshards):
            s = (g.idx + j) % self._n_shards
            with self._locks.held(s):
                base = self._slots_off + s * self._sps * SLOT_SIZE
                for i in range(self._sps):
                    h, _v, off = _slot_unpack(self._mm, base + i * SLOT_SIZE)
                    if h:
                        klen, _c, flags, vlen, back, gidx, _e = _entry_unpack(
                            self._mm, self._data_off + off * 8)
                        if gidx == g.idx:
                            if back != i or not flags & F_LIVE:
                                raise ArenaError(f"slot {i} of shard {s} is inconsistent")
                            nbytes += entry_size(klen, vlen)
                            entries += 1
        return nbytes, entries

    def stats_sink(self, group: str):
        """This process's counter row for *group* (claimed on first use)."""
        return self._stats.sink(self._group(group).idx)

    def stats(self, group: str) -> dict[str, int]:
        """Counters of *group* summed over every process that ever had a row."""
        return self._stats.totals(self._group(group).idx)

    # ------------------------------------------------------------ ring

    def write_ring(self, members: list[str]) -> int:
        """Publish the member list (one writer: the registrar); returns the new version."""
        return self._ring.write(members)

    def ring_version(self) -> int:
        """The member list's version (0 = never written); one unpack."""
        return self._ring.version()

    def read_ring(self) -> tuple[int, list[str]]:
        """(version, members), consistent with each other."""
        return self._ring.read()

    # ------------------------------------------------------------ host-wide flight

    def try_begin(self, group: str, key: str) -> bool:
        """True when this process became the loader of *key* and must call ``end``."""
        return self._flight.try_begin(self._flight_hash(group, key))

    def end(self, group: str, key: str) -> None:
        """This process finished loading *key* (stored or failed)."""
        self._flight.end(self._flight_hash(group, key))

    def loading(self, group: str, key: str) -> bool:
        """True while a live process is loading *key*."""
        return self._flight.loading(self._flight_hash(group, key))

    def wait_loaded(self, group: str, key: str, timeout: float) -> bytes | None:
        """Block until nobody loads *key* or *timeout* passes; then the cached value or None.

        For synchronous users and tests; sleeps with a bounded backoff (the
        Group waits with asyncio sleeps on ``loading`` instead).
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.loading(group, key):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return self.get(group, key)

    def _flight_hash(self, group: str, key: str) -> int:
        return xxh3_64_intdigest(self._group(group).prefix + check_key(key)) or 1
