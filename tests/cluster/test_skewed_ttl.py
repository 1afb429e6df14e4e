"""Per-item TTLs between hosts whose clocks disagree by an hour (invariant 10, one clock per expiry).

Three real hosts: X with the right time, Y an hour ahead and Z an hour
behind (libfaketime, preloaded into each host's processes).  A ``PUT ?ttl=6``
through any host for a key any other host owns reads back on every host at
once (not dead on arrival) and on none past its 6 s (not alive for an hour):
TTLs and deadlines travel as durations and each host turns them into times
by its own clock; the owner stores the row by its clock.  Writes without a
TTL stay ordered as before.
"""

from __future__ import annotations

import glob
import sqlite3
import time

import pytest

from tests.support.cluster import Cluster, member

#: Debian's faketime package puts the library under the architecture's directory.
FAKETIME_LIB = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
                                + glob.glob("/usr/lib/faketime/libfaketime.so.1"))), None)

pytestmark = [pytest.mark.etcd, pytest.mark.procs,
              pytest.mark.skipif(FAKETIME_LIB is None, reason="libfaketime is not installed "
                                 "(apt-get install faketime)")]

HOUR = 3600.0
TTL = 6
#: How long after its TTL a value may still be read: the answer's own time on the wire and
#: the test's polling, not a clock's skew.
SLACK = 2.0


def skewed(offset: str) -> dict:
    """The environment that sets a host's wall clock *offset* ("+1h") from the machine's."""
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture(scope="module")
def skewed_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("skew"), 1)
    try:
        cluster.add_host(env=skewed("+1h"))
        cluster.add_host(env=skewed("-1h"))
        cluster.wait_members(cluster.hosts)
        yield cluster
    finally:
        cluster.close()


def _keys_owned_by(cluster, owner, prefix: str, n: int = 4) -> list[str]:
    keys = []
    for i in range(2000):
        key = f"{prefix}{i}"
        if cluster.owner(cluster.hosts[0], key) == member(owner):
            keys.append(key)
            if len(keys) == n:
                return keys
    raise AssertionError(f"fewer than {n} keys of {member(owner)}")


def _row_expire_at(cluster, key: str) -> float:
    conn = sqlite3.connect(cluster.db)
    try:
        return conn.execute("SELECT expire_at FROM kv WHERE key = ?", (key,)).fetchone()[0]
    finally:
        conn.close()


def test_a_ttl_put_through_any_host_lives_its_ttl_on_every_host(skewed_cluster):
    cluster = skewed_cluster
    x, y, z = cluster.hosts
    offset = {member(x): 0.0, member(y): HOUR, member(z): -HOUR}
    cases = [(x, y), (x, z), (y, x), (z, x), (y, z), (z, y)]  # (through, owner)
    written = {}  # key -> (owner, real time just before its PUT)
    for n, (through, owner) in enumerate(cases):
        for key in _keys_owned_by(cluster, owner, f"ttl{n}-"):
            written[key] = (owner, time.time())
            assert cluster.put(through, key, key.encode(), ttl=TTL) == 204
    put_done = time.time()

    # Not dead on arrival: every host reads each value at once.
    dead = [(key, member(h)) for key in written for h in cluster.hosts if cluster.read(h, key) is None]
    assert time.time() - put_done < TTL - SLACK, "the reads took too long to tell"
    assert dead == [], f"{len(dead)} reads found a fresh ttl={TTL} value gone, e.g. {dead[:4]}"
    # The row is kept by its owner's clock: it expires TTL seconds after the write, by that clock.
    wrong = {}
    for key, (owner, before) in written.items():
        expected = before + offset[member(owner)] + TTL
        if not expected - 1 <= _row_expire_at(cluster, key) <= expected + (put_done - before) + 1:
            wrong[key] = (member(owner), _row_expire_at(cluster, key) - (before + TTL))
    assert wrong == {}, f"rows not kept by their owner's clock (key: owner, offset from real): {wrong}"

    # Not alive past its TTL: once it is over, no host serves any of them.
    served_late = []
    deadline = put_done + TTL + SLACK + 10
    remaining = {(key, i) for key in written for i in range(3)}
    while remaining and time.time() < deadline:
        for key, i in sorted(remaining):
            asked = time.time()
            if cluster.read(cluster.hosts[i], key) is None:
                remaining.discard((key, i))
            elif asked > written[key][1] + TTL + SLACK:
                served_late.append((key, member(cluster.hosts[i]), round(asked - written[key][1], 1)))
                remaining.discard((key, i))
        time.sleep(0.2)  # polling the expiry; each read above is what is checked
    assert served_late == [], f"values served past their ttl (key, host, seconds after the PUT): {served_late[:6]}"
    assert remaining == set()


def test_writes_without_ttl_stay_ordered_under_skew(skewed_cluster):
    cluster = skewed_cluster
    keys = [f"plain{i}" for i in range(12)]
    last = {}
    for round_ in range(3):
        for i, key in enumerate(keys):
            host = cluster.hosts[(i + round_) % 3]
            value = f"{key}-v{round_}-via{host.port}".encode()
            assert cluster.put(host, key, value) == 204
            last[key] = value
    for h in cluster.hosts:
        got = {key: cluster.read(h, key) for key in keys}
        assert got == last, member(h)
    assert all(cluster.source_value(key) == last[key] for key in keys)
