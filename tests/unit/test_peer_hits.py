"""The owner's compiled answer to a peer batch (``HitPath.peer_hits``) against the Python one.

``Router.peer_batch_fast`` answers a peer's batch of keys that are all cached here at once;
for the default group the compiled hit path makes that answer.  It may answer only what the
Python path answers, byte for byte (``ttl_left`` aside: it counts the clock), and it must
answer the common batch: ASCII keys, every one cached in the partition the ring picks, no
codec.  Checked on seeded random batches over an arena of owned, hot, misplaced, expiring,
expired, compressed and absent entries under a ring of three members, on a host alone, at
small key and byte limits, and on malformed and adversarial bodies (bounded counts;
scripts/compiled_memcheck.sh runs this file under valgrind).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from geecache.cluster import batchwire
from geecache.compression import pack
from geecache.cluster.pool import HTTPPool, StaticMembers
from geecache.geecachepb import BatchItem, BatchRequest
from geecache.group import Group
from geecache.shm import Arena
from geecache.storage import MemoryStorage
from workers.dataplane.routes import Router

_hitpath = pytest.importorskip("geecache._hitpath", reason="the compiled hit path is not built")

#: Share of the random cases to run (scripts/compiled_memcheck.sh runs a tenth under valgrind).
SCALE = float(os.environ.get("GEECACHE_FUZZ_SCALE", "1"))
ME, OTHERS = "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"]
URL = b"/_geecache/g/_batch"


def cases(n: int) -> range:
    return range(max(1, int(n * SCALE)))


@pytest.fixture
def arena():
    a = Arena.create(8 << 20, shards=4)  # the wall clock: peer_hits answers only by time.time
    yield a
    a.close()
    a.unlink()


def hosts(arena, *, alone=False, policy="lru", **limits):
    """(router, compiled reader, group, owns) of the default group "g" on *arena*."""
    peers = None if alone else HTTPPool(ME, StaticMembers([ME, *OTHERS]))
    group = Group("g", MemoryStorage(), max_bytes=1 << 20, cache=arena, peers=peers, policy=policy)
    router = Router({"g": group}, **limits)
    hp = arena.hit_reader(group.name, group._hot, _hitpath.HitPath, head=b"HEAD|", bounds=(0.001, float("inf")),
                          tally=[0, 0.0, 0, 0, 0], max_url=8192, max_header=16384, accept_ok=True)
    return router, hp, group, lambda key: group.peers.owns([key])[0]


def fill(arena, group, owns, rng, n=600):
    """Keys cached in their partition (a few in the wrong one), of every size and lifetime."""
    keys = [f"k{i}-" + "x" * rng.choice([0, 5, 60, 200, 230]) for i in range(n)]
    past = lambda: time.time() - 100  # noqa: E731 (written 100 s ago: a 50 s TTL is over)
    for key in keys:
        where = group.name if owns(key) else group._hot
        if rng.random() < 0.05:
            where = group._hot if where == group.name else group.name
        value = rng.randbytes(rng.choice([0, 1, 100, 127, 128, 3000, 20000]))
        ttl = rng.choice([0, 0, 0, 50, 50])
        arena._clock = past if ttl and rng.random() < 0.2 else time.time
        if rng.random() < 0.03:  # kept compressed (as a group that packs keeps them)
            codec, payload = pack(value, "gzip")
            arena.set(where, key, payload, ttl=ttl, codec=codec)
        else:
            arena.set(where, key, value, ttl=ttl)
    arena._clock = time.time
    return keys


def request(keys, group="g") -> bytes:
    msg = BatchRequest(group=group)
    for key in keys:
        msg.items.add(key=key)
    return msg.SerializeToString()


def same_answer(compiled: bytes, python: bytes) -> bool:
    """The same items; ttl_left may differ by the time between the two answers."""
    if compiled == python:
        return True
    a, b = batchwire.decode_response(compiled), batchwire.decode_response(python)
    return len(a) == len(b) and all(x[:4] == y[:4] and x[5:] == y[5:] and abs(x[4] - y[4]) < 5  # (ttl_left)
                                    for x, y in zip(a, b))


def common(arena, group, owns, keys, max_keys=1000) -> bool:
    """Whether the compiled path must answer a batch of *keys*: each one ASCII of at most
    MAX_HASHED bytes, cached uncompressed and live in the partition the ring picks."""
    if not keys or len(keys) > max_keys:
        return False
    for key in keys:
        if not key.isascii() or len(key) > _hitpath.MAX_HASHED:
            return False
        entry = arena.get_entry(group.name if owns(key) else group._hot, key)
        if entry is None or entry[1] != 0:
            return False
    return True


def check(router, hp, body, must=None):
    """``HitPath.peer_hits`` of *body* (None unless it answers), which must be the Python
    path's answer when it gives one, and give False only where the Python path finds a key
    nowhere; *must*: it answers.  The router, given the reader, answers as the Python path."""
    group = router.default_group
    compiled = hp.peer_hits(body, group.name.encode(), *group.peers.owned_vnodes(), router.batch_max_keys,
                            router.batch_max_bytes)
    routed = router.peer_batch_fast(URL, None, body, hp)
    python = router.peer_batch_fast(URL, None, body)
    if compiled is False:  # a key not cached: the Python path finds it nowhere either
        assert python is None, body
    elif compiled is not None:
        assert python is not None and same_answer(compiled, python), body
    elif must:
        pytest.fail(f"the compiled path left a common batch to Python: {body!r}")
    assert (routed is None) == (python is None) and (routed is None or same_answer(routed, python)), body
    return None if compiled is False else compiled


@pytest.mark.parametrize("alone", [False, True], ids=["three-members", "alone"])
def test_the_compiled_batch_answers_what_the_python_path_answers(arena, alone):
    rng = random.Random(5)
    router, hp, group, owns = hosts(arena, alone=alone)
    keys = fill(arena, group, owns, rng)
    musts = 0
    for _ in cases(1500):
        batch = [rng.choice(keys) if rng.random() < 0.97 else f"absent-{rng.randrange(50)}"
                 for _ in range(rng.choice([1, 2, 3, 6, 20, 64]))]
        must = common(arena, group, owns, batch)
        musts += must
        check(router, hp, request(batch, rng.choice(["g", ""])), must)
    assert musts > 30 * SCALE  # the common case came up, and was answered in C


def test_each_partition_is_the_one_the_ring_picks(arena):
    router, hp, group, owns = hosts(arena)
    mine = [f"m{i}" for i in range(400) if owns(f"m{i}")][:20]
    theirs = [f"t{i}" for i in range(400) if not owns(f"t{i}")][:20]
    for key in mine:
        arena.set(group._hot, key, b"hot " + key.encode())  # cached, but not where an owner looks
    for key in theirs:
        arena.set(group.name, key, b"main " + key.encode())
    for key in mine + theirs:
        assert check(router, hp, request([key])) is None, key
    for key in mine:
        arena.set(group.name, key, b"owned " + key.encode())
    for key in theirs:
        arena.set(group._hot, key, b"hot copy " + key.encode())
    answer = check(router, hp, request(mine + theirs), must=True)
    values = [item[1] for item in batchwire.decode_response(answer)]
    assert values == [b"owned " + k.encode() for k in mine] + [b"hot copy " + k.encode() for k in theirs]


def test_a_compressed_entry_is_left_to_the_python_path_which_answers_it(arena):
    router, hp, group, owns = hosts(arena)
    key, value = "zipped", b"v" * 1000
    codec, payload = pack(value, "gzip")
    arena.set(group.name if owns(key) else group._hot, key, payload, codec=codec)
    assert check(router, hp, request([key])) is None  # a doubt, not a miss
    answer = router.peer_batch_fast(URL, None, request([key]), hp)
    assert [item[1] for item in batchwire.decode_response(answer)] == [value]


def test_the_limits_on_keys_and_bytes_hold(arena):
    router, hp, group, owns = hosts(arena, batch_max_keys=4, batch_max_bytes=1000)
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        arena.set(group.name if owns(key) else group._hot, key, b"v" * 300)
    assert check(router, hp, request(keys[:3]), must=True) is not None  # 900 bytes, 3 keys
    assert check(router, hp, request(keys[:4])) is None  # 1200 bytes: over batch_max_bytes
    small = Router({"g": group}, batch_max_keys=4)
    assert check(small, hp, request(keys[:4]), must=True) is not None
    assert check(small, hp, request(keys[:5])) is None  # five keys: over batch_max_keys
    # More keys than the C side takes at once: the Python path answers.
    many = [f"n{i}" for i in range(300)]
    for key in many:
        arena.set(group.name if owns(key) else group._hot, key, b"v")
    assert check(Router({"g": group}), hp, request(many)) is None
    assert Router({"g": group}).peer_batch_fast(URL, None, request(many)) is not None


def adversarial(keys) -> list[bytes]:
    """Bodies the library reads one way and a careless reader another."""
    one = request(keys[:1])
    item = BatchItem(key=keys[0]).SerializeToString()
    return [
        b"",
        request([]),
        request(keys[:2], group="other"),
        request(keys[:2]) + b"\x0a\x01g",  # the group twice (the last counts)
        b"\x12" + bytes([len(item) + 2]) + item + b"\x18\x01",  # an item with a codec too
        b"\x12" + bytes([2 * len(item)]) + item + item,  # the key twice in one item
        b"\x12\x00",  # an item of no key
        one + b"\x1a\x00",  # an unknown field
        one + b"\x12",  # a truncated item
        one[:-1],
        b"\x12\x85\x80\x80\x80\x80\x00",  # a length of more than five bytes
        b"\x12\xff\xff\xff\xff\x0f",  # a length past the body
        request(["\u00e9t\u00e9"]),  # UTF-8 beyond ASCII: the library checks it
        b"\x12\x04\x0a\x02\xc3\x28",  # not UTF-8
        request(["k" * 241]),  # over MAX_HASHED
        request(["k" * 251]),  # over the key limit
        b"\x12\x03\x0a\x01\x00",  # a NUL key
    ]


def test_malformed_and_adversarial_bodies_are_left_to_the_python_path_or_answered_alike(arena):
    rng = random.Random(9)
    router, hp, group, owns = hosts(arena)
    keys = fill(arena, group, owns, rng, n=200)
    cached = [k for k in keys if len(k) < 40 and common(arena, group, owns, [k])]
    arena.set(group.name if owns("\x00") else group._hot, "\x00", b"nul")
    for body in adversarial(cached):
        check(router, hp, body)
    for _ in cases(3000):
        body = bytearray(request(rng.sample(cached, rng.choice([1, 2, 5]))))
        for _ in range(rng.choice([1, 2, 4])):
            op = rng.randrange(3)
            at = rng.randrange(len(body) + 1)
            if op == 0 and body:
                body[min(at, len(body) - 1)] = rng.randrange(256)
            elif op == 1:
                body[at:at] = rng.randbytes(rng.choice([1, 3]))
            else:
                del body[at:at + rng.choice([1, 2, 9])]
        check(router, hp, bytes(body))


def test_a_hit_of_the_batch_raises_the_policy_byte_and_counts_one_peer_request(arena):
    router, hp, group, owns = hosts(arena, policy="s3fifo")  # a reference byte that counts to 3
    keys = [f"k{i}" for i in range(6)]
    for key in keys:
        arena.set(group.name if owns(key) else group._hot, key, b"v")
    refs = {key: ref_at(arena, group.name if owns(key) else group._hot, key) for key in keys}
    seen = []
    for _ in range(4):
        before = arena.stats_sink(group.name).snapshot()["peer_requests"]
        assert router.peer_batch_fast(URL, None, request(keys), hp) is not None
        assert arena.stats_sink(group.name).snapshot()["peer_requests"] == before + 1
        seen.append([arena._mm[refs[key]] for key in keys if owns(key)])
    assert seen == [[min(n, 3)] * len(seen[0]) for n in range(1, 5)] and seen[0]


def ref_at(arena, partition: str, key: str) -> int:
    """The offset of *key*'s policy byte in *partition* (its slot's, as get_entry raises it)."""
    rec = arena._group(partition)
    h, s, i = arena._locate(rec, key.encode())
    i = arena._find(s, h, key.encode(), rec.idx, i)
    return arena._refs_off + s * arena._sps + i
