/* XXH3-64 (seed 0, the default secret) for inputs of at most 240 bytes.
 *
 * The short and mid-size paths of xxHash's XXH3_64bits, transcribed from the reference
 * (xxhash.h, https://github.com/Cyan4973/xxHash, BSD 2-Clause, Copyright (c) 2012-2021
 * Yann Collet): what Python's ``xxhash.xxh3_64_intdigest`` computes for the same bytes,
 * checked by tests/test_hitpath.py on every length 0..240.  Longer inputs are not
 * handled here: the caller answers them on the Python path.
 */
#ifndef GEECACHE_XXH3_H
#define GEECACHE_XXH3_H

#include <stdint.h>
#include <string.h>

#define XXH3_SMALL_MAX 240

static const uint8_t xxh3_secret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

#define XXH_P32_1 0x9E3779B1U
#define XXH_P64_1 0x9E3779B185EBCA87ULL
#define XXH_P64_2 0xC2B2AE3D27D4EB4FULL
#define XXH_P64_3 0x165667B19E3779F9ULL
#define XXH_MX1 0x165667919E3779F9ULL
#define XXH_MX2 0x9FB21C651E98DF25ULL

/* Little-endian loads (the arena and this code run on one host; x86-64 and aarch64 are LE). */
static inline uint32_t xxh_r32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xxh_r64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint64_t xxh_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t xxh_mul128_fold64(uint64_t a, uint64_t b)
{
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
}

static inline uint64_t xxh64_avalanche(uint64_t h)
{
    h ^= h >> 33; h *= XXH_P64_2; h ^= h >> 29; h *= XXH_P64_3; h ^= h >> 32;
    return h;
}

static inline uint64_t xxh3_avalanche(uint64_t h)
{
    h ^= h >> 37; h *= XXH_MX1; h ^= h >> 32;
    return h;
}

static inline uint64_t xxh3_rrmxmx(uint64_t h, uint64_t len)
{
    h ^= xxh_rotl64(h, 49) ^ xxh_rotl64(h, 24);
    h *= XXH_MX2;
    h ^= (h >> 35) + len;
    h *= XXH_MX2;
    return h ^ (h >> 28);
}

static inline uint64_t xxh3_mix16(const uint8_t *in, const uint8_t *sec)
{
    return xxh_mul128_fold64(xxh_r64(in) ^ xxh_r64(sec), xxh_r64(in + 8) ^ xxh_r64(sec + 8));
}

/* XXH3_64bits(in, len) for len <= XXH3_SMALL_MAX. */
static uint64_t xxh3_64_small(const uint8_t *in, size_t len)
{
    const uint8_t *s = xxh3_secret;
    if (len <= 16) {
        if (len > 8) {
            uint64_t lo = xxh_r64(in) ^ (xxh_r64(s + 24) ^ xxh_r64(s + 32));
            uint64_t hi = xxh_r64(in + len - 8) ^ (xxh_r64(s + 40) ^ xxh_r64(s + 48));
            uint64_t acc = len + __builtin_bswap64(lo) + hi + xxh_mul128_fold64(lo, hi);
            return xxh3_avalanche(acc);
        }
        if (len >= 4) {
            uint32_t in1 = xxh_r32(in), in2 = xxh_r32(in + len - 4);
            uint64_t bitflip = xxh_r64(s + 8) ^ xxh_r64(s + 16);
            uint64_t in64 = in2 + ((uint64_t)in1 << 32);
            return xxh3_rrmxmx(in64 ^ bitflip, len);
        }
        if (len) {
            uint32_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
            uint32_t combined = (c1 << 16) | (c2 << 24) | c3 | ((uint32_t)len << 8);
            uint64_t bitflip = (uint64_t)(xxh_r32(s) ^ xxh_r32(s + 4));
            return xxh64_avalanche((uint64_t)combined ^ bitflip);
        }
        return xxh64_avalanche(xxh_r64(s + 56) ^ xxh_r64(s + 64));
    }
    uint64_t acc = len * XXH_P64_1;
    if (len <= 128) {
        if (len > 32) {
            if (len > 64) {
                if (len > 96) {
                    acc += xxh3_mix16(in + 48, s + 96);
                    acc += xxh3_mix16(in + len - 64, s + 112);
                }
                acc += xxh3_mix16(in + 32, s + 64);
                acc += xxh3_mix16(in + len - 48, s + 80);
            }
            acc += xxh3_mix16(in + 16, s + 32);
            acc += xxh3_mix16(in + len - 32, s + 48);
        }
        acc += xxh3_mix16(in, s);
        acc += xxh3_mix16(in + len - 16, s + 16);
        return xxh3_avalanche(acc);
    }
    /* 129..240: XXH3_len_129to240_64b (secret size min 136, offsets 3 and 17). */
    unsigned rounds = (unsigned)len / 16, i;
    for (i = 0; i < 8; i++)
        acc += xxh3_mix16(in + 16 * i, s + 16 * i);
    uint64_t acc_end = xxh3_mix16(in + len - 16, s + 136 - 17);
    acc = xxh3_avalanche(acc);
    for (i = 8; i < rounds; i++)
        acc_end += xxh3_mix16(in + 16 * i, s + 16 * (i - 8) + 3);
    return xxh3_avalanche(acc + acc_end);
}

#endif
