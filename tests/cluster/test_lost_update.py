"""No acknowledged write is undone, with real hosts, etcd and signals.

The sequence found by the adversarial run: owner C of a key stalls (SIGSTOP);
a PUT v1 through host A times out on C after the peer read timeout, A writes
v1 through the shared source itself and answers 204; C's lease expires, the
ring drops it, a PUT v2 through A answers 204.  C resumes with v1 still
queued.  Before versions and deadlines C applied it: the source held v1 for
good and every host served v1.  Now C refuses it (its deadline has passed,
and its version is older than v2's), and every host and the source hold v2.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.support.cluster import EXPIRING_LEASE_TTL, Cluster, member
from tests.support.proc import REAL_PAUSES, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.procs]


def key_owned_by(cluster: Cluster, host, owner, prefix: str = "doc") -> str:
    for i in range(500):
        key = f"{prefix}{i}"
        if cluster.owner(host, key) == member(owner):
            return key
    raise AssertionError(f"no key of {member(owner)} among 500")


def test_the_lost_update_sequence_ends_with_the_last_acknowledged_write(tmp_path):
    cluster = Cluster(tmp_path, 3, lease_ttl=EXPIRING_LEASE_TTL, env=REAL_PAUSES)
    try:
        a, b, c = cluster.hosts
        key = key_owned_by(cluster, a, c)
        # v0 through the owner, read everywhere: C caches it as its own, A and B as hot copies
        # (kept at a key's second fetch: hot_after).
        assert cluster.put(c, key, b"v0") == 204
        assert [cluster.read(h, key) for h in (a, b, c, a, b)] == [b"v0"] * 5

        cluster.pause(c)
        # The forward to C times out (2 s); A writes v1 itself and acknowledges it.
        assert cluster.put(a, key, b"v1") == 204
        # C's lease expires: A and B drop it from their rings.
        cluster.wait_members([a, b])
        assert cluster.put(a, key, b"v2") == 204
        assert [cluster.read(h, key) for h in (a, b)] == [b"v2"] * 2

        cluster.resume(c)  # with the forwarded v1 still queued in its socket
        cluster.wait_members([a, b, c])  # its registrar re-registers; every ring has it again
        # C has run its loop since (it answered /cluster): the queued v1 was handled.
        final = {"source": cluster.source_value(key)}
        for h in (a, b, c):
            final[member(h)] = cluster.read(h, key)
        print("final state after the lost-update sequence:", final)
        assert final == {"source": b"v2", **{member(h): b"v2" for h in (a, b, c)}}
        # And it stays so: C refused the late write rather than applying it later.
        refused = c.admin_json("/stats")["kv"]["writes_refused"]
        assert refused >= 1
        assert cluster.source_value(key) == b"v2"
    finally:
        cluster.close()


def test_randomised_writers_pauses_and_ring_changes_end_with_the_last_acknowledged_writes(tmp_path):
    """Three writers, each the only writer of its keys, write and delete through random hosts
    while one host at a time stalls (some until the others' rings drop it: ring changes) and a fourth
    host joins and leaves.  The last stall ends after the writers have stopped, so a write the
    stalled host still held cannot be overwritten by a later one.  At the end, for every key,
    the source and every host hold the writer's last acknowledged write.

    A write that fails (a stalled host may hold SQLite's write lock past the busy timeout: a
    502) has an unknown outcome, so its key is written again until a write is acknowledged:
    the versions keep the failed one from landing after that."""
    rng = random.Random(11)
    cluster = Cluster(tmp_path, 3, lease_ttl=EXPIRING_LEASE_TTL, env=REAL_PAUSES)
    lock = threading.Lock()
    serving = list(cluster.hosts)   # hosts a writer may send to (not paused, in every ring)
    in_flight = {}                  # host pid -> requests under way
    last_ack: dict[str, bytes | None] = {}
    counts = {"puts": 0, "deletes": 0, "failed": 0}
    dirty: set[str] = set()  # keys whose last write failed: written again before the end
    problems = []
    stop = threading.Event()

    def pick_host(r):
        with lock:
            host = r.choice(serving)
            in_flight[host.pid] = in_flight.get(host.pid, 0) + 1
            return host

    def done(host):
        with lock:
            in_flight[host.pid] -= 1

    def write(n: int, r, key: str, host, seq: int) -> bool:
        """One write of *key* through *host*; True when acknowledged (and recorded)."""
        try:
            if r.random() < 0.15:
                status = cluster.delete(host, key)
                if status in (204, 404):
                    counts["deletes"] += 1
                    last_ack[key] = None
                    return True
            else:
                value = f"{n}-{seq}".encode()
                status = cluster.put(host, key, value)
                if status == 204:
                    counts["puts"] += 1
                    last_ack[key] = value
                    return True
            if status < 500:
                problems.append((key, status))
        except OSError:
            pass
        counts["failed"] += 1
        return False

    def writer(n: int) -> None:
        r = random.Random(n)
        keys = [f"w{n}-k{i}" for i in range(4)]
        deadline = time.monotonic() + 120
        seq = 0
        while not stop.is_set() and time.monotonic() < deadline:
            mine = sorted(dirty & set(keys))
            key = mine[0] if mine else r.choice(keys)
            host = pick_host(r)
            seq += 1
            try:
                if write(n, r, key, host, seq):
                    dirty.discard(key)
                else:
                    dirty.add(key)
            finally:
                done(host)

    def quiesce(host):
        """Take *host* off the writers' list and wait until nothing is in flight to it."""
        with lock:
            serving.remove(host)
        wait_until(lambda: in_flight.get(host.pid, 0) == 0, 30, what="requests to drain")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    joined = None
    try:
        for t in threads:
            t.start()
        for round_ in range(4):
            victim = rng.choice(cluster.hosts[:3])
            quiesce(victim)
            cluster.pause(victim)
            stall = rng.choice([0.5, 1.5, None])
            if stall is None:  # a stall that outlasts the lease: it leaves the others' rings
                cluster.wait_members([h for h in cluster.hosts if h is not victim], timeout=60)
            else:              # a short stall: whether it outlasts the lease does not matter
                time.sleep(stall)
            cluster.resume(victim)
            cluster.wait_members(cluster.hosts, timeout=30)
            with lock:
                serving.append(victim)
            if round_ == 1:  # a ring change without a pause: a host joins ...
                joined = cluster.add_host()
                cluster.wait_members(cluster.hosts, timeout=30)
                with lock:
                    serving.append(joined)
            if round_ == 2:  # ... and leaves
                quiesce(joined)
                assert joined.stop() == 0
                cluster.hosts.remove(joined)
                cluster.wait_members(cluster.hosts, timeout=30)
            time.sleep(0.5)
        # The last stall outlasts the lease and the writers: nothing written later heals
        # what the stalled host might still do with the writes it held.
        victim = rng.choice(cluster.hosts)
        quiesce(victim)
        cluster.pause(victim)
        cluster.wait_members([h for h in cluster.hosts if h is not victim], timeout=60)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        cluster.resume(victim)
        assert problems == []
        cluster.wait_members(cluster.hosts, timeout=30)
        # Keys whose last write failed are written until one is acknowledged.
        r = random.Random(99)
        for key in sorted(dirty):
            n = int(key[1:key.index("-")])
            wait_until(lambda: write(n, r, key, r.choice(cluster.hosts), 10**6), 30, interval=0.2,
                       what=f"a write of {key} to be acknowledged")
        assert len(last_ack) == 12
        wrong = {}
        for key, want in sorted(last_ack.items()):
            got = {"source": cluster.source_value(key)}
            for h in cluster.hosts:
                got[member(h)] = cluster.read(h, key)
            if set(got.values()) != {want}:
                wrong[key] = (want, got)
        print(f"{counts['puts']} puts and {counts['deletes']} deletes acknowledged, "
              f"{counts['failed']} failed; keys not at their last acknowledged write: "
              f"{len(wrong)} of {len(last_ack)}")
        assert wrong == {}, wrong
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        cluster.close()
