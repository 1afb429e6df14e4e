/* geecache._hitpath: the data plane's compiled hit path.
 *
 * One call per read (``HitPath.serve(data, transport)``) answers the requests at the start of
 * *data* that are the common case -- a complete ``GET /api?key=K HTTP/1.1`` with only fields
 * the Python protocol ignores, whose key is cached (owned, else hot) in the default group --
 * with one ``transport.write``, and returns how many bytes it answered.  At the first request
 * that is anything else (incomplete, another target or version, a special field, a miss, an
 * expired, compressed or changing entry, any doubt) it stops, and the Python protocol parses
 * the rest exactly as before: this code only ever answers what the Python path would have
 * answered the same way, and touches nothing before it is sure.
 *
 * The arena is shared with processes that may die at any instruction (invariant 1): every
 * offset and length read from it is bounds-checked against the mapping, and a slot whose
 * seqlock version is odd or changes during the copy is a doubt (the Python reader then
 * decides), as ``Arena.get_entry`` treats it as a miss; either way it counts a seqlock
 * conflict in this process's contention cell, as ``Arena.get_entry`` does.
 *
 * A complete common-case PUT or DELETE of /api?key=K where it stops is handed back parsed
 * (``handed``), as is a GET whose key is cached nowhere, and a peer's batch POST to the default
 * group (``batch_target``): the protocol answers those.
 *
 * What each part mirrors (keep them in step):
 *   parse_get          protocol.py: on_header / on_headers_complete / on_message_complete
 *   parse_write        the same, with _complete_other and _serve's PUT / DELETE dispatch
 *   parse_batch        the same, with _serve_other's peer batch dispatch (its Authorization)
 *   probe              geecache/shm/arena.py: Arena.get_entry (layout.py: SLOT, ENTRY)
 *   hit_touch_policy   the reference byte a hit raises (arena.py, policy.py)
 *   hit_sample         an adaptive group's sampled hit (arena.py get_entry, shadow.py)
 *   count_hit          Group.get_cached's two counters (gets, local_hits | hot_hits)
 *   conflict           StatRows.count_seqlock_conflict (shm/stats.py)
 *   answer             DataPlaneProtocol._serve_api_key's head and write
 *   peer_hits          routes.py: Router.peer_batch_fast's all-cached answer (Group.cached_for_peer,
 *                      batchwire.encode_hits; the ring's owner check of pool.py HTTPPool.owns)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "xxh3.h"

/* layout.py */
#define SLOT_SIZE 16
#define ENTRY_SIZE 24
/* limits.py: MAX_KEY_BYTES */
#define MAX_KEY_BYTES 250
#define MAX_PREFIX 66
/* Answers gathered for one write before the rest of a read goes to Python (uvloop's
 * default high-water mark): a pipelined read of small requests for large values must not
 * build one huge buffer, where the Python path would pause at the mark and queue. */
#define OUT_LIMIT (64 * 1024)
/* A scratch buffer above this is freed after the write instead of kept. */
#define KEEP_SCRATCH (256 * 1024)
#define MAX_BOUNDS 64
/* shm/shadow.py: a sample ring is a u64 count (alone in RING_HEAD bytes), then SAMPLE_RING
 * records of (hash, entry bytes). */
#define RING_HEAD 64
#define SAMPLE_RING 1024
#define RING_BLOCK (RING_HEAD + SAMPLE_RING * 16)

enum { HP_HIT, HP_MISS, HP_DOUBT };

typedef struct {
    uint32_t idx, gshards;
    uint8_t ref_max;
    uint32_t plen;
    uint8_t prefix[MAX_PREFIX];
    /* adaptive (shm/shadow.py): a hit whose hash has these bits clear is recorded in this
     * process's sample ring at ring_at; all ones (no hash passes) and 0 for other policies. */
    uint64_t sample_mask;
    uint64_t ring_at;
} hp_group;

typedef struct {
    PyObject_HEAD
    Py_buffer view;          /* the arena mapping; view.buf == NULL once released */
    uint8_t *base;
    uint64_t size;
    uint64_t slots_off, refs_off, data_off;
    uint32_t sps, n_shards, item_limit;
    hp_group main, hot;
    uint64_t gets_at, local_hits_at, hot_hits_at;  /* absolute offsets of this process's u64 cells */
    uint64_t conflicts_at;   /* this process's seqlock_conflicts contention cell (shm/stats.py) */
    PyObject *clock;         /* called only for an entry with an expiry, when not time.time */
    int realtime;            /* clock is time.time: CLOCK_REALTIME directly */
    PyObject *head;          /* bytes: the hit head up to "Content-Length: " */
    Py_ssize_t max_url, max_header;
    Py_ssize_t max_body;     /* a PUT body up to this is handed back whole (0: PUTs go to httptools) */
    PyObject *batch_target;  /* bytes: the default group's peer batch target ("/_geecache/<g>/_batch";
                              * empty: no batch is handed back) */
    int accept_ok;           /* Accept-Encoding changes nothing (the group does not pack) */
    int nbounds;
    double bounds[MAX_BOUNDS];
    PyObject *tally;         /* the plane's hit tally: [count, seconds, bucket counts...] */
    uint64_t written;        /* bytes written since the last take_written() */
    uint64_t answered;       /* every hit answered here, never reset (tests, diagnostics) */
    PyObject *handed;        /* the request serve() stopped at, parsed, for the Python protocol to
                              * answer without httptools: (length, key) of a GET whose key both
                              * probes found nowhere, (length, key, body) of a PUT, (length,
                              * key, None) of a DELETE, (length, None, body, Authorization or
                              * None) of a peer batch; else NULL */
    char *out;
    size_t out_cap;
    PyObject *weakrefs;      /* the arena keeps its readers in a WeakSet */
} HitPath;

static PyObject *str_write;

/* ------------------------------------------------------------------ HTTP */

/* Bytes a key may hold here: RFC 3986 unreserved and sub-delims but '&' and '+', with ':',
 * '@' and '/'.  '%', '+', '&' (and everything else) take the Python path, which decodes. */
static uint8_t key_char[256];
/* RFC 9110 tchar: a field name. */
static uint8_t token_char[256];
/* Visible ASCII and space: a field value (no HTAB, no obs-text, no control). */
static uint8_t value_char[256];

static void init_tables(void)
{
    const char *k = "-._~!$'()*,;=:@/";
    const char *t = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        key_char[c] = alnum || (c && strchr(k, c));
        token_char[c] = alnum || (c && strchr(t, c));
        value_char[c] = c >= 0x20 && c <= 0x7e;
    }
}

/* A field the Python protocol (or llhttp's keep-alive logic) acts on: such a request is
 * not the common case.  Proxy-Connection is llhttp's, not ours: it changes keep-alive. */
static int special_field(const char *n, Py_ssize_t len, int accept_ok)
{
    switch (len) {
    case 6: return !strncasecmp(n, "expect", 6);
    case 7: return !strncasecmp(n, "upgrade", 7);
    case 10: return !strncasecmp(n, "connection", 10);
    case 13: return !strncasecmp(n, "authorization", 13);
    case 14: return !strncasecmp(n, "content-length", 14);
    case 15: return !accept_ok && !strncasecmp(n, "accept-encoding", 15);
    case 16: return !strncasecmp(n, "proxy-connection", 16);
    case 17: return !strncasecmp(n, "transfer-encoding", 17);
    default: return 0;
    }
}

/* The fields of a common-case head from p[i] through its blank line, as on_header and
 * on_headers_complete read them, and the index past that line; 0 when they are anything else
 * (incomplete, malformed, a special field, over the header budget).  *clen: NULL when no
 * Content-Length may appear; else it gets the one Content-Length's value (-1 when there is
 * none): plain digits, at most max_body, as on_header reads it and on_headers_complete would
 * let it through without a limit check.  *auth: NULL when no Authorization may appear; else it
 * gets the one Authorization's value (*alen), or NULL when there is none. */
static inline Py_ssize_t parse_fields(const HitPath *hp, const char *p, Py_ssize_t n, Py_ssize_t i,
                                      Py_ssize_t *clen, const char **auth, Py_ssize_t *alen)
{
    Py_ssize_t hdr = 0;
    if (clen != NULL)
        *clen = -1;
    if (auth != NULL)
        *auth = NULL;
    for (;;) {
        if (n - i < 2)
            return 0;
        if (p[i] == '\r') {
            if (p[i + 1] != '\n')
                return 0;
            return i + 2;
        }
        Py_ssize_t ns = i;
        while (i < n && token_char[(uint8_t)p[i]])
            i++;
        Py_ssize_t nl = i - ns;
        if (nl == 0 || i >= n || p[i] != ':')
            return 0;
        int is_clen = 0, is_auth = 0;
        if (special_field(p + ns, nl, hp->accept_ok)) {
            /* A body's one Content-Length, and a peer's one Authorization, are all a request
             * here may carry of those; a second one is llhttp's or on_header's to refuse. */
            if (clen != NULL && *clen < 0 && nl == 14 && !strncasecmp(p + ns, "content-length", 14))
                is_clen = 1;
            else if (auth != NULL && *auth == NULL && nl == 13 && !strncasecmp(p + ns, "authorization", 13))
                is_auth = 1;
            else
                return 0;
        }
        i++;
        while (i < n && p[i] == ' ')
            i++;
        Py_ssize_t vs = i;
        while (i < n && value_char[(uint8_t)p[i]])
            i++;
        Py_ssize_t vl = i - vs;
        /* An empty value or trailing space: how llhttp reports those is not our business. */
        if (vl == 0 || p[i - 1] == ' ' || n - i < 2 || p[i] != '\r' || p[i + 1] != '\n')
            return 0;
        if (is_clen) {
            Py_ssize_t v = 0;
            if (vl > 9)
                return 0;
            for (Py_ssize_t d = vs; d < i; d++) {
                if (p[d] < '0' || p[d] > '9')
                    return 0;
                v = v * 10 + (p[d] - '0');
            }
            if (v > hp->max_body)
                return 0;
            *clen = v;
        } else if (is_auth) {
            *auth = p + vs;
            *alen = vl;
        }
        i += 2;
        hdr += nl + vl;  /* as on_header counts: name + value */
        if (hdr > hp->max_header)
            return 0;
    }
}

/* The length of the complete common-case head "<method>/api?key=K HTTP/1.1" + fields at
 * p[0..n), or 0 when the bytes there are anything else.  *key, *klen: its key (the target
 * after "/api?key=").  *clen: as parse_fields's (NULL for a GET). */
static inline Py_ssize_t parse_head(const HitPath *hp, const char *p, Py_ssize_t n,
                                    const char *start, Py_ssize_t slen,
                                    const char **key, Py_ssize_t *klen, Py_ssize_t *clen)
{
    static const char version[] = " HTTP/1.1\r\n";
    Py_ssize_t i = slen;
    if (n < i || memcmp(p, start, i))
        return 0;
    while (i < n && key_char[(uint8_t)p[i]])
        i++;
    Py_ssize_t kl = i - slen;
    /* The target is "/api?key=" + key: the 414 bound applies to it. */
    if (kl == 0 || kl > MAX_KEY_BYTES || kl + 9 > hp->max_url)
        return 0;
    if (n - i < (Py_ssize_t)sizeof(version) - 1 || memcmp(p + i, version, sizeof(version) - 1))
        return 0;
    i = parse_fields(hp, p, n, i + (Py_ssize_t)sizeof(version) - 1, clen, NULL, NULL);
    if (!i)
        return 0;
    *key = p + slen;
    *klen = kl;
    return i;
}

/* The length of the complete common-case GET at p[0..n), or 0 (parse_head). */
static Py_ssize_t parse_get(const HitPath *hp, const char *p, Py_ssize_t n,
                            const char **key, Py_ssize_t *klen)
{
    static const char start[] = "GET /api?key=";
    return parse_head(hp, p, n, start, sizeof(start) - 1, key, klen, NULL);
}

/* The length of a complete common-case write at p[0..n), or 0:
 *   "PUT /api?key=K HTTP/1.1", the fields a GET may carry plus at most one Content-Length
 *   (none: an empty body, as llhttp frames a request without one), and all of its body in p
 *   (*body, *blen);
 *   "DELETE /api?key=K HTTP/1.1" with no body (*body NULL): a Content-Length, if any, of 0.
 * Only when max_body is set (the protocol hands these to _serve_put / _serve_delete). */
static Py_ssize_t parse_write(const HitPath *hp, const char *p, Py_ssize_t n,
                              const char **key, Py_ssize_t *klen, const char **body, Py_ssize_t *blen)
{
    static const char put[] = "PUT /api?key=", del[] = "DELETE /api?key=";
    Py_ssize_t clen, i;
    if (hp->max_body <= 0 || n < 1)
        return 0;
    if (p[0] == 'P') {
        i = parse_head(hp, p, n, put, sizeof(put) - 1, key, klen, &clen);
        if (!i)
            return 0;
        if (clen < 0)
            clen = 0;
        if (n - i < clen)
            return 0;  /* the body's tail is in a later read: httptools takes it */
        *body = p + i;
        *blen = clen;
        return i + clen;
    }
    if (p[0] == 'D') {
        i = parse_head(hp, p, n, del, sizeof(del) - 1, key, klen, &clen);
        if (!i || clen > 0)
            return 0;  /* a DELETE with a body takes the route table (a 400 there) */
        *body = NULL;
        *blen = 0;
        return i;
    }
    return 0;
}

/* The length of a complete common-case peer batch at p[0..n), or 0: "POST <batch_target>
 * HTTP/1.1", the fields a GET may carry plus one Content-Length of at least 1 (a batch with no
 * body is the route table's to refuse) and at most one Authorization (*auth, *alen; NULL when
 * none), and all of its body in p (*body, *blen).  Only when batch_target and max_body are set
 * (the protocol hands it to _serve_other as the POST httptools would have parsed). */
static Py_ssize_t parse_batch(const HitPath *hp, const char *p, Py_ssize_t n,
                              const char **body, Py_ssize_t *blen, const char **auth, Py_ssize_t *alen)
{
    static const char post[] = "POST ", version[] = " HTTP/1.1\r\n";
    if (hp->batch_target == NULL)
        return 0;
    Py_ssize_t tl = PyBytes_GET_SIZE(hp->batch_target);
    Py_ssize_t i = 5 + tl + 11, clen;
    if (tl == 0 || hp->max_body <= 0 || tl > hp->max_url || n < i || memcmp(p, post, 5)
        || memcmp(p + 5, PyBytes_AS_STRING(hp->batch_target), (size_t)tl) || memcmp(p + 5 + tl, version, 11))
        return 0;
    i = parse_fields(hp, p, n, i, &clen, auth, alen);
    if (!i || clen <= 0 || n - i < clen)
        return 0;  /* (a body's tail in a later read: httptools takes it) */
    *body = p + i;
    *blen = clen;
    return i + clen;
}

/* ------------------------------------------------------------------ arena */

static int out_reserve(HitPath *hp, size_t len, size_t more)
{
    if (len + more <= hp->out_cap)
        return 0;
    size_t cap = hp->out_cap ? hp->out_cap : 4096;
    while (cap < len + more)
        cap *= 2;
    char *out = PyMem_Realloc(hp->out, cap);
    if (out == NULL)
        return -1;
    hp->out = out;
    hp->out_cap = cap;
    return 0;
}

/* The hit's policy update, as Arena.get_entry makes it: the slot's reference byte counts
 * up to the group's ref_max (a plain store, no lock; racing readers may lose a count). */
static inline void hit_touch_policy(volatile uint8_t *ref, uint8_t ref_max)
{
    uint8_t r = *ref;
    if (r < ref_max)
        *ref = (uint8_t)(r + 1);
}

/* Arena.get_entry's sample of an adaptive group's hit (shadow.py record): (hash, entry bytes)
 * into this process's ring, the record first and the count after it.  One writer per ring
 * (this process, under the GIL). */
static inline void hit_sample(HitPath *hp, const hp_group *g, uint64_t h, uint64_t esize)
{
    uint8_t *ring = hp->base + g->ring_at;
    uint64_t n = __atomic_load_n((uint64_t *)ring, __ATOMIC_RELAXED);
    uint64_t rec[2] = {h, esize};
    memcpy(ring + RING_HEAD + (n % SAMPLE_RING) * 16, rec, 16);
    __atomic_store_n((uint64_t *)ring, n + 1, __ATOMIC_RELEASE);
}

/* Group.get_cached's counters, one writer per row (this process). */
static inline void count_hit(HitPath *hp, uint64_t hits_at)
{
    (*(volatile uint64_t *)(hp->base + hp->gets_at))++;
    (*(volatile uint64_t *)(hp->base + hits_at))++;
}

/* A read met its slot mid-write (odd or changed version, or a torn offset): counted in this
 * process's ``seqlock_conflicts`` cell, as Arena.get_entry counts it, then a doubt.  The
 * Python reader that takes the request next reads again (and counts again if the writer is
 * still there): every read that meets a writer counts. */
static inline int conflict(HitPath *hp)
{
    (*(volatile uint64_t *)(hp->base + hp->conflicts_at))++;
    return HP_DOUBT;
}

static int now_realtime(HitPath *hp, double *now)
{
    if (hp->realtime) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(hp->clock);
    if (r == NULL) {
        PyErr_Clear();  /* the Python path calls it again and reports what it raises */
        return -1;
    }
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (*now == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/* Arena.get_entry of key k in group g, for a hit only: on HP_HIT the value is appended to
 * hp->out at *len (and *len moved past it), the entry's expiry (0: none) stored at *expiry
 * when that is not NULL, and the policy byte raised.  HP_MISS: the probe reached an empty
 * slot or went round (Python's None too).  HP_DOUBT: anything else. */
static int probe(HitPath *hp, const hp_group *g, const uint8_t *k, size_t kl, size_t *len,
                 double *expiry)
{
    uint8_t in[XXH3_SMALL_MAX];
    if (g->plen + kl > XXH3_SMALL_MAX)
        return HP_DOUBT;
    memcpy(in, g->prefix, g->plen);
    memcpy(in + g->plen, k, kl);
    uint64_t h = xxh3_64_small(in, g->plen + kl);
    if (h == 0)
        h = 1;  /* 0 marks an empty slot */
    uint64_t sps = hp->sps;
    uint64_t s = (g->idx + (h >> 40) % g->gshards) % hp->n_shards;
    uint8_t *base = hp->base + hp->slots_off + s * sps * SLOT_SIZE;
    uint64_t i = h % sps;
    for (uint64_t step = 0; step < sps; step++) {
        uint8_t *p = base + i * SLOT_SIZE;
        uint32_t ver = __atomic_load_n((uint32_t *)(p + 8), __ATOMIC_ACQUIRE);
        uint64_t sh = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
        uint32_t off = __atomic_load_n((uint32_t *)(p + 12), __ATOMIC_RELAXED);
        if (sh == h) {
            if (ver & 1)
                return conflict(hp);
            uint64_t q = hp->data_off + (uint64_t)off * 8;
            if (q + ENTRY_SIZE > hp->size)
                return conflict(hp);
            uint8_t e[ENTRY_SIZE];
            memcpy(e, hp->base + q, ENTRY_SIZE);
            uint16_t klen, gidx;
            uint32_t vlen;
            uint8_t codec;
            double exp;
            memcpy(&klen, e, 2);
            codec = e[2];
            memcpy(&vlen, e + 4, 4);
            memcpy(&gidx, e + 12, 2);
            memcpy(&exp, e + 16, 8);
            if (klen == kl && gidx == g->idx && vlen <= hp->item_limit) {
                q += ENTRY_SIZE;
                if (q + klen + (uint64_t)vlen > hp->size)
                    return conflict(hp);
                int same = memcmp(hp->base + q, k, kl) == 0;
                if (same) {
                    if (out_reserve(hp, *len, vlen) < 0)
                        return HP_DOUBT;
                    memcpy(hp->out + *len, hp->base + q + klen, vlen);
                }
                __atomic_thread_fence(__ATOMIC_ACQUIRE);
                if (__atomic_load_n((uint32_t *)(p + 8), __ATOMIC_RELAXED) != ver)
                    return conflict(hp);
                if (same) {
                    /* A compressed entry is decoded by Python; an expired one is dropped
                     * there (under the shard lock). */
                    if (codec)
                        return HP_DOUBT;
                    if (exp != 0.0) {
                        double now;
                        if (now_realtime(hp, &now) < 0 || exp <= now)
                            return HP_DOUBT;
                    }
                    hit_touch_policy(hp->base + hp->refs_off + s * sps + i, g->ref_max);
                    if (!(h & g->sample_mask))
                        hit_sample(hp, g, h, (ENTRY_SIZE + 7 + (uint64_t)klen + vlen) & ~(uint64_t)7);
                    *len += vlen;
                    if (expiry != NULL)
                        *expiry = exp;
                    return HP_HIT;
                }
            }
        } else if (!sh) {
            return HP_MISS;
        }
        if (++i == sps)
            i = 0;
    }
    return HP_MISS;
}

/* One request's answer appended to hp->out: _serve_api_key's head, the length, the end of
 * a kept connection, the value.  HP_MISS (neither partition holds the key) and HP_DOUBT leave
 * *len as it was. */
static int answer(HitPath *hp, const char *key, Py_ssize_t kl, size_t *len)
{
    Py_ssize_t hl = PyBytes_GET_SIZE(hp->head);
    size_t start = *len;
    /* head + "%d" (at most 10 digits for a u32) + "\r\n" + "\r\n" */
    if (out_reserve(hp, start, (size_t)hl + 14) < 0)
        return HP_DOUBT;
    size_t at = start + hl + 14;  /* the value goes after the widest head; moved down below */
    size_t vat = at;
    uint64_t hits_at = hp->local_hits_at;
    int r = probe(hp, &hp->main, (const uint8_t *)key, (size_t)kl, &vat, NULL);
    if (r == HP_MISS) {
        vat = at;
        hits_at = hp->hot_hits_at;
        r = probe(hp, &hp->hot, (const uint8_t *)key, (size_t)kl, &vat, NULL);
    }
    if (r != HP_HIT)
        return r;  /* HP_MISS: no entry in either partition, as Group.get_cached's None */
    size_t vlen = vat - at;
    char digits[24];
    int dl = snprintf(digits, sizeof digits, "%zu\r\n\r\n", vlen);
    char *o = hp->out + start;
    memcpy(o, PyBytes_AS_STRING(hp->head), hl);
    memcpy(o + hl, digits, dl);
    memmove(o + hl + dl, hp->out + at, vlen);
    *len = start + hl + dl + vlen;
    count_hit(hp, hits_at);
    return HP_HIT;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ the type */

/* tally[i] += add (a new reference, or NULL on error), as the Python hit path adds. */
static int tally_add(PyObject *tally, Py_ssize_t i, PyObject *add)
{
    if (add == NULL)
        return -1;
    if (i >= PyList_GET_SIZE(tally)) {  /* someone shrank the list: count nothing, break nothing */
        Py_DECREF(add);
        return 0;
    }
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(tally, i), add);
    Py_DECREF(add);
    if (sum == NULL)
        return -1;
    PyList_SetItem(tally, i, sum);
    return 0;
}

static PyObject *HitPath_serve(HitPath *hp, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "serve(data: bytes, transport)");
        return NULL;
    }
    if (hp->view.buf == NULL)
        return PyLong_FromLong(0);
    const char *p = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), done = 0;
    size_t len = 0;
    uint64_t hits = 0;
    double t0 = monotonic();
    Py_CLEAR(hp->handed);
    while (done < n && len < OUT_LIMIT) {
        const char *key;
        Py_ssize_t kl;
        Py_ssize_t used = parse_get(hp, p + done, n - done, &key, &kl);
        if (!used) {
            const char *body;
            Py_ssize_t bl;
            used = parse_write(hp, p + done, n - done, &key, &kl, &body, &bl);
            if (used) {  /* a write: answered by Python, which owes it (what follows queues) */
                hp->handed = body != NULL ? Py_BuildValue("(ny#y#)", used, key, kl, body, bl)
                                          : Py_BuildValue("(ny#O)", used, key, kl, Py_None);
            } else {
                const char *auth;
                Py_ssize_t al = 0;
                used = parse_batch(hp, p + done, n - done, &body, &bl, &auth, &al);
                if (used)  /* a peer's batch: the same (y# of NULL is None) */
                    hp->handed = Py_BuildValue("(nOy#y#)", used, Py_None, body, bl, auth, al);
            }
            PyErr_Clear();  /* (NULL on no memory: parsed again) */
            break;
        }
        int r = answer(hp, key, kl, &len);
        if (r != HP_HIT) {
            if (r == HP_MISS)  /* a complete common-case request whose key is cached nowhere */
                hp->handed = Py_BuildValue("(ny#)", used, key, kl);  /* (NULL on no memory: parsed again) */
            PyErr_Clear();
            break;
        }
        done += used;
        hits++;
    }
    if (!hits)
        return PyLong_FromLong(0);
    PyObject *out = PyBytes_FromStringAndSize(hp->out, (Py_ssize_t)len);
    if (hp->out_cap > KEEP_SCRATCH) {
        PyMem_Free(hp->out);
        hp->out = NULL;
        hp->out_cap = 0;
    }
    if (out == NULL)
        return NULL;
    /* call[0]: the slot PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee borrow. */
    PyObject *call[3] = {NULL, args[1], out};
    PyObject *r = PyObject_VectorcallMethod(str_write, call + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(out);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    /* The Python path's tally: every answer of this read took the same time. */
    double sec = monotonic() - t0;
    int b = 0;
    while (b < hp->nbounds && hp->bounds[b] < sec)
        b++;
    hp->answered += hits;
    hp->written += len;
    if (tally_add(hp->tally, 0, PyLong_FromUnsignedLongLong(hits)) < 0
        || tally_add(hp->tally, 1, PyFloat_FromDouble(sec * hits)) < 0
        || tally_add(hp->tally, 2 + b, PyLong_FromUnsignedLongLong(hits)) < 0)
        return NULL;
    return PyLong_FromSsize_t(done);
}

static int read_group(PyObject *t, hp_group *g)
{
    unsigned int idx, gshards, ref_max;
    const char *prefix;
    Py_ssize_t plen;
    unsigned long long mask = ~0ULL, ring_at = 0;
    if (!PyArg_ParseTuple(t, "IIy#I|KK", &idx, &gshards, &prefix, &plen, &ref_max, &mask, &ring_at))
        return -1;
    if (gshards == 0 || plen > MAX_PREFIX || ref_max > 255 || idx > 0xffff || ring_at % 8) {
        PyErr_SetString(PyExc_ValueError, "bad group record");
        return -1;
    }
    g->sample_mask = ring_at ? (uint64_t)mask : ~0ULL;  /* no ring: no hash passes */
    g->ring_at = ring_at;
    g->idx = idx;
    g->gshards = gshards;
    g->ref_max = (uint8_t)ref_max;
    g->plen = (uint32_t)plen;
    memcpy(g->prefix, prefix, plen);
    return 0;
}

static void release_view(HitPath *hp)
{
    if (hp->view.buf != NULL) {
        PyBuffer_Release(&hp->view);
        hp->view.buf = NULL;
        hp->base = NULL;
    }
}

static int HitPath_init(HitPath *hp, PyObject *args, PyObject *kw)
{
    static char *names[] = {"mapping", "layout", "main", "hot", "cells", "head", "bounds", "tally",
                            "max_url", "max_header", "accept_ok", "clock", "realtime", "max_body",
                            "batch_target", NULL};
    PyObject *mapping, *main, *hot, *head, *bounds, *tally, *clock, *batch_target = NULL;
    unsigned long long slots_off, refs_off, data_off, gets_at, local_at, hot_at, conflicts_at;
    unsigned int sps, n_shards, item_limit;
    int accept_ok, realtime;
    Py_ssize_t max_body = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O(KKKIII)OO(KKKK)SOO!nnpOp|nS", names, &mapping,
                                     &slots_off, &refs_off, &data_off, &sps, &n_shards, &item_limit,
                                     &main, &hot, &gets_at, &local_at, &hot_at, &conflicts_at, &head, &bounds,
                                     &PyList_Type, &tally,
                                     &hp->max_url, &hp->max_header, &accept_ok, &clock, &realtime, &max_body,
                                     &batch_target))
        return -1;
    release_view(hp);
    if (read_group(main, &hp->main) < 0 || read_group(hot, &hp->hot) < 0)
        return -1;
    PyObject *seq = PySequence_Fast(bounds, "bounds must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    if (nb > MAX_BOUNDS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many latency bounds");
        return -1;
    }
    for (Py_ssize_t b = 0; b < nb; b++) {
        hp->bounds[b] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, b));
        if (hp->bounds[b] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    hp->nbounds = (int)nb;
    if (PyList_GET_SIZE(tally) < 3 + nb) {
        PyErr_SetString(PyExc_ValueError, "the tally needs count, seconds and len(bounds) + 1 buckets");
        return -1;
    }
    Py_INCREF(tally);
    Py_XSETREF(hp->tally, tally);
    if (PyObject_GetBuffer(mapping, &hp->view, PyBUF_WRITABLE) < 0) {
        hp->view.buf = NULL;
        return -1;
    }
    uint64_t size = (uint64_t)hp->view.len;
    uint64_t nslots = (uint64_t)n_shards * sps;
    /* Everything a probe may touch without a per-read check must lie inside the mapping. */
    if (sps == 0 || n_shards == 0 || hp->main.idx >= 0xffff
        || slots_off % 16 || slots_off > size || nslots * SLOT_SIZE > size - slots_off
        || refs_off > size || nslots > size - refs_off || data_off > size
        || gets_at % 8 || local_at % 8 || hot_at % 8 || conflicts_at % 8
        || gets_at + 8 > size || local_at + 8 > size || hot_at + 8 > size || conflicts_at + 8 > size
        || hp->main.ring_at > size || (hp->main.ring_at && RING_BLOCK > size - hp->main.ring_at)
        || hp->hot.ring_at > size || (hp->hot.ring_at && RING_BLOCK > size - hp->hot.ring_at)) {
        release_view(hp);
        PyErr_SetString(PyExc_ValueError, "layout outside the mapping");
        return -1;
    }
    hp->base = hp->view.buf;
    hp->size = size;
    hp->slots_off = slots_off;
    hp->refs_off = refs_off;
    hp->data_off = data_off;
    hp->sps = sps;
    hp->n_shards = n_shards;
    hp->item_limit = item_limit;
    hp->gets_at = gets_at;
    hp->local_hits_at = local_at;
    hp->hot_hits_at = hot_at;
    hp->conflicts_at = conflicts_at;
    Py_INCREF(head);
    Py_XSETREF(hp->head, head);
    Py_INCREF(clock);
    Py_XSETREF(hp->clock, clock);
    hp->accept_ok = accept_ok;
    hp->realtime = realtime;
    hp->max_body = max_body;
    if (batch_target == NULL)
        batch_target = PyBytes_FromStringAndSize("", 0);
    else
        Py_INCREF(batch_target);
    if (batch_target == NULL)
        return -1;
    Py_XSETREF(hp->batch_target, batch_target);
    return 0;
}

static void HitPath_dealloc(HitPath *hp)
{
    if (hp->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)hp);
    release_view(hp);
    Py_XDECREF(hp->head);
    Py_XDECREF(hp->clock);
    Py_XDECREF(hp->tally);
    Py_XDECREF(hp->handed);
    Py_XDECREF(hp->batch_target);
    PyMem_Free(hp->out);
    Py_TYPE(hp)->tp_free((PyObject *)hp);
}

static PyObject *HitPath_release(HitPath *hp, PyObject *unused)
{
    release_view(hp);
    Py_RETURN_NONE;
}

static PyObject *HitPath_take_written(HitPath *hp, PyObject *unused)
{
    PyObject *written = PyLong_FromUnsignedLongLong(hp->written);
    hp->written = 0;
    return written;
}

static PyObject *HitPath_scan(HitPath *hp, PyObject *data)
{
    /* For tests: the keys and lengths parse_get takes from *data*, without probing. */
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "scan(data: bytes)");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), done = 0;
    PyObject *found = PyList_New(0);
    while (found != NULL && done < n) {
        const char *key;
        Py_ssize_t kl, used = parse_get(hp, p + done, n - done, &key, &kl);
        if (!used)
            break;
        PyObject *item = Py_BuildValue("(ny#)", used, key, kl);
        if (item == NULL || PyList_Append(found, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(found);
            break;
        }
        Py_DECREF(item);
        done += used;
    }
    return found;
}

static PyObject *HitPath_scan_write(HitPath *hp, PyObject *data)
{
    /* For tests: (length, key, body or None) of the PUT or DELETE parse_write takes at the
     * start of *data*, or None. */
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "scan_write(data: bytes)");
        return NULL;
    }
    const char *key, *body;
    Py_ssize_t kl, bl;
    Py_ssize_t used = parse_write(hp, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &key, &kl, &body, &bl);
    if (!used)
        Py_RETURN_NONE;
    if (body == NULL)
        return Py_BuildValue("(ny#O)", used, key, kl, Py_None);
    return Py_BuildValue("(ny#y#)", used, key, kl, body, bl);
}

static PyObject *HitPath_scan_batch(HitPath *hp, PyObject *data)
{
    /* For tests: (length, None, body, Authorization or None) of the peer batch parse_batch
     * takes at the start of *data*, or None. */
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "scan_batch(data: bytes)");
        return NULL;
    }
    const char *body, *auth;
    Py_ssize_t bl, al = 0;
    Py_ssize_t used = parse_batch(hp, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &body, &bl, &auth, &al);
    if (!used)
        Py_RETURN_NONE;
    return Py_BuildValue("(nOy#y#)", used, Py_None, body, bl, auth, al);
}

static PyObject *HitPath_probe(HitPath *hp, PyObject *key)
{
    /* For tests: what answer() makes of one key: (kind, value or None); a hit counts and
     * raises the policy byte as a served one does.  kind: "hit", "miss" or "doubt". */
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "probe(key: bytes)");
        return NULL;
    }
    if (hp->view.buf == NULL)
        return Py_BuildValue("(sO)", "doubt", Py_None);
    size_t len = 0;
    const char *k = PyBytes_AS_STRING(key);
    size_t kl = (size_t)PyBytes_GET_SIZE(key);
    int r = probe(hp, &hp->main, (const uint8_t *)k, kl, &len, NULL);
    uint64_t at = hp->local_hits_at;
    if (r == HP_MISS) {
        len = 0;
        at = hp->hot_hits_at;
        r = probe(hp, &hp->hot, (const uint8_t *)k, kl, &len, NULL);
    }
    if (r == HP_HIT) {
        count_hit(hp, at);
        return Py_BuildValue("(sy#)", "hit", hp->out ? hp->out : "", (Py_ssize_t)len);
    }
    return Py_BuildValue("(sO)", r == HP_MISS ? "miss" : "doubt", Py_None);
}

/* ------------------------------------------------------------------ a peer's batch */

/* Keys of one peer batch answered here at most (an asker sends FETCH_BATCH = 64); a larger
 * batch is the Python path's. */
#define PEER_MAX_KEYS 256
/* geecache/lifetimes.py: MIN_LEFT, the least seconds left an answer says of a live entry */
#define MIN_LEFT 1e-3

/* A protobuf length (a varint of at most 5 bytes) at b[*i..n) that fits what follows it,
 * or -1. */
static int64_t read_length(const uint8_t *b, Py_ssize_t n, Py_ssize_t *i)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (*i >= n)
            return -1;
        uint8_t c = b[(*i)++];
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v <= (uint64_t)(n - *i) ? (int64_t)v : -1;
    }
    return -1;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *put_varint(char *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

typedef struct {
    size_t at;       /* the value in hp->out */
    size_t vlen;
    double expiry;   /* 0: none */
    size_t item;     /* its BatchItem's bytes */
} peer_hit;

static PyObject *HitPath_peer_hits(HitPath *hp, PyObject *const *args, Py_ssize_t nargs)
{
    /* peer_hits(body, group, hashes, owned, max_keys, max_bytes): a peer's BatchRequest
     * *body* for the default group (its UTF-8 name *group*) answered as Router.peer_batch_fast
     * answers one whose keys are all cached: the BatchResponse bytes.  False at a key its
     * partition does not hold, as Group.cached_for_peer's None (the route table answers the
     * batch then, in a task).  None when the Python path must decide: anything but the
     * group's name (or none) and items of a key alone, a key not ASCII or over MAX_HASHED
     * bytes, more than *max_keys* keys, a doubt of probe (a compressed, expired or changing
     * entry), values over *max_bytes*, a clock other than time.time.
     * Each key is probed in the partition Group.cached_for_peer picks: the owned one when its
     * ring arc is this host's (*hashes*: the ring's sorted vnode hashes as native u64, *owned*:
     * a byte per vnode, 1 where the key would not go to a peer; both empty: a ring of none),
     * else the hot one.  Probed keys are touched (policy byte, sample) as get_entry touches
     * them, up to the first that is not a hit, as cached_for_peer stops there. */
    if (nargs != 6 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])
            || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "peer_hits(body, group, hashes, owned, max_keys, max_bytes)");
        return NULL;
    }
    Py_ssize_t max_keys = PyLong_AsSsize_t(args[4]);
    if (max_keys == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[5]);
    if (max_bytes == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t nv = PyBytes_GET_SIZE(args[2]) / 8;
    if (PyBytes_GET_SIZE(args[2]) % 8 || PyBytes_GET_SIZE(args[3]) != nv) {
        PyErr_SetString(PyExc_ValueError, "peer_hits: hashes must be 8 bytes per vnode, owned one");
        return NULL;
    }
    if (hp->view.buf == NULL || !hp->realtime)
        Py_RETURN_NONE;
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    const char *gname = PyBytes_AS_STRING(args[1]);
    Py_ssize_t gl = PyBytes_GET_SIZE(args[1]);
    const char *hashes = PyBytes_AS_STRING(args[2]);
    const uint8_t *owned = (const uint8_t *)PyBytes_AS_STRING(args[3]);

    /* The BatchRequest: field 1 (group) at most once, fields 2 (items) each of field 1 (key)
     * alone: what BatchRequest.FromString reads alike, and [item.key for item in items]. */
    Py_ssize_t key_at[PEER_MAX_KEYS], key_len[PEER_MAX_KEYS];
    Py_ssize_t nk = 0, i = 0;
    int named = 0;
    while (i < n) {
        uint8_t tag = b[i++];
        int64_t l = read_length(b, n, &i);
        if (l < 0)
            Py_RETURN_NONE;
        if (tag == 0x0A) {
            if (named || (l && (l != gl || memcmp(b + i, gname, (size_t)gl))))
                Py_RETURN_NONE;
            named = 1;
        } else if (tag == 0x12) {
            Py_ssize_t j = i, end = i + (Py_ssize_t)l;
            if (j >= end || b[j++] != 0x0A)
                Py_RETURN_NONE;
            int64_t kl = read_length(b, end, &j);
            if (kl < 1 || kl > XXH3_SMALL_MAX || j + kl != end || nk >= max_keys || nk >= PEER_MAX_KEYS)
                Py_RETURN_NONE;
            for (Py_ssize_t c = j; c < end; c++)
                if (b[c] & 0x80)
                    Py_RETURN_NONE;  /* UTF-8 is checked by the library: the Python path */
            key_at[nk] = j;
            key_len[nk++] = (Py_ssize_t)kl;
        } else {
            Py_RETURN_NONE;
        }
        i += (Py_ssize_t)l;
    }
    if (!nk)
        Py_RETURN_NONE;

    peer_hit hits[PEER_MAX_KEYS];
    PyObject *out = NULL;
    size_t len = 0, values = 0;
    int expiring = 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        const uint8_t *key = b + key_at[k];
        size_t kl = (size_t)key_len[k];
        const hp_group *g = &hp->main;
        if (nv) {
            /* ConsistentHash Ring.get: the first vnode at or after the key's hash, wrapping. */
            uint64_t h = xxh3_64_small(key, kl);
            Py_ssize_t lo = 0, hi = nv;
            while (lo < hi) {
                Py_ssize_t mid = lo + (hi - lo) / 2;
                uint64_t v;
                memcpy(&v, hashes + mid * 8, 8);
                if (v < h)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (!owned[lo < nv ? lo : 0])
                g = &hp->hot;
        }
        size_t at = len;
        double expiry = 0.0;
        int r = probe(hp, g, key, kl, &len, &expiry);
        if (r != HP_HIT) {
            out = Py_NewRef(r == HP_MISS ? Py_False : Py_None);
            goto done;
        }
        hits[k].at = at;
        hits[k].vlen = len - at;
        hits[k].expiry = expiry;
        values += len - at;
        expiring |= expiry != 0.0;
    }
    double now = 0.0;
    if (values > (size_t)(max_bytes < 0 ? 0 : max_bytes) || (expiring && now_realtime(hp, &now) < 0))
        goto none;

    /* batchwire.encode_hits: per item, the value (when not empty), status 200, and for an
     * entry that expires its expire_at and ttl_left (seconds_left: at least MIN_LEFT). */
    size_t size = 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        size_t vl = hits[k].vlen;
        hits[k].item = (vl ? 1 + varint_size(vl) + vl : 0) + 3 + (hits[k].expiry != 0.0 ? 18 : 0);
        size += 1 + varint_size(hits[k].item) + hits[k].item;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL)
        goto done;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < nk; k++) {
        size_t vl = hits[k].vlen;
        double expiry = hits[k].expiry;
        *o++ = 0x0A;
        o = put_varint(o, hits[k].item);
        if (vl) {
            *o++ = 0x12;
            o = put_varint(o, vl);
            memcpy(o, hp->out + hits[k].at, vl);
            o += vl;
        }
        memcpy(o, "\x28\xc8\x01", 3);
        o += 3;
        if (expiry != 0.0) {
            double left = expiry - now;
            if (left < MIN_LEFT)  /* (as max(): a NaN expiry stays NaN) */
                left = MIN_LEFT;
            *o++ = 0x31;
            memcpy(o, &expiry, 8);
            o += 8;
            *o++ = 0x41;
            memcpy(o, &left, 8);
            o += 8;
        }
    }
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    /* The values were gathered in the scratch buffer: a large one is not kept (as serve). */
    if (hp->out_cap > KEEP_SCRATCH) {
        PyMem_Free(hp->out);
        hp->out = NULL;
        hp->out_cap = 0;
    }
    return out;
}

static PyObject *HitPath_get_head(HitPath *hp, void *closure)
{
    return Py_NewRef(hp->head);
}

static int HitPath_set_head(HitPath *hp, PyObject *v, void *closure)
{
    if (v == NULL || !PyBytes_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "head must be bytes");
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(hp->head, v);
    return 0;
}

static PyObject *HitPath_get_answered(HitPath *hp, void *closure)
{
    return PyLong_FromUnsignedLongLong(hp->answered);
}

static PyObject *HitPath_get_handed(HitPath *hp, void *closure)
{
    return Py_NewRef(hp->handed != NULL ? hp->handed : Py_None);
}

static PyObject *HitPath_get_batch_target(HitPath *hp, void *closure)
{
    return Py_NewRef(hp->batch_target != NULL ? hp->batch_target : Py_None);
}

static PyObject *HitPath_get_live(HitPath *hp, void *closure)
{
    return PyBool_FromLong(hp->view.buf != NULL);
}

static PyObject *xxh3(PyObject *mod, PyObject *data)
{
    /* For tests: XXH3-64 of at most XXH3_SMALL_MAX bytes. */
    if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) > XXH3_SMALL_MAX) {
        PyErr_SetString(PyExc_ValueError, "xxh3(data: bytes of at most 240)");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(
        xxh3_64_small((const uint8_t *)PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)));
}

static PyMethodDef HitPath_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))HitPath_serve, METH_FASTCALL,
     "serve(data, transport) -> bytes of data answered (from its start) with one transport.write"},
    {"take_written", (PyCFunction)HitPath_take_written, METH_NOARGS,
     "take_written() -> bytes serve() wrote since the last call"},
    {"release", (PyCFunction)HitPath_release, METH_NOARGS,
     "Drop the mapping (before it is closed, or in a forked child); serve answers nothing after"},
    {"scan", (PyCFunction)HitPath_scan, METH_O, "scan(data) -> [(length, key)] the parser takes (tests)"},
    {"scan_write", (PyCFunction)HitPath_scan_write, METH_O,
     "scan_write(data) -> (length, key, body or None) of the PUT or DELETE the parser takes, or None (tests)"},
    {"scan_batch", (PyCFunction)HitPath_scan_batch, METH_O,
     "scan_batch(data) -> (length, None, body, Authorization or None) of the peer batch the parser "
     "takes, or None (tests)"},
    {"probe", (PyCFunction)HitPath_probe, METH_O, "probe(key) -> (kind, value) (tests)"},
    {"peer_hits", (PyCFunction)(void (*)(void))HitPath_peer_hits, METH_FASTCALL,
     "peer_hits(body, group, hashes, owned, max_keys, max_bytes) -> the BatchResponse bytes "
     "of a peer batch whose keys are all cached, False at a key not cached, or None (the "
     "Python path decides)"},
    {NULL}
};

static PyGetSetDef HitPath_getset[] = {
    {"head", (getter)HitPath_get_head, (setter)HitPath_set_head,
     "The hit head up to 'Content-Length: ' (the sweep sets it with each new Date line)", NULL},
    {"live", (getter)HitPath_get_live, NULL, "False once the mapping was released", NULL},
    {"batch_target", (getter)HitPath_get_batch_target, NULL,
     "The peer batch target handed back parsed (b'': none)", NULL},
    {"answered", (getter)HitPath_get_answered, NULL, "Hits serve() answered so far", NULL},
    {"handed", (getter)HitPath_get_handed, NULL,
     "The request right after what the last serve() answered, parsed: (length, key) of a "
     "complete common-case GET whose key neither partition holds, (length, key, body) of a "
     "complete common-case PUT, (length, key, None) of a DELETE (when max_body is set), "
     "(length, None, body, Authorization or None) of a peer batch POST to batch_target, else None", NULL},
    {NULL}
};

static PyTypeObject HitPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geecache._hitpath.HitPath",
    .tp_basicsize = sizeof(HitPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The default group's GET /api hits answered per read (see workers/dataplane/hitpath.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HitPath_init,
    .tp_dealloc = (destructor)HitPath_dealloc,
    .tp_methods = HitPath_methods,
    .tp_getset = HitPath_getset,
    .tp_weaklistoffset = offsetof(HitPath, weakrefs),
};

static PyMethodDef module_methods[] = {
    {"xxh3", xxh3, METH_O, "xxh3(data) -> XXH3-64 of at most 240 bytes (tests)"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "geecache._hitpath",
    "The data plane's compiled hit path (workers/dataplane/hitpath.py)", -1, module_methods,
};

PyMODINIT_FUNC PyInit__hitpath(void)
{
    init_tables();
    if (PyType_Ready(&HitPathType) < 0)
        return NULL;
    str_write = PyUnicode_InternFromString("write");
    if (str_write == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&HitPathType);
    if (PyModule_AddObject(m, "HitPath", (PyObject *)&HitPathType) < 0) {
        Py_DECREF(&HitPathType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_HASHED", XXH3_SMALL_MAX);
    PyModule_AddIntConstant(m, "OUT_LIMIT", OUT_LIMIT);
    PyModule_AddIntConstant(m, "SAMPLE_RING", SAMPLE_RING);
    PyModule_AddIntConstant(m, "RING_BLOCK", RING_BLOCK);
    return m;
}
