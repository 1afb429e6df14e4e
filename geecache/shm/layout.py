"""The arena's byte layout: the one place that says where everything lives.

All integers are native-endian and naturally aligned, on purpose: CPython's
``struct`` copies a native field with one ``memcpy`` (a single load/store on
x86-64), while the ``<``/``>`` formats assemble fields byte by byte, which
would let a lock-free reader see a torn version number.  The segment never
leaves the host, so native order costs nothing.

Segment (every region starts 64-byte aligned)::

    header      HEADER      magic, layout version, sizes, region offsets
    locks       n_locks x 64   robust pthread mutex (40 B) + shard word
                               [0, n_shards) shards, then CONFIG, STATS,
                               FLIGHT, RING
    groups      max_groups x GROUP (a 112 B record in 128 B)
                               name, policy, budget, region
    gstate      max_groups x 2 x n_shards x GSTATE (48 B)
                               two circular logs per (group, shard), bank 0
                               then bank 1 (``s3fifo``'s main queue; unused
                               by one-log policies): head, tail, used, live
                               bytes, entries, hot
    stats       max_procs x (ROWHEAD + max_groups x len(STAT_FIELDS) x u64)
                               a row head is the owner's pid (q), then its
                               contention counters (CONTENTION_FIELDS, u64)
    ring        RINGHEAD + 2 buffers (double-buffered member list)
    flight      flight_slots x u64 hashes, then flight_slots x u32 pids
    slots       n_shards x slots_per_shard x SLOT (16 B)
                               hash u64 (0 = empty), version u32, off u32
    refs        n_shards x slots_per_shard bytes: CLOCK reference bits
                               (or counters), set by lock-free readers
    ghost       n_shards x slots_per_shard x GHOST (u64): per shard a 2-way
                               set-associative table of recently evicted
                               keys (``ghost.py``), shard lock
    sketch      n_shards x sketch_block(slots_per_shard): per shard a count
                               word and SKETCH_DEPTH rows of byte counters,
                               how often keys were asked for lately
                               (``sketch.py``, TinyLFU), shard lock
    data        data_bytes: each group's budget is one region carved at
                               configure time, split into equal shard slices,
                               each slice a circular log of entries (a
                               two-queue policy splits each slice in two:
                               the small logs of every shard, then the
                               main logs, ``GroupRecord``)

The fixed-size regions come first; the slot table and the data area share
what is left, sized from the expected entry size (``Geometry``).

An entry in a log: ENTRY header (24 B) + key + value, padded to 8 bytes.
The header's ``slot`` field points back at the slot that references the
entry, so the log's sweeping hand finds the slot without rehashing.

Why a circular log per (group, shard) rather than free lists: allocation is
a pointer bump, there is no external fragmentation to manage, eviction is the
hand sweeping the tail (FIFO with reinsertion, which is CLOCK), and repairing
a shard after a crash is "empty it".  The cost is that a deleted entry's
bytes (a hole) come back only when the hand passes it, and a second chance
copies the entry to the head (cheap for small values).  Measured overhead
for 100-byte values is reported by tests/perf/bench_arena.py.
"""

from __future__ import annotations

import struct

MAGIC = b"GEECACHE"
#: Raised whenever a region changes size or meaning, so that neither an attach nor a warm
#: restart reads an arena of another layout (3: two more counters per stat row; 4: the
#: frequency sketch region).
LAYOUT_VERSION = 4

#: Native formats (see module docstring for why not "<").
HEADER = struct.Struct(
    "8s I I"        # magic, layout version, header size
    " Q"            # total segment size
    " I I I I"      # n_shards, slots_per_shard, max_groups, max_procs
    " I I I I"      # item_limit, flight_slots, ring_bytes (per buffer), n_locks
    " Q Q Q Q Q"    # locks_off, groups_off, gstate_off, slots_off, refs_off
    " Q Q Q Q Q"    # data_off, data_bytes, stats_off, ring_off, flight_off
    " Q"            # ghost_off
    " Q"            # sketch_off
    " Q"            # data_used: bump pointer for group regions (CONFIG lock)
    " q"            # creator pid
)
HEADER_SIZE = 256
assert HEADER.size <= HEADER_SIZE
#: Offset of data_used inside the header (updated alone under the CONFIG lock).
DATA_USED_AT = HEADER.size - 16

LOCK_SIZE = 64
#: Word after the mutex in a shard's lock record: slots in use in that shard.
SHARD_COUNT_AT = 48
#: Word after that: how many times the lock's state was repaired after a death.
REPAIRS_AT = 52
#: Word after that: the shard's ghost sequence number (keys recorded so far, mod 2**32).
GHOST_SEQ_AT = 56
MUTEX_BYTES = 40  # sizeof(pthread_mutex_t) on x86-64/aarch64 glibc
# The 32-bit words after the mutex must not overlap it, nor leave the record.
assert MUTEX_BYTES <= SHARD_COUNT_AT < REPAIRS_AT < GHOST_SEQ_AT <= LOCK_SIZE - 4

GROUP = struct.Struct("B B H I Q Q Q I I 8x 64s")
# state, policy (``Policy.code``, see policy.py), name_len, gshards,
# max_bytes, region_off, slice_bytes, reserved, reserved, name
GROUP_SIZE = 128
#: The first reserved field's first byte: ``adaptive``'s admission level (``shadow.py``), the one
#: byte of a record stored after it is published (alone, without a lock: a hint; 0 at configure).
GROUP_LEVEL_AT = 32
assert GROUP.size <= GROUP_SIZE
MAX_GROUP_NAME = 64
GROUP_READY = 1

GSTATE = struct.Struct("6q")  # head, tail, used, live, entries, hot
GSTATE_SIZE = 48
#: Log states per (group, shard): a two-queue policy's small and main logs.
GSTATE_BANKS = 2

#: A ghost word: the key hash's top 40 bits, then a 24-bit sequence stamp (0 = empty).
GHOST = struct.Struct("Q")
GHOST_SIZE = 8
GHOST_STAMP_BITS = 24

#: The frequency sketch (``sketch.py``): rows per shard, a counter's ceiling, the block's head.
SKETCH_DEPTH = 4
SKETCH_MAX = 15
SKETCH_HEAD = 64  # the count word, alone in its cache line


def sketch_width(slots_per_shard: int) -> int:
    """Counters per sketch row for a shard of *slots_per_shard* slots: a power of two, about half."""
    return max(64, 1 << (slots_per_shard.bit_length() - 2))


def sketch_block(slots_per_shard: int) -> int:
    """Bytes of one shard's sketch block (head and rows)."""
    return SKETCH_HEAD + 2 * SKETCH_DEPTH * sketch_width(slots_per_shard)  # doorkeeper, then rows

SLOT = struct.Struct("Q I I")  # hash, version, offset (in 8-byte units)
SLOT_SIZE = 16
assert SLOT.size == SLOT_SIZE
SLOT_VERSION_AT = 8
SLOT_OFF_AT = 12
U32 = struct.Struct("I")
U64 = struct.Struct("Q")
I64 = struct.Struct("q")

#: klen, codec, flags, vlen, slot, group index, expire_at (0 = never)
ENTRY = struct.Struct("H B B I I H 2x d")
ENTRY_SIZE = 24
assert ENTRY.size == ENTRY_SIZE
ENTRY_FLAGS_AT = 3
F_LIVE = 1
F_HOT = 2
F_WRAP = 4  # the rest of the log slice is unused; the hand jumps to 0
#: A wrap marker is the entry header's first 4 bytes only (klen, codec, flags).
WRAP_MARK = struct.Struct("H B B")

ROWHEAD = 64  # pid (q), then the process's contention counters, then padding: one cache line
#: Where a row head's contention counters start (u64 each, ``stats.CONTENTION_FIELDS`` order).
#: They live in bytes that were padding, never written before: an older arena reads as zeros,
#: so the layout version stays.
CONTENTION_AT = 8
#: How many u64 contention counters a row head has room for.
CONTENTION_CELLS = (ROWHEAD - CONTENTION_AT) // 8
RINGHEAD = struct.Struct("Q")  # version; buffer (version & 1) holds it
RING_LEN = struct.Struct("I")

#: Lock indices after the shard locks.
CONFIG, STATS, FLIGHT, RING = range(4)
N_EXTRA_LOCKS = 4

#: Slots are sized so that at most this share is in use (linear probing).
MAX_LOAD = 0.75


def align(n: int, to: int = 64) -> int:
    """*n* rounded up to a multiple of *to*."""
    return (n + to - 1) // to * to


def entry_size(klen: int, vlen: int) -> int:
    """Bytes an entry takes in a log: header, key and value, 8-byte padded."""
    return (ENTRY_SIZE + klen + vlen + 7) & ~7


class Geometry:
    """Region sizes and offsets for one segment, computed once at create time.

    Everything other than slots and data is small and fixed; the rest of the
    segment is split so that, at entries of *avg_entry_bytes* (header
    included), the slot table reaches MAX_LOAD when the data area is full.
    """

    def __init__(self, size: int, shards: int, max_groups: int, max_procs: int,
                 item_limit: int, flight_slots: int, ring_bytes: int,
                 avg_entry_bytes: int, n_fields: int) -> None:
        self.size = size
        self.n_shards = shards
        self.max_groups = max_groups
        self.max_procs = max_procs
        self.item_limit = item_limit
        self.flight_slots = flight_slots
        self.ring_bytes = ring_bytes
        self.n_locks = shards + N_EXTRA_LOCKS
        self.row_bytes = ROWHEAD + max_groups * n_fields * 8
        off = HEADER_SIZE
        self.locks_off = off
        off = align(off + self.n_locks * LOCK_SIZE)
        self.groups_off = off
        off = align(off + max_groups * GROUP_SIZE)
        self.gstate_off = off
        off = align(off + max_groups * GSTATE_BANKS * shards * GSTATE_SIZE)
        self.stats_off = off
        off = align(off + max_procs * self.row_bytes)
        self.ring_off = off
        off = align(off + RINGHEAD.size + 2 * (RING_LEN.size + ring_bytes), 8)
        self.flight_off = off
        off = align(off + flight_slots * 12)
        fixed = off
        rest = size - fixed
        # The sketch: SKETCH_DEPTH rows of about half a counter per slot, and as many doorkeeper bytes.
        per_entry = avg_entry_bytes + (SLOT_SIZE + 1 + GHOST_SIZE + SKETCH_DEPTH) / MAX_LOAD
        if rest < per_entry * shards * 8:
            raise ValueError(f"arena size {size} is too small: the fixed regions take {fixed} bytes")
        entries = rest / per_entry
        self.slots_per_shard = max(8, int(entries / MAX_LOAD / shards))
        n_slots = self.slots_per_shard * shards
        self.slots_off = fixed
        self.refs_off = align(fixed + n_slots * SLOT_SIZE)
        self.ghost_off = align(self.refs_off + n_slots)
        self.sketch_off = align(self.ghost_off + n_slots * GHOST_SIZE)
        self.data_off = align(self.sketch_off + shards * sketch_block(self.slots_per_shard))
        # 64 spare bytes at the end: the hand reads a full ENTRY header even
        # at a wrap marker in the last 8 bytes of the last slice.
        self.data_bytes = (size - self.data_off - 64) & ~63

    def pack_header(self, pid: int) -> bytes:
        """The header bytes for a new segment."""
        return HEADER.pack(
            MAGIC, LAYOUT_VERSION, HEADER_SIZE, self.size,
            self.n_shards, self.slots_per_shard, self.max_groups, self.max_procs,
            self.item_limit, self.flight_slots, self.ring_bytes, self.n_locks,
            self.locks_off, self.groups_off, self.gstate_off, self.slots_off, self.refs_off,
            self.data_off, self.data_bytes, self.stats_off, self.ring_off, self.flight_off,
            self.ghost_off, self.sketch_off, 0, pid)
