"""A pause drops only what may be stale (invariant 9), with real hosts, etcd and signals.

A host with no peers keeps its whole cache across a SIGSTOP and across a
loader that blocks its loop.  In a cluster, a host SIGSTOPped while another
host rewrites 50 keys reads those 50 back new when it resumes, and keeps
serving everything else from its cache: it asked the others' write logs
which keys changed while it was away, and dropped only those.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.cluster import Cluster, member
from tests.support.host import ready_workers
from tests.support.loaders import count_loads
from tests.support.proc import REAL_PAUSES, start_supervisor, wait_until

pytestmark = pytest.mark.procs

#: How long a host is held stopped: well over the guard's threshold (0.9 s).
STOPPED_FOR = 2.0
#: How far back the other hosts' logs must reach before A is paused: a log younger
#: than the pause (its host just started) cannot vouch for it, and A would drop all.
LOG_REACH = 12.0


def _pauses_logged(host) -> int:
    return host.log().count("did not run for")


def _stats(host, group: str) -> dict:
    return host.admin_json("/stats")[group]


def test_a_host_with_no_peers_keeps_its_cache_across_a_sigstop_and_a_blocking_load(tmp_path):
    counts = tmp_path / "loads.txt"
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "counted"\nloader = "tests.support.loaders:counting"\n\n'
                   '[[groups]]\nname = "stall"\nloader = "tests.support.host_loaders:blocks_the_loop_briefly"\n')
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=1,
                         env={"GEECACHE_TEST_COUNT_FILE": str(counts), "GEECACHE_TEST_LOAD_DELAY": "0", **REAL_PAUSES})
    keys = [f"k{i}" for i in range(50)]
    try:
        for key in keys:
            assert h.get(f"/api?group=counted&key={key}") == (200, f"value-{key}".encode())
        assert count_loads(str(counts)) == len(keys)
        worker = ready_workers(h)[0]

        os.kill(worker, signal.SIGSTOP)
        try:
            time.sleep(STOPPED_FOR)  # the fault: the worker's loop does not run meanwhile
        finally:
            os.kill(worker, signal.SIGCONT)
        wait_until(lambda: _pauses_logged(h) == 1, 20, what="the pause logged")
        # A blocking load stalls the loop as a SIGSTOP does.
        assert h.get("/api?group=stall&key=block1") == (200, b"value-block1")
        wait_until(lambda: _pauses_logged(h) == 2, 20, what="the stall logged")

        for key in keys:
            assert h.get(f"/api?group=counted&key={key}") == (200, f"value-{key}".encode())
        log = h.log()
        print(log[log.index("did not run for") - 200:])
        assert count_loads(str(counts)) == len(keys), "the cache was dropped for a pause"
        assert log.count("no peers, nothing dropped") == 2
        stats = _stats(h, "counted")
        assert stats["pause_wipes"] == 0 and stats["pause_drops"] == 0
    finally:
        assert h.stop() == 0


@pytest.mark.etcd
def test_a_paused_host_drops_only_the_keys_written_elsewhere_meanwhile(tmp_path):
    cluster = Cluster(tmp_path, 3, env=REAL_PAUSES)
    try:
        a, b, c = cluster.hosts
        written = [f"doc{i}" for i in range(50)]
        loaded = [f"item{i}" for i in range(60)]  # never written: no log names them
        for key in written:
            assert cluster.put(b, key, b"old-" + key.encode()) == 204
        # A caches everything: its own keys as owned entries, the others' as hot copies (kept
        # at a key's second fetch: hot_after).
        for _ in range(2):
            assert cluster.read_all(a, "kv", written) == {k: b"old-" + k.encode() for k in written}
            assert cluster.read_all(a, "counted", loaded) == {k: b"value-" + k.encode() for k in loaded}
        mine = sum(cluster.owner(a, k) == member(a) for k in written)
        assert 0 < mine < len(written), "A should own some of the written keys and not all"
        for other in (b, c):
            wait_until(lambda: cluster.log_reaches_back(other, LOG_REACH), LOG_REACH + 30,
                       what=f"the write log of :{other.port} reaching back {LOG_REACH}s")
        loads_before = count_loads(str(tmp_path / "loads.txt"))
        before = _stats(a, "counted")

        cluster.pause(a)
        try:
            # Rewritten through B while A is stopped: forwards to A time out (or its breaker
            # is open, or the ring drops it) and B writes the source itself.
            for key in written:
                assert cluster.put(b, key, b"new-" + key.encode()) == 204
        finally:
            cluster.resume(a)
        wait_until(lambda: _pauses_logged(a) >= 1, 30, what="A's pause logged (after its drops)")
        cluster.wait_members([a, b, c])

        assert cluster.read_all(a, "kv", written) == {k: b"new-" + k.encode() for k in written}
        assert cluster.read_all(a, "counted", loaded) == {k: b"value-" + k.encode() for k in loaded}
        after = _stats(a, "counted")
        log = a.log()
        print(log[log.index("did not run for") - 200:])
        assert "dropped every cached copy" not in log
        assert log.count("did not run for") == 1  # one line per pause
        # Every key that was not written came from A's cache: none loaded, none fetched again.
        assert count_loads(str(tmp_path / "loads.txt")) == loads_before
        served_from_cache = (after["local_hits"] + after["hot_hits"]) - (before["local_hits"] + before["hot_hits"])
        assert served_from_cache == len(loaded)
        assert after["peer_hits"] == before["peer_hits"]
        kv = _stats(a, "kv")
        assert kv["pause_drops"] >= len(written) and kv["pause_wipes"] == 0
        assert "geecache_pause_drops_total" in a.admin_get("/metrics")[1].decode()
    finally:
        cluster.close()
