"""A host back from a warm restart serves no value overwritten while it was away (invariant 9).

Host A is warm-stopped (SIGUSR1: its arena stays, its lease is left to
expire), 50 keys are rewritten through host B meanwhile, and A starts again
on its arena.  Before its workers serve, they ask the other hosts' write
logs which keys were written while A was away and drop A's copies of those:
every rewritten key reads back new through A at once, and what was not
written is still served from A's cache.
"""

from __future__ import annotations

import signal

import pytest

from tests.support.cluster import Cluster, member
from tests.support.loaders import count_loads
from tests.support.proc import REAL_PAUSES, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.procs]

#: How far back B's and C's logs must reach before A stops (a younger log cannot vouch).
LOG_REACH = 12.0


def test_a_warm_restarted_host_serves_no_value_written_while_it_was_away(tmp_path):
    # A lease longer than the restart: A stays in every ring while it is away.
    cluster = Cluster(tmp_path, 3, lease_ttl=20, env=REAL_PAUSES)
    try:
        a, b, c = cluster.hosts
        written = [f"doc{i}" for i in range(50)]
        loaded = [f"item{i}" for i in range(60)]  # never written
        for key in written:
            assert cluster.put(b, key, b"old-" + key.encode()) == 204
        assert cluster.read_all(a, "kv", written) == {k: b"old-" + k.encode() for k in written}
        assert cluster.read_all(a, "counted", loaded) == {k: b"value-" + k.encode() for k in loaded}
        mine = [k for k in written if cluster.owner(a, k) == member(a)]
        mine_loaded = [k for k in loaded if cluster.owner(a, k) == member(a)]
        assert mine and mine_loaded, "A should own some keys of each kind"
        for other in (b, c):
            wait_until(lambda: cluster.log_reaches_back(other, LOG_REACH), LOG_REACH + 30,
                       what=f"the write log of :{other.port} reaching back {LOG_REACH}s")
        loads_before = count_loads(str(tmp_path / "loads.txt"))

        assert a.stop(signal.SIGUSR1) == 0
        for key in written:  # A is down: B writes the source itself
            assert cluster.put(b, key, b"new-" + key.encode()) == 204
        a = cluster.start_again(a)
        log = a.log()
        assert "reattached arena" in log, log

        got = cluster.read_all(a, "kv", written)
        stale = sorted(k for k in written if got[k] != b"new-" + k.encode())
        assert stale == [], f"{len(stale)} stale reads after the warm restart, e.g. {stale[:5]}"
        # A's own never-written keys came from its reattached cache, not the source.
        assert cluster.read_all(a, "counted", mine_loaded) == {k: b"value-" + k.encode() for k in mine_loaded}
        assert count_loads(str(tmp_path / "loads.txt")) == loads_before
        log = a.log()
        print(log[log.index("reattached arena"):])
        assert "reattached after" in log and "other hosts wrote meanwhile" in log
        assert a.admin_json("/stats")["kv"]["pause_drops"] >= len(written)
    finally:
        cluster.close()
