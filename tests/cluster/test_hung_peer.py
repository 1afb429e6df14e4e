"""A hung peer costs one timeout per cooldown, not one per request.

Host C is stopped (SIGSTOP: its sockets still accept, nothing answers) while
its lease keeps it in the ring.  Clients ask host A for keys C owns, each key
new (so each needs its owner).  Before the breaker, every one of them waited
out the peer read timeout (2 s) before A loaded it itself.  Now the first
timeout opens C's breaker: A serves C's keys by local loads at once, and
lets one probe through per cooldown.  Counted, not timed: A's ``peer_errors``
(calls to C that failed, each a full timeout) against the requests it routed
around C (``peer_skipped``).  The load runs until A has routed ROUTED_AROUND
requests around C, however fast or slow the machine, bounded in requests and
time; the probes allowed are those of the cooldowns that fit in the time it took.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from geecache.cluster.consistenthash import Ring
from tests.support.cluster import Cluster, member
from tests.support.proc import request, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.procs]

CLIENTS = 4
#: Requests A must route around C before the load stops: the condition the test is about.
ROUTED_AROUND = 200
#: Bounds of the load while C hangs, whatever the machine's speed.
MAX_REQUESTS = 50_000
MAX_SECONDS = 60.0
#: The breaker's first cooldown (the default breaker_cooldown); each failed probe doubles it.
COOLDOWN = 1.0


def probes_within(seconds: float) -> int:
    """How many cooldowns (1 s, 2 s, 4 s ...) end within *seconds*: the probes the breaker lets through."""
    n, ended, cooldown = 0, COOLDOWN, COOLDOWN
    while ended <= seconds:
        n, cooldown = n + 1, cooldown * 2
        ended += cooldown
    return n


def test_a_hung_peer_costs_a_timeout_per_cooldown_not_per_request(tmp_path):
    # A long lease: C stays in every ring for the whole hang, as in the run.
    cluster = Cluster(tmp_path, 3, lease_ttl=30)
    try:
        a, b, c = cluster.hosts
        ring = Ring()
        ring.add(*cluster.members(a))
        # Unbounded: a fast machine must not run out of keys.
        keys = (k for k in (f"hung{i}" for i in itertools.count()) if ring.get(k) == member(c))
        first = next(keys)
        assert cluster.owner(a, first) == member(c)  # the local ring agrees with A's
        assert a.get(f"/api?group=counted&key={first}")[0] == 200  # a pooled connection to C
        before = a.admin_json("/stats")["counted"]

        cluster.pause(c)
        lock = threading.Lock()
        results = []  # (ok, seconds) per request
        enough = threading.Event()
        started_at = time.monotonic()
        end = started_at + MAX_SECONDS

        def client():
            while not enough.is_set() and time.monotonic() < end:
                with lock:
                    if len(results) >= MAX_REQUESTS:
                        return
                    key = next(keys)
                started = time.monotonic()
                status, _h, body = request(a.port, "GET", f"/api?group=counted&key={key}", timeout=15)
                ok = status == 200 and body == f"value-{key}".encode()
                with lock:
                    results.append((ok, time.monotonic() - started))

        def routed_around() -> int:
            return a.admin_json("/stats")["counted"].get("peer_skipped", 0) - before.get("peer_skipped", 0)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: routed_around() >= ROUTED_AROUND or not any(t.is_alive() for t in threads),
                       MAX_SECONDS + 30, interval=0.2, what="A routing requests around C")
        finally:
            enough.set()
            for t in threads:
                t.join(60)
        elapsed = time.monotonic() - started_at
        assert not any(t.is_alive() for t in threads)
        after = a.admin_json("/stats")["counted"]
        cluster.resume(c)

        timeouts = after["peer_errors"] - before["peer_errors"]
        skipped = after.get("peer_skipped", 0) - before.get("peer_skipped", 0)
        failed = sum(1 for ok, _ in results if not ok)
        slow = sum(1 for _, seconds in results if seconds >= 1.0)  # reported, not asserted
        print(f"while C hung for {elapsed:.1f} s: {len(results)} requests, {failed} failed, "
              f"{timeouts} waited out a peer timeout ({slow} took >= 1 s), {skipped} routed around C")
        assert failed == 0
        # The breaker opened and served C's keys without asking C: the case this test is about.
        assert skipped >= ROUTED_AROUND, (skipped, len(results), elapsed)
        # The requests in flight when C stopped each pay one timeout; after that, one probe per
        # cooldown (1 s, doubling) that ended while the load ran, and one more in flight at
        # its end.  Before the breaker this was every request.
        assert timeouts <= CLIENTS + probes_within(elapsed) + 1, (timeouts, len(results), elapsed)
        # C back: a probe gets through within a (grown) cooldown, an answer closes the breaker,
        # and C's keys come from C again.
        hits = after["peer_hits"]

        def asks_c_again():
            key = next(keys)
            assert a.get(f"/api?group=counted&key={key}")[0] == 200
            return a.admin_json("/stats")["counted"]["peer_hits"] > hits

        wait_until(asks_c_again, 40, interval=0.2, what="A to call C again")
        assert a.admin_json("/cluster")["breakers"]["peers"] == {}
    finally:
        cluster.close()
