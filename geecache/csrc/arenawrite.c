/* geecache._arenawrite: the arena's common write in C.
 *
 * ``Writer.set(group, key, value, codec, expire_at)`` is Arena.set and ``Writer.delete(group,
 * key)`` is Arena.delete for a one-log group (``lru``, ``lru2``), a key whose hashed bytes fit
 * XXH3's short input, a value that fits a shard's slice, and the shard lock free: the hand's
 * evictions and second chances included.  Anything else it leaves untouched and answers
 * NOT_HANDLED, and Arena.set / Arena.delete do the whole write in Python as before (two-log
 * policies, a contended or repaired lock, a long key): this code only ever makes the write
 * the Python path would have made, byte for byte (tests/unit/test_arenawrite.py runs the
 * same operations both ways and compares the arenas).
 *
 * Measured: inside a worker under a PUT load the Python set cost 17.5-18.9 us of CPU (its
 * bytecode runs cold between requests), about a third of the loop's CPU per PUT.
 *
 * Every store is made under the shard lock in the order the Python path makes it, which is
 * the order lock-free readers and a SIGKILL at any instruction rely on (invariant 1):
 *   the entry's bytes at the log head (no slot points there yet), then the slot as a seqlock
 *   (version odd, hash, offset, version even; release order), then the replaced entry marked
 *   dead, the shard's slot count and the log state.  A holder killed anywhere in between
 *   leaves the lock EOWNERDEAD and the next holder empties the shard (Arena._repair).
 *
 * What each part mirrors (keep them in step):
 *   locate         geecache/shm/arena.py  Arena._locate
 *   find           geecache/shm/slots.py  SlotTable.find
 *   fit            geecache/shm/log.py    Logs.fit (the WRAP_MARK store included)
 *   reclaim_tail   log.py Logs.reclaim_tail for lru and lru2 (policy.py at_tail), _drop
 *   move           slots.py SlotTable.move
 *   make_room      log.py Logs.make_slot_room and Logs.alloc (one log)
 *   insert, point  log.py Logs.insert, slots.py SlotTable.point
 *   kill_at        log.py Logs._kill_at
 *   remove         log.py Logs.remove, slots.py SlotTable.delete (backward shift)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "xxh3.h"

/* layout.py */
#define SLOT_SIZE 16
#define SLOT_VERSION_AT 8
#define SLOT_OFF_AT 12
#define ENTRY_SIZE 24
#define ENTRY_FLAGS_AT 3
#define ENTRY_SLOT_AT 8
#define F_LIVE 1
#define F_HOT 2
#define F_WRAP 4
#define GSTATE_SIZE 48
#define LOCK_SIZE 64
#define SHARD_COUNT_AT 48
#define MAX_PREFIX 66

/* policy.py: Lru.code, Lru2.code, HOT_SHARE */
#define POLICY_LRU 0
#define POLICY_LRU2 1
#define HOT_SHARE 0.75

/* Results besides 0 (stored / absent) and 1 (deleted); a positive result is the shard lock's
 * pthread_mutex_trylock code (EBUSY: not held; EOWNERDEAD: held, nothing touched). */
#define NOT_HANDLED (-1)
/* Stored, and the hand evicted or expired entries: take_counted() says how many. */
#define COUNTED (-2)

enum { EVICT, FORCE };

typedef struct {
    PyObject_HEAD
    Py_buffer view;          /* the arena mapping; view.buf == NULL once released */
    uint8_t *base;
    uint64_t size;
    uint64_t slots_off, refs_off, data_off, locks_off;
    uint64_t sps, n_shards, slot_limit;
    PyObject *clock;         /* the arena's clock, called only for an entry with an expiry */
    int realtime;            /* clock is time.time: CLOCK_REALTIME directly */
    double now;              /* the clock read once per set (have_now) */
    int have_now;
    uint64_t evicted, expired;  /* by the last set's hand, until take_counted() */
    PyObject *weakrefs;      /* the arena may keep it in a WeakSet */
} Writer;

/* A group record's write view (groups.py GroupRecord.write_view). */
typedef struct {
    uint64_t idx, gshards, data, slice, gstate, entry_flags, policy;
    const uint8_t *prefix;
    Py_ssize_t plen;
} w_group;

static int read_u64(PyObject *t, Py_ssize_t i, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, i));
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* (idx, prefix, gshards, data, slice, gstate, entry_flags, policy code) */
static int read_group(PyObject *t, w_group *g)
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 8) {
        PyErr_SetString(PyExc_TypeError, "group must be a write view: an 8-tuple");
        return -1;
    }
    PyObject *prefix = PyTuple_GET_ITEM(t, 1);
    if (!PyBytes_CheckExact(prefix) || PyBytes_GET_SIZE(prefix) > MAX_PREFIX) {
        PyErr_SetString(PyExc_TypeError, "a write view's prefix must be bytes");
        return -1;
    }
    g->prefix = (const uint8_t *)PyBytes_AS_STRING(prefix);
    g->plen = PyBytes_GET_SIZE(prefix);
    if (read_u64(t, 0, &g->idx) || read_u64(t, 2, &g->gshards) || read_u64(t, 3, &g->data)
        || read_u64(t, 4, &g->slice) || read_u64(t, 5, &g->gstate) || read_u64(t, 6, &g->entry_flags)
        || read_u64(t, 7, &g->policy))
        return -1;
    if (g->gshards == 0 || g->slice == 0 || g->slice % 8 || g->policy > POLICY_LRU2) {
        PyErr_SetString(PyExc_ValueError, "a write view has shards, a slice of 8-byte units, lru or lru2");
        return -1;
    }
    return 0;
}

static inline uint64_t entry_size(uint64_t klen, uint64_t vlen)
{
    return (ENTRY_SIZE + klen + vlen + 7) & ~(uint64_t)7;
}

static inline int in_map(const Writer *w, uint64_t at, uint64_t len)
{
    return at <= w->size && len <= w->size - at;
}

static inline pthread_mutex_t *shard_lock(const Writer *w, uint64_t s)
{
    return (pthread_mutex_t *)(w->base + w->locks_off + s * LOCK_SIZE);
}

static inline uint32_t *shard_count(const Writer *w, uint64_t s)
{
    return (uint32_t *)(w->base + w->locks_off + s * LOCK_SIZE + SHARD_COUNT_AT);
}

/* Arena._locate: hash (never 0), shard, home slot; -1 when the hashed bytes are too long. */
static int locate(const Writer *w, const w_group *g, const uint8_t *k, size_t kl,
                  uint64_t *h, uint64_t *s, uint64_t *home)
{
    uint8_t in[XXH3_SMALL_MAX];
    if ((size_t)g->plen + kl > XXH3_SMALL_MAX)
        return -1;
    memcpy(in, g->prefix, (size_t)g->plen);
    memcpy(in + g->plen, k, kl);
    uint64_t hv = xxh3_64_small(in, (size_t)g->plen + kl);
    if (hv == 0)
        hv = 1;
    *h = hv;
    *s = (g->idx + (hv >> 40) % g->gshards) % w->n_shards;
    *home = hv % w->sps;
    return 0;
}

/* SlotTable.find under the shard lock: the slot of key k, -1 when absent, -2 when a slot points
 * outside the mapping (the Python path then decides). */
static int64_t find(const Writer *w, uint64_t s, uint64_t h, const uint8_t *k, size_t kl,
                    uint64_t gidx, uint64_t i)
{
    const uint8_t *base = w->base + w->slots_off + s * w->sps * SLOT_SIZE;
    for (uint64_t step = 0; step < w->sps; step++) {
        const uint8_t *p = base + i * SLOT_SIZE;
        uint64_t sh;
        uint32_t off;
        memcpy(&sh, p, 8);
        memcpy(&off, p + SLOT_OFF_AT, 4);
        if (!sh)
            return -1;
        if (sh == h) {
            uint64_t q = w->data_off + (uint64_t)off * 8;
            if (!in_map(w, q, ENTRY_SIZE + kl))
                return -2;
            uint16_t klen, eg;
            memcpy(&klen, w->base + q, 2);
            memcpy(&eg, w->base + q + 12, 2);
            if (eg == gidx && klen == kl && memcmp(w->base + q + ENTRY_SIZE, k, kl) == 0)
                return (int64_t)i;
        }
        if (++i == w->sps)
            i = 0;
    }
    return -1;
}

/* SlotTable._write: rewrite the slot at p in seqlock order (odd, fields, even). */
static inline void slot_write(uint8_t *p, uint64_t h, uint32_t off)
{
    uint32_t *ver = (uint32_t *)(p + SLOT_VERSION_AT);
    uint32_t v = __atomic_load_n(ver, __ATOMIC_RELAXED);
    __atomic_store_n(ver, v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n((uint64_t *)p, h, __ATOMIC_RELAXED);
    __atomic_store_n((uint32_t *)(p + SLOT_OFF_AT), off, __ATOMIC_RELAXED);
    __atomic_store_n(ver, v + 2, __ATOMIC_RELEASE);
}

/* Logs._kill_at: mark the entry at absolute offset q dead and take it out of the log state. */
static void kill_at(Writer *w, uint64_t q, int64_t *st)
{
    uint8_t *e = w->base + q;
    uint16_t klen;
    uint32_t vlen;
    memcpy(&klen, e, 2);
    memcpy(&vlen, e + 4, 4);
    uint8_t flags = e[ENTRY_FLAGS_AT];
    e[ENTRY_FLAGS_AT] = (uint8_t)(flags & ~(F_LIVE | F_HOT));
    int64_t size = (int64_t)entry_size(klen, vlen);
    st[3] -= size;
    st[4] -= 1;
    if (flags & F_HOT)
        st[5] -= size;
}

/* SlotTable.delete: backward shift from slot i of shard s; every moved slot is written before
 * its old place is cleared, and its entry's back pointer follows it. */
static void slot_delete(Writer *w, uint64_t s, uint64_t i)
{
    uint64_t sps = w->sps;
    uint8_t *base = w->base + w->slots_off + s * sps * SLOT_SIZE;
    uint8_t *refs = w->base + w->refs_off + s * sps;
    uint64_t j = i;
    for (;;) {
        if (++j == sps)
            j = 0;
        uint64_t hj;
        uint32_t offj;
        memcpy(&hj, base + j * SLOT_SIZE, 8);
        memcpy(&offj, base + j * SLOT_SIZE + SLOT_OFF_AT, 4);
        if (!hj)
            break;
        uint64_t k = hj % sps;
        /* Stay when the home k lies cyclically in (i, j]. */
        if ((i < j && i < k && k <= j) || (i > j && (k > i || k <= j)))
            continue;
        slot_write(base + i * SLOT_SIZE, hj, offj);
        refs[i] = refs[j];
        uint32_t i32 = (uint32_t)i;
        uint64_t back = w->data_off + (uint64_t)offj * 8 + ENTRY_SLOT_AT;
        if (in_map(w, back, 4))
            memcpy(w->base + back, &i32, 4);
        i = j;
    }
    slot_write(base + i * SLOT_SIZE, 0, 0);
    *shard_count(w, s) -= 1;
}

/* The clock, read at most once per call (as Python reads it, with the same clock, for each
 * entry with an expiry the hand passes: a clock the caller moves by hand does not move inside
 * one set).  -1 with an exception set when the clock failed. */
static int now(Writer *w, double *out)
{
    if (!w->have_now) {
        if (w->realtime) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            w->now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
        } else {
            PyObject *r = PyObject_CallNoArgs(w->clock);
            if (r == NULL)
                return -1;
            double v = PyFloat_AsDouble(r);
            Py_DECREF(r);
            if (v == -1.0 && PyErr_Occurred())
                return -1;
            w->now = v;
        }
        w->have_now = 1;
    }
    *out = w->now;
    return 0;
}

/* What one call works on: the group's view, the shard, its slice and its log state. */
typedef struct {
    const w_group *g;
    uint64_t s, slice_at;
    int64_t L;
    int64_t *st;
    int failed;              /* the shard's state pointed outside the mapping, or the clock failed */
} w_log;

/* Logs.fit: reserve esize bytes at the head without evicting; -1 when they do not fit. */
static int64_t fit(Writer *w, w_log *lg, int64_t esize)
{
    int64_t *st = lg->st, L = lg->L;
    int64_t head = st[0], tail = st[1], used = st[2], pos;
    if (!used) {
        head = tail = st[0] = st[1] = 0;
    }
    if (head > tail || !used) {
        if (esize <= L - head)
            pos = head;
        else if (esize <= tail) {
            /* Skip the slice's end: the hand treats the marker as used bytes. */
            static const uint8_t mark[4] = {0, 0, 0, F_WRAP};
            if (!in_map(w, lg->slice_at + (uint64_t)head, 4)) {
                lg->failed = 1;
                return -1;
            }
            memcpy(w->base + lg->slice_at + head, mark, 4);
            st[2] += L - head;
            pos = 0;
        } else
            return -1;
    } else if (head < tail && esize <= tail - head)
        pos = head;
    else
        return -1;
    st[0] = (pos + esize) % L;
    st[2] += esize;
    return pos;
}

/* SlotTable.move: copy slot i's entry from src to dst, set its flags, repoint the slot; the
 * version is odd for the copy (the regions may overlap). */
static void move(Writer *w, uint64_t s, uint64_t i, uint64_t src, uint64_t dst, uint64_t esize,
                 uint8_t flags, uint8_t ref)
{
    uint8_t *p = w->base + w->slots_off + (s * w->sps + i) * SLOT_SIZE;
    uint32_t *ver = (uint32_t *)(p + SLOT_VERSION_AT);
    uint32_t v = __atomic_load_n(ver, __ATOMIC_RELAXED);
    __atomic_store_n(ver, v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memmove(w->base + dst, w->base + src, esize);
    w->base[dst + ENTRY_FLAGS_AT] = flags;
    __atomic_store_n((uint32_t *)(p + SLOT_OFF_AT), (uint32_t)((dst - w->data_off) >> 3), __ATOMIC_RELAXED);
    __atomic_store_n(ver, v + 2, __ATOMIC_RELEASE);
    w->base[w->refs_off + s * w->sps + i] = ref;
}

/* Logs._drop: the live entry of slot i leaves the log state, its slot is deleted. */
static void drop(Writer *w, w_log *lg, uint64_t i, int64_t esize, uint8_t flags, uint64_t *counter)
{
    int64_t *st = lg->st;
    st[3] -= esize;
    st[4] -= 1;
    if (flags & F_HOT)
        st[5] -= esize;
    slot_delete(w, lg->s, i);
    *counter += 1;
}

/* Logs.reclaim_tail in mode EVICT or FORCE, for lru and lru2 (policy.py at_tail). */
static void reclaim_tail(Writer *w, w_log *lg, int mode)
{
    int64_t *st = lg->st, L = lg->L;
    int64_t t = st[1];
    uint64_t q = lg->slice_at + (uint64_t)t;
    if (t < 0 || t >= L || !in_map(w, q, ENTRY_SIZE)) {
        lg->failed = 1;
        return;
    }
    const uint8_t *e = w->base + q;
    uint16_t klen;
    uint32_t vlen, i;
    double exp;
    memcpy(&klen, e, 2);
    uint8_t flags = e[ENTRY_FLAGS_AT];
    memcpy(&vlen, e + 4, 4);
    memcpy(&i, e + ENTRY_SLOT_AT, 4);
    memcpy(&exp, e + 16, 8);
    if (flags & F_WRAP) {
        st[2] -= L - t;
        st[1] = 0;
        return;
    }
    int64_t esize = (int64_t)entry_size(klen, vlen);
    if (esize > L - t || ((flags & F_LIVE) && i >= w->sps)) {
        lg->failed = 1;
        return;
    }
    /* The clock before the first store of this step: a failing clock leaves the step undone
     * and the shard consistent. */
    double n = 0.0;
    if ((flags & F_LIVE) && mode == EVICT && exp != 0.0 && now(w, &n) < 0) {
        lg->failed = 1;
        return;
    }
    st[1] = (t + esize) % L;
    st[2] -= esize;
    if (!(flags & F_LIVE))
        return;
    if (mode == EVICT) {
        if (exp != 0.0 && exp <= n) {
            drop(w, lg, i, esize, flags, &w->expired);
            return;
        }
        uint8_t ref = w->base[w->refs_off + lg->s * w->sps + i];
        int kept;
        uint8_t keep_flags = flags;
        if (lg->g->policy == POLICY_LRU) {
            kept = ref != 0;
        } else if (flags & F_HOT) {
            /* The second list only shrinks when over its share. */
            kept = 1;
            if (!(ref || (double)st[5] <= (double)L * HOT_SHARE))
                keep_flags = (uint8_t)(flags & ~F_HOT);
        } else {
            kept = ref != 0;
            keep_flags = (uint8_t)(flags | F_HOT);
        }
        if (kept) {
            int64_t pos = fit(w, lg, esize);
            if (lg->failed)
                return;
            if (pos >= 0) {
                move(w, lg->s, i, q, lg->slice_at + (uint64_t)pos, (uint64_t)esize, keep_flags, 0);
                if ((keep_flags ^ flags) & F_HOT)
                    st[5] += (keep_flags & F_HOT) ? esize : -esize;
                return;
            }
        }
    }
    drop(w, lg, i, esize, flags, &w->evicted);
}

/* Logs.make_slot_room for one log: evict until the shard's slot load is under MAX_LOAD;
 * 0 when the log is empty and the load still is not. */
static int make_slot_room(Writer *w, w_log *lg)
{
    uint32_t *count = shard_count(w, lg->s);
    while (*count >= w->slot_limit) {
        if (!lg->st[2])
            return 0;
        reclaim_tail(w, lg, EVICT);
        if (lg->failed)
            return 0;
    }
    return 1;
}

/* Logs.alloc: esize bytes at the head, evicting at the tail as needed; -1 if impossible. */
static int64_t alloc(Writer *w, w_log *lg, int64_t esize)
{
    int64_t budget = 3 * lg->st[4] + 8;  /* a full CLOCK cycle or three, then force */
    for (;;) {
        int64_t pos = fit(w, lg, esize);
        if (pos >= 0 || lg->failed)
            return pos;
        if (!lg->st[2])
            return -1;
        budget -= 1;
        reclaim_tail(w, lg, budget > 0 ? EVICT : FORCE);
        if (lg->failed)
            return -1;
    }
}

static inline int released(Writer *w)
{
    if (w->view.buf == NULL) {
        PyErr_SetString(PyExc_ValueError, "the arena writer was released");
        return 1;
    }
    return 0;
}

static int key_value(PyObject *const *args, const uint8_t **k, Py_ssize_t *kl)
{
    if (!PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "key must be bytes");
        return -1;
    }
    *k = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    *kl = PyBytes_GET_SIZE(args[1]);
    return 0;
}

/* Arena.set's write under the lock, from ``i = find(...)`` to the log state stored. */
static void set_locked(Writer *w, w_log *lg, uint64_t h, uint64_t home, int64_t i,
                       const uint8_t *k, uint64_t kl, const uint8_t *v, uint64_t vl,
                       uint8_t codec, double exp, int64_t esize)
{
    const w_group *g = lg->g;
    int64_t *st = lg->st;
    int64_t pos;
    if (i < 0 && !make_slot_room(w, lg)) {
        return;
    }
    pos = fit(w, lg, esize);
    if (lg->failed)
        return;
    if (pos < 0) {
        if (i >= 0) {
            /* Logs.remove: the old value must not stay behind a set that moves slots */
            uint32_t off;
            memcpy(&off, w->base + w->slots_off + (lg->s * w->sps + (uint64_t)i) * SLOT_SIZE + SLOT_OFF_AT, 4);
            kill_at(w, w->data_off + (uint64_t)off * 8, st);  /* find checked it lies in the mapping */
            slot_delete(w, lg->s, (uint64_t)i);
            i = -1;
        }
        pos = alloc(w, lg, esize);
        if (pos < 0)
            return;
    }
    uint64_t q = lg->slice_at + (uint64_t)pos;
    if (!in_map(w, q, (uint64_t)esize) || (q - w->data_off) / 8 > UINT32_MAX) {
        lg->failed = 1;
        return;
    }

    /* Logs.insert: a free slot, the entry, the slot pointed at it, the old entry dead */
    const uint8_t *slots = w->base + w->slots_off + lg->s * w->sps * SLOT_SIZE;
    if (i < 0) {
        uint64_t j = home, sh;
        for (;;) {  /* the load is under MAX_LOAD: an empty slot exists */
            memcpy(&sh, slots + j * SLOT_SIZE, 8);
            if (!sh)
                break;
            if (++j == w->sps)
                j = 0;
        }
        i = (int64_t)j;
    }
    uint8_t *e = w->base + q;
    uint16_t klen16 = (uint16_t)kl, gidx16 = (uint16_t)g->idx;
    uint32_t vlen32 = (uint32_t)vl, slot32 = (uint32_t)i;
    memcpy(e, &klen16, 2);
    e[2] = codec;
    e[3] = (uint8_t)g->entry_flags;
    memcpy(e + 4, &vlen32, 4);
    memcpy(e + ENTRY_SLOT_AT, &slot32, 4);
    memcpy(e + 12, &gidx16, 2);
    e[14] = e[15] = 0;
    memcpy(e + 16, &exp, 8);
    memcpy(e + ENTRY_SIZE, k, kl);
    memcpy(e + ENTRY_SIZE + kl, v, vl);

    /* SlotTable.point */
    uint8_t *p = (uint8_t *)slots + (uint64_t)i * SLOT_SIZE;
    uint64_t old_h;
    uint32_t old_off;
    memcpy(&old_h, p, 8);
    memcpy(&old_off, p + SLOT_OFF_AT, 4);
    uint64_t old = 0;
    if (old_h)
        old = w->data_off + (uint64_t)old_off * 8;
    else
        *shard_count(w, lg->s) += 1;
    w->base[w->refs_off + lg->s * w->sps + (uint64_t)i] = 0;
    slot_write(p, h, (uint32_t)((q - w->data_off) >> 3));
    if (old && in_map(w, old, ENTRY_SIZE))  /* (find checked it) */
        kill_at(w, old, st);
    st[3] += esize;
    st[4] += 1;
    if (g->entry_flags & F_HOT)
        st[5] += esize;
}

/* The arguments set and delete share: their count, the writer still holding the mapping,
 * the group's write view and the key's bytes; -1 with the exception set. */
static int write_args(Writer *w, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                      const char *usage, w_group *g, const uint8_t **k, Py_ssize_t *kl)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (released(w) || read_group(args[0], g) < 0 || key_value(args, k, kl) < 0)
        return -1;
    return 0;
}

/* set(group, key, value, codec, expire_at) -> 0 stored, COUNTED, NOT_HANDLED, or the
 * trylock code. */
static PyObject *Writer_set(Writer *w, PyObject *const *args, Py_ssize_t nargs)
{
    w_group g;
    const uint8_t *k;
    Py_ssize_t kl;
    if (write_args(w, args, nargs, 5, "set(group, key, value, codec, expire_at)", &g, &k, &kl) < 0)
        return NULL;
    if (!PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "value must be bytes");
        return NULL;
    }
    const uint8_t *v = (const uint8_t *)PyBytes_AS_STRING(args[2]);
    uint64_t vl = (uint64_t)PyBytes_GET_SIZE(args[2]);
    long codec = PyLong_AsLong(args[3]);
    if (codec == -1 && PyErr_Occurred())
        return NULL;
    double exp = PyFloat_AsDouble(args[4]);
    if (exp == -1.0 && PyErr_Occurred())
        return NULL;
    if (codec < 0 || codec > 255 || kl > UINT16_MAX || vl > UINT32_MAX)
        return PyLong_FromLong(NOT_HANDLED);

    uint64_t h, s, home;
    uint64_t esize = entry_size((uint64_t)kl, vl);
    if (esize > g.slice || locate(w, &g, k, (size_t)kl, &h, &s, &home) < 0)
        return PyLong_FromLong(NOT_HANDLED);  /* not cached / not hashed here: Python decides */
    uint64_t gs_at = g.gstate + s * GSTATE_SIZE;
    uint64_t slice_at = g.data + ((s + w->n_shards - g.idx % w->n_shards) % w->n_shards) * g.slice;
    if (!in_map(w, gs_at, GSTATE_SIZE) || !in_map(w, slice_at, g.slice) || (slice_at - w->data_off) % 8)
        return PyLong_FromLong(NOT_HANDLED);
    pthread_mutex_t *lock = shard_lock(w, s);
    int rc = pthread_mutex_trylock(lock);
    if (rc)
        return PyLong_FromLong(rc);

    int result = NOT_HANDLED;
    int64_t i = find(w, s, h, k, (size_t)kl, g.idx, home);
    if (i == -2)
        goto out;
    int64_t st[6];
    memcpy(st, w->base + gs_at, GSTATE_SIZE);
    w_log lg = {&g, s, slice_at, (int64_t)g.slice, st, 0};
    w->have_now = 0;
    w->evicted = w->expired = 0;
    set_locked(w, &lg, h, home, i, k, (uint64_t)kl, v, vl, (uint8_t)codec, exp, (int64_t)esize);
    /* Stored even after a failure: what the hand did is in st (a failure stops it between
     * steps, each of which left the shard consistent). */
    memcpy(w->base + gs_at, st, GSTATE_SIZE);
    result = (w->evicted || w->expired) ? COUNTED : 0;
    pthread_mutex_unlock(lock);
    if (lg.failed) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "an arena shard's log points outside the mapping");
        return NULL;
    }
    return PyLong_FromLong(result);
out:
    pthread_mutex_unlock(lock);
    return PyLong_FromLong(result);
}

/* delete(group, key) -> 0 absent, 1 deleted, NOT_HANDLED, or the trylock code. */
static PyObject *Writer_delete(Writer *w, PyObject *const *args, Py_ssize_t nargs)
{
    w_group g;
    const uint8_t *k;
    Py_ssize_t kl;
    if (write_args(w, args, nargs, 2, "delete(group, key)", &g, &k, &kl) < 0)
        return NULL;
    uint64_t h, s, home;
    if (locate(w, &g, k, (size_t)kl, &h, &s, &home) < 0)
        return PyLong_FromLong(NOT_HANDLED);
    uint64_t gs_at = g.gstate + s * GSTATE_SIZE;
    if (!in_map(w, gs_at, GSTATE_SIZE))
        return PyLong_FromLong(NOT_HANDLED);
    pthread_mutex_t *lock = shard_lock(w, s);
    int rc = pthread_mutex_trylock(lock);
    if (rc)
        return PyLong_FromLong(rc);
    int result = NOT_HANDLED;
    int64_t i = find(w, s, h, k, (size_t)kl, g.idx, home);
    if (i == -1) {
        result = 0;
    } else if (i >= 0) {
        /* Arena._remove_and_store: the entry dead, the slot deleted, the log state stored */
        uint32_t off;
        memcpy(&off, w->base + w->slots_off + (s * w->sps + (uint64_t)i) * SLOT_SIZE + SLOT_OFF_AT, 4);
        int64_t st[6];
        memcpy(st, w->base + gs_at, GSTATE_SIZE);
        kill_at(w, w->data_off + (uint64_t)off * 8, st);  /* find checked it lies in the mapping */
        slot_delete(w, s, (uint64_t)i);
        memcpy(w->base + gs_at, st, GSTATE_SIZE);
        result = 1;
    }
    pthread_mutex_unlock(lock);
    return PyLong_FromLong(result);
}

/* find_u64(offset, count, value) -> the index of the first of *count* u64 words at *offset*
 * equal to *value*, or -1.  Flight.loading asks it on every owned write; Python's search of
 * the table's bytes costs 2-4 us on a cold cache (mostly zeros, which defeat its skip). */
static PyObject *Writer_find_u64(Writer *w, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "find_u64(offset, count, value)");
        return NULL;
    }
    if (released(w))
        return NULL;
    unsigned long long off = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long count = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long value = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (count > w->size / 8 || !in_map(w, off, count * 8)) {
        PyErr_SetString(PyExc_ValueError, "find_u64: the words lie outside the arena");
        return NULL;
    }
    const uint8_t *p = w->base + off;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t x;
        memcpy(&x, p + i * 8, 8);
        if (x == value)
            return PyLong_FromUnsignedLongLong(i);
    }
    return PyLong_FromLong(-1);
}

static PyObject *Writer_take_counted(Writer *w, PyObject *unused)
{
    PyObject *r = Py_BuildValue("(KK)", (unsigned long long)w->evicted, (unsigned long long)w->expired);
    w->evicted = w->expired = 0;
    return r;
}

static void release_view(Writer *w)
{
    if (w->view.buf != NULL) {
        PyBuffer_Release(&w->view);
        w->view.buf = NULL;
        w->base = NULL;
    }
}

/* Writer(mapping, (slots_off, refs_off, data_off, locks_off, slots_per_shard, n_shards,
 * slot_limit), clock, realtime) */
static int Writer_init(Writer *w, PyObject *args, PyObject *kw)
{
    PyObject *mapping, *geo, *clock;
    int realtime;
    static char *names[] = {"mapping", "geometry", "clock", "realtime", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!Op", names, &mapping, &PyTuple_Type, &geo,
                                     &clock, &realtime))
        return -1;
    if (!PyCallable_Check(clock)) {
        PyErr_SetString(PyExc_TypeError, "clock must be callable");
        return -1;
    }
    if (PyTuple_GET_SIZE(geo) != 7) {
        PyErr_SetString(PyExc_TypeError, "geometry is a 7-tuple");
        return -1;
    }
    uint64_t g[7];
    for (Py_ssize_t n = 0; n < 7; n++)
        if (read_u64(geo, n, &g[n]) < 0)
            return -1;
    if (g[4] == 0 || g[5] == 0) {
        PyErr_SetString(PyExc_ValueError, "slots_per_shard and n_shards must be >= 1");
        return -1;
    }
    release_view(w);
    if (PyObject_GetBuffer(mapping, &w->view, PyBUF_WRITABLE) < 0) {
        w->view.buf = NULL;
        return -1;
    }
    w->base = (uint8_t *)w->view.buf;
    w->size = (uint64_t)w->view.len;
    w->slots_off = g[0];
    w->refs_off = g[1];
    w->data_off = g[2];
    w->locks_off = g[3];
    w->sps = g[4];
    w->n_shards = g[5];
    w->slot_limit = g[6];
    Py_INCREF(clock);
    Py_XSETREF(w->clock, clock);
    w->realtime = realtime;
    if (!in_map(w, w->slots_off, w->n_shards * w->sps * SLOT_SIZE)
        || !in_map(w, w->refs_off, w->n_shards * w->sps)
        || !in_map(w, w->locks_off, w->n_shards * LOCK_SIZE) || w->data_off > w->size) {
        release_view(w);
        PyErr_SetString(PyExc_ValueError, "the geometry does not fit the mapping");
        return -1;
    }
    return 0;
}

static void Writer_dealloc(Writer *w)
{
    if (w->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)w);
    release_view(w);
    Py_CLEAR(w->clock);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *Writer_release(Writer *w, PyObject *unused)
{
    release_view(w);
    Py_RETURN_NONE;
}

static PyMethodDef Writer_methods[] = {
    {"set", (PyCFunction)(void (*)(void))Writer_set, METH_FASTCALL,
     "set(group, key, value, codec, expire_at): 0 when stored as Arena.set stores it, COUNTED "
     "when the hand also evicted or expired entries (take_counted()); NOT_HANDLED when this is "
     "not a write made here (nothing done); else the shard lock's trylock code (EBUSY: not "
     "taken; EOWNERDEAD: taken, nothing done)."},
    {"delete", (PyCFunction)(void (*)(void))Writer_delete, METH_FASTCALL,
     "delete(group, key): 1 deleted, 0 absent, -1 not the common case, else the trylock code."},
    {"find_u64", (PyCFunction)(void (*)(void))Writer_find_u64, METH_FASTCALL,
     "find_u64(offset, count, value): the index of the first of count u64 words at offset "
     "equal to value, or -1 (Flight.loading's search)."},
    {"take_counted", (PyCFunction)Writer_take_counted, METH_NOARGS,
     "(evictions, expirations) the last set's hand made, for the caller's stat row; then (0, 0)."},
    {"release", (PyCFunction)Writer_release, METH_NOARGS,
     "Let go of the mapping (before it is unmapped); set and delete raise ValueError after."},
    {NULL}
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geecache._arenawrite.Writer",
    .tp_doc = "The arena's set and delete for lru and lru2 groups, as geecache.shm.arena makes them.",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
    .tp_weaklistoffset = offsetof(Writer, weakrefs),
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "geecache._arenawrite",
    "The arena's common write (geecache/csrc/arenawrite.c).", -1, NULL
};

PyMODINIT_FUNC PyInit__arenawrite(void)
{
    if (PyType_Ready(&WriterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WriterType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(&WriterType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "NOT_HANDLED", NOT_HANDLED);
    PyModule_AddIntConstant(m, "COUNTED", COUNTED);
    if (PyModule_AddObject(m, "HOT_SHARE", PyFloat_FromDouble(HOT_SHARE)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_HASHED", XXH3_SMALL_MAX);
    return m;
}
