"""A PUT with ?ttl=S is gone after S on every host (memcached exptime, Redis SET EX).

The group's ``ttl`` is another thing: a freshness bound on cached copies
(expire, then load again from the source), tested in test_http_api.
"""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster
from tests.support.proc import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.procs]


def test_an_item_ttl_expires_the_value_on_every_host_and_in_the_source(tmp_path):
    cluster = Cluster(tmp_path, 3)
    try:
        a, b, c = cluster.hosts
        keys = [f"session{i}" for i in range(6)]  # spread over the owners
        for key in keys:
            assert cluster.put(a, key, b"token", ttl=1) == 204
            assert cluster.put(a, key + "-kept", b"stays") == 204
        # Every host reads them now, twice: owned copies on the owners, hot copies elsewhere
        # (kept at a key's second fetch: hot_after).
        for h in cluster.hosts * 2:
            assert [cluster.read(h, k) for k in keys] == [b"token"] * len(keys)

        def gone_everywhere():
            return all(cluster.read(h, k) is None for h in cluster.hosts for k in keys)

        # Bounded wait (no duration asserted).  Before, a copy that expired was loaded
        # again from the source, which kept the value forever: 200 on every host.
        wait_until(gone_everywhere, 15, interval=0.2, what="the ttl'd values to be gone everywhere")
        assert [cluster.source_value(k) for k in keys] == [None] * len(keys)
        for h in cluster.hosts:
            assert [cluster.read(h, k + "-kept") for k in keys] == [b"stays"] * len(keys)
        # An expired key can be written again, without a ttl this time.
        assert cluster.put(b, keys[0], b"again") == 204
        assert [cluster.read(h, keys[0]) for h in cluster.hosts] == [b"again"] * 3
    finally:
        cluster.close()
