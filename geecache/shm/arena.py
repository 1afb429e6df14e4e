"""The shared-memory arena: one segment, N processes, one byte cache.

This module is the arena's lifecycle (create, attach, close, unlink, fork)
and its entry points; each job behind them has its own module:

=============  ==============================================================
``layout``     the byte layout (the one place that documents it)
``segment``    create / attach / unlink the POSIX shared-memory segment
``lock``       robust pthread mutexes; ``Locks`` and ``held(i)`` over the lock region
``groups``     group records: configure, find, the per-process cache
``slots``      the slot table: probe, insert, backward-shift delete, seqlock order
``log``        the circular log per (group, shard): fit, alloc, the hand, moves
``policy``     eviction policies (``lru``, ``lru2``, ``s3fifo``, ``s3lfu``, ``tinylfu``, ``adaptive``): one class each
``ghost``      S3-FIFO's ghost set: recently evicted keys, per shard
``shadow``     ``adaptive``'s miniature simulations, per process: the admission level they choose
``stats``      per-process counter rows
``ring``       the member list (double-buffered)
``flight``     the host-wide in-flight table
``scan``       the hottest entries of a group, by the policy's state (a warm-up's answer)
=============  ==============================================================

Reads take no lock: a slot is a seqlock (its version is odd while a writer
changes it), so a reader copies the entry, rechecks the version and treats
any change as a miss (a miss is always safe; the source is the truth); the
read path is inlined here for speed.  Writes take the lock of one shard.
If the holder of a shard lock dies, the next holder empties that shard: every
slot is cleared and every log of the shard reset, which is correct whatever
instruction the dead writer stopped at (``_repair``).
"""

from __future__ import annotations

import os
import time
import weakref

from xxhash import xxh3_64_intdigest

from ..errors import ArenaError, ConfigError, LockTimeoutError, TooManyProcessesError
from ..limits import DEFAULT_ITEM_LIMIT, check_key, check_value
from ..stats import STAT_FIELDS
from . import segment
from .flight import Flight
from .ghost import Ghost
from .groups import GroupTable
from .layout import (
    CONFIG, ENTRY, ENTRY_SIZE, FLIGHT, GSTATE, GSTATE_SIZE, HEADER, LAYOUT_VERSION, MAGIC,
    RING, ROWHEAD, SLOT, SLOT_SIZE, STATS, Geometry, sketch_width,
)
from .lock import Locks, trylock as _trylock, unlock as _unlock
from .log import Logs
from .ring import Ring
from .scan import HotScan
from .shadow import BATCH, RING_BLOCK, record
from .sketch import Sketch
from .slots import SlotTable
from .stats import SEQLOCK_CONFLICTS, StatRows

try:
    from .. import _arenawrite
except ImportError:  # not built (no compiler at install time): Python makes every write
    _arenawrite = None  # type: ignore[assignment]
_COUNTED = _arenawrite.COUNTED if _arenawrite is not None else None

#: The environment variable that forces the pure-Python paths (these writes and the data
#: plane's hit path) when set to anything but "" or "0".
PURE_PYTHON_ENV = "GEECACHE_PURE_PYTHON"

_slot_unpack = SLOT.unpack_from
_entry_unpack = ENTRY.unpack_from

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


class Arena:
    """A byte cache in one shared-memory segment, shared by the host's processes.

    Implements ``geecache.cache.Cache`` and ``geecache.cache.HostFlight``.
    Create it once in the supervisor (``Arena.create``); forked children use
    the inherited object; unrelated processes ``Arena.attach(name)``.
    """

    #: Entries carry a codec id, so a group may keep its values compressed (``Group.packs``).
    keeps_codec = True

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
        (self._n_shards, self._sps, max_groups, max_procs, self._item_limit,
         flight_slots, ring_bytes, n_locks, locks_off, groups_off, gstate_off,
         self._slots_off, self._refs_off, self._data_off, self._data_bytes, stats_off,
         ring_off, flight_off, ghost_off, sketch_off, _used, _pid) = rest
        locks = self._locks = Locks(mm, locks_off, n_locks, self._repair)
        extra = self._n_shards  # the locks after the shard locks
        self._stats = StatRows(mm, locks, extra + STATS, stats_off, max_procs, max_groups,
                               self._n_shards, extra + FLIGHT)
        locks.on_wait = self._stats.lock_waited  # contended waits only, in this process's row
        self._ring = Ring(mm, locks, extra + RING, ring_off, ring_bytes)
        self._flight = Flight(mm, locks, extra + FLIGHT, flight_off, flight_slots, self._stats)
        self._table = GroupTable(mm, locks, extra + CONFIG, groups_off, max_groups,
                                 self._n_shards, gstate_off, self._data_off, self._data_bytes,
                                 max_procs)
        self._slots = SlotTable(mm, self._slots_off, self._refs_off, self._data_off, self._sps,
                                locks_off)
        self._logs = Logs(mm, self._slots, self._stats, clock, self._n_shards, self._sps,
                          self._refs_off, Ghost(mm, ghost_off, self._sps, locks_off),
                          Sketch(mm, sketch_off, sketch_width(self._sps), locks_off))
        # Bound methods as attributes: ``set`` calls them without one more
        # attribute lookup each.  Keep the instance under 30 attributes:
        # past that CPython 3.11 stops sharing instance-dict keys and every
        # ``self._x`` load gets slower (measured: 2-3 ns each).
        self._lock_addrs = locks.addrs
        self._groups = self._table.by_name
        self._group = self._table.get
        self._find = self._slots.find
        self._fit = self._logs.fit
        self._insert = self._logs.insert
        #: The compiled common set and delete (``geecache._arenawrite``), or None: Python writes.
        self._writer: _arenawrite.Writer | None = None
        if _arenawrite is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0"):
            self._writer = _arenawrite.Writer(mm, (
                self._slots_off, self._refs_off, self._data_off, locks_off, self._sps,
                self._n_shards, self._logs.slot_limit), clock, clock is time.time)
            self._flight.use_compiled_search(self._writer.find_u64)
        #: Seconds a write waits for a shard lock before giving up with
        #: LockTimeoutError (None: as long as the holder lives).  A worker sets
        #: it: a holder that is alive but stopped (SIGSTOP, a debugger) must not
        #: freeze the event loop of every other worker (invariant 8).
        self.lock_timeout: float | None = None
        self._closed = False
        #: Compiled readers holding this mapping (``hit_layout``): released before it is
        #: unmapped, and in a forked child (their counter cells are the parent's row).
        self._readers: "weakref.WeakSet" = weakref.WeakSet()
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
        self._release_readers()
        if hasattr(self, "_flight"):
            self._flight.use_compiled_search(None)  # it holds a writer's view of the mapping
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.release()  # its view of the mapping must go before the mapping
        if hasattr(self, "_stats"):
            self._stats.release()  # its view of the row must go before the mapping
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
        self._release_readers()
        self._stats.forked()

    def _release_readers(self) -> None:
        for reader in list(getattr(self, "_readers", ())):
            reader.release()

    def register_process(self) -> None:
        """Claim this process's stat row now (otherwise done on first use)."""
        self._stats.claim()

    # ------------------------------------------------------------ locking

    def _repair(self, i: int) -> None:
        """The previous holder of lock *i* died inside its critical section (``Locks`` calls this)."""
        if i < self._n_shards:
            # Empty the shard: slots first (seqlock order), then its logs.
            self._slots.wipe(i)
            for g in self._table.all():
                if i in g.shards:
                    for view in g.logs:
                        self._logs.reset(view, i)
        elif i - self._n_shards == FLIGHT:
            self._flight.repair()
        # CONFIG: a group record is published by its state byte last, so a
        # half-written one is invisible; STATS/RING: single stores, nothing to fix.

    def repairs(self) -> int:
        """How many times a lock's guarded state was repaired after its holder died."""
        return self._locks.repairs()

    # ------------------------------------------------------------ groups

    def configure_group(self, group: str, max_bytes: int, policy: str = "lru") -> None:
        """Declare *group* with a byte budget carved from the data area.

        Idempotent for the same budget and policy (every worker calls it);
        a different budget or policy for an existing group is a ConfigError,
        as is a budget the data area cannot hold.  Policies: ``policy.py``.
        """
        self._table.configure(group, max_bytes, policy)

    def groups(self) -> list[str]:
        """Names of the configured groups."""
        return [g.name for g in self._table.all()]

    def _locate(self, g, kb: bytes) -> tuple[int, int, int]:
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
        """(value, codec id, expire_at or 0) for *key*, or None.  Takes no lock.

        The slot-table probe (``slots.py``) inlined: this is the hit path.
        """
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
                        self._stats.count_seqlock_conflict()  # a writer is in this slot: a miss
                        return None
                    q = self._data_off + off * 8
                    klen, codec, _f, vlen, _slot, gidx, exp = _entry_unpack(mm, q)
                    if klen == klen_want and gidx == g.idx and vlen <= self._item_limit:
                        q += ENTRY_SIZE
                        kv = mm[q:q + klen + vlen]
                        # The hash again with the version: the first unpack read the hash
                        # before the version, so it may predate a delete whose version and
                        # offset (0) it then took, and offset 0 may be an entry being written.
                        sh, ver2, _off = _slot_unpack(mm, p)
                        if ver2 != ver or sh != h:
                            self._stats.count_seqlock_conflict()  # rewritten under the copy
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
            self._stats.count_seqlock_conflict()
            return None
        if exp and exp <= self._clock():
            self._expire_slot(g, s, i, ver)  # outside the try: it takes the lock
            return None
        # The policy's reference byte (a plain store, no lock; racing readers may lose a count).
        # Mirrored in C by hit_touch_policy (geecache/csrc/hitpath.c): change both together.
        r = self._refs_off + s * spsz + i
        ref = mm[r]
        if ref < g.ref_max:
            mm[r] = ref + 1
        if not h & g.sample_mask:  # adaptive's sampled key: into this process's ring (shadow.py)
            self._sample(g, h, (ENTRY_SIZE + 7 + klen + vlen) & ~7)
        return kv[klen:], codec, exp

    def hit_reader(self, group: str, hot: str, factory, **kw):
        """A compiled reader of *group*'s hits (then *hot*'s): ``factory(...)``, kept by the arena.

        *factory* (``geecache._hitpath.HitPath``) gets this mapping and the numbers
        ``get_entry`` reads by: the slot, reference and data regions, both group records
        (index, shards, hash prefix, ``ref_max``, and ``adaptive``'s sample mask and this
        process's sample ring: a sampled hit is recorded there as here), the offsets of this process's ``gets``,
        ``local_hits`` and ``hot_hits`` cells of *group* and of its ``seqlock_conflicts``
        contention cell (a read that meets a writer counts there, as here), and the clock; *kw* are the
        caller's.  The reader holds the mapping until its ``release()``, which the arena
        calls before it unmaps and in a forked child (the cells are this process's row).
        """
        g, h = self._group(group), self._group(hot)
        row = self._stats.claim() + ROWHEAD
        cell = {name: row + (g.idx * len(STAT_FIELDS) + i) * 8 for i, name in enumerate(STAT_FIELDS)}
        conflicts = self._stats.contention_address(0) + SEQLOCK_CONFLICTS * 8
        reader = factory(
            self._mm,
            (self._slots_off, self._refs_off, self._data_off, self._sps, self._n_shards, self._item_limit),
            self._hit_group(g), self._hit_group(h),
            (cell["gets"], cell["local_hits"], cell["hot_hits"], conflicts),
            clock=self._clock, realtime=self._clock is time.time, **kw)
        self._readers.add(reader)
        return reader

    def _hit_group(self, g) -> tuple:
        """What a compiled reader needs of group record *g*: how it finds, touches and samples a hit."""
        ring = g.rings + self._stats.row_index() * RING_BLOCK if g.shadows is not None else 0
        return (g.idx, g.gshards, g.prefix, g.ref_max, g.sample_mask, ring)

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
        rc = 0
        view = g.write_view
        if view is not None and self._writer is not None:
            # In C for lru and lru2: it stores as below, or does nothing and says why.
            rc = self._writer.set(view, kb, value, codec, exp)
            if not rc:
                return
            if rc == _COUNTED:  # stored; its hand evicted or expired entries
                evicted, expired = self._writer.take_counted()
                if evicted:
                    self._stats.add(g.idx, "evictions", evicted)
                if expired:
                    self._stats.add(g.idx, "expirations", expired)
                return
            if rc < 0:
                rc = 0  # not a write the compiled writer makes: all of it below
        h = xxh3_64_intdigest(g.prefix + kb) or 1
        s = (g.idx + (h >> 40) % g.gshards) % self._n_shards
        esize = (ENTRY_SIZE + 7 + len(kb) + len(value)) & ~7
        mm = self._mm
        sampled = not h & g.sample_mask
        if sampled:  # adaptive's sampled key: its miniatures see the write
            self._sample(g, h, esize)
        # The shard lock inlined (not ``held``): set is a hot path.  A trylock code from the
        # compiled writer stands for ours (EOWNERDEAD: it holds the lock, untouched).
        addr = self._lock_addrs[s]
        rc = rc or _trylock(addr)
        if rc:
            self._locks.acquire(s, rc, self.lock_timeout)
        try:
            home = h % self._sps
            i = self._find(s, h, kb, g.idx, home)
            if g.main is not None:
                g = self._logs.target(g, s, i, h, esize)  # a two-log policy: which log
            gs_at = g.gstate + s * GSTATE_SIZE
            st = list(GSTATE.unpack_from(mm, gs_at))
            if esize > g.slice or (i < 0 and not self._logs.make_slot_room(g, s, st)):
                pos = -1
            else:
                # Fast path: room at the head without evicting, so no slot
                # moves and an existing key's slot is simply repointed.
                pos = self._fit(g, s, st, esize)
                if pos < 0:
                    if i >= 0:
                        self._logs.remove(g, s, i, st)
                        i = -1
                    pos = self._logs.alloc(g, s, st, esize)
            if pos < 0 and i >= 0:
                self._logs.remove(g, s, i, st)  # never leave the old value behind a failed set
            elif pos >= 0:
                self._insert(g, s, st, h, home, i, pos, esize, kb, value, codec, exp)
            GSTATE.pack_into(mm, gs_at, *st)
        finally:
            _unlock(addr)
        if sampled:
            sh = g.shadows
            sh.writes += 1
            if sh.writes >= BATCH:
                self._adapt(g)

    def _sample(self, g, h: int, esize: int) -> None:
        """Record a sampled request of *g* (hash *h*, *esize* entry bytes) in this process's ring."""
        try:
            row = self._stats.row_index()
        except TooManyProcessesError:
            return  # no row, no ring: a hint lost
        record(self._mm, g.rings + row * RING_BLOCK, h, esize)

    def _adapt(self, g) -> None:
        """Run the requests every process sampled since through *g*'s miniatures; store the level.

        After the shard lock: the miniatures are this process's, the rings are read without a
        lock.  The level byte is stored alone (one byte: a reader sees the old level or the
        new one, a kill leaves one of them).
        """
        level = g.shadows.drain()
        if self._mm[g.level_at] != level:
            self._mm[g.level_at] = level

    def delete(self, group: str, key: str) -> bool:
        """Drop *key*; True when it was present (expired or not)."""
        g = self._groups.get(group) or self._group(group)
        kb = _key_bytes(key)  # (every owned write deletes the other partition's copy)
        rc = 0
        view = g.write_view
        if view is not None and self._writer is not None:
            rc = self._writer.delete(view, kb)  # 1 deleted, 0 absent, as below
            if rc == 0 or rc == 1:
                return rc == 1
            if rc < 0:
                rc = 0
        h, s, home = self._locate(g, kb)
        # The shard lock inlined, as in ``set``: every write deletes the other partition's copy.
        addr = self._lock_addrs[s]
        rc = rc or _trylock(addr)
        if rc:
            self._locks.acquire(s, rc, self.lock_timeout)
        try:
            i = self._find(s, h, kb, g.idx, home)
            if i < 0:
                return False
            self._remove_and_store(g, s, i)
            return True
        finally:
            _unlock(addr)

    def clear(self, group: str) -> None:
        """Drop every entry of *group*, one shard at a time."""
        g = self._group(group)
        logs = self._logs
        for s in g.shards:
            with self._locks.held(s, self.lock_timeout):
                for view in g.logs:
                    st = logs.state(view, s)
                    while st[2]:
                        logs.reclaim_tail(view, s, st, "clear")
                    logs.reset(view, s)

    def _expire_slot(self, g, s: int, i: int, ver: int) -> None:
        """A reader found slot *i* expired: drop it if nobody changed it since."""
        try:
            with self._locks.held(s, self.lock_timeout):
                if self._slots.version(s, i) != ver:
                    return
                self._remove_and_store(g, s, i)
                self._stats.add(g.idx, "expirations")
        except LockTimeoutError:
            pass  # the reader answers a miss either way; a later write or read drops it


    def _remove_and_store(self, g, s: int, i: int) -> None:
        """Drop slot *i*'s entry and write the log state back (caller holds shard *s*)."""
        g = self._logs.view_of(g, s, i)
        st = self._logs.state(g, s)
        self._logs.remove(g, s, i, st)
        self._logs.store(g, s, st)

    def hottest(self, group: str, want, max_bytes: int, deadline: float):
        """(entries, truncated): ``(key, value, codec id, expire_at)`` of *group*'s live entries
        whose key *want* (``str -> bool``) accepts, hottest first by the eviction policy's state,
        their values at most *max_bytes* in all; *truncated* when the budget or *deadline*
        (``time.monotonic``) cut the scan short.  Takes no lock and raises no reference byte
        (``scan.py``).
        """
        scan = HotScan(self._mm, self._slots_off, self._refs_off, self._data_off, self._sps,
                       self._n_shards, self._clock)
        return scan.hottest(self._group(group), want, max_bytes, deadline)

    # ------------------------------------------------------------ accounting

    def usage(self, group: str) -> tuple[int, int]:
        """(bytes, entries) *group* holds; bytes count entry headers and padding."""
        g = self._group(group)
        nbytes = entries = 0
        for s in g.shards:
            for view in g.logs:
                st = self._logs.state(view, s)
                nbytes += st[3]
                entries += st[4]
        return nbytes, entries

    def audit(self, group: str) -> tuple[int, int]:
        """(bytes, entries) of *group* by a full slot-table scan under each shard lock.

        For tests and debugging: it must always equal ``usage(group)``.
        """
        g = self._group(group)
        nbytes = entries = 0
        for s in g.shards:
            with self._locks.held(s):
                b, e = self._slots.audit(s, g.idx)
            nbytes += b
            entries += e
        return nbytes, entries

    def stats_sink(self, group: str):
        """This process's counter row for *group* (claimed on first use)."""
        return self._stats.sink(self._group(group).idx)

    def stats(self, group: str) -> dict[str, int]:
        """Counters of *group* summed over every process that ever had a row."""
        return self._stats.totals(self._group(group).idx)

    def contention(self) -> list[dict[str, int]]:
        """Per process (every claimed stat row): its pid and contention counters.

        Fields: ``geecache.shm.stats.CONTENTION_FIELDS`` (lock waits and their
        time, seqlock conflicts, flight-table collisions); each is counted on
        a slow branch only, so a hit writes none of them.
        """
        return self._stats.contention()

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
        g = self._groups.get(group) or self._group(group)  # (asked by every owned write)
        return xxh3_64_intdigest(g.prefix + _key_bytes(key)) or 1
