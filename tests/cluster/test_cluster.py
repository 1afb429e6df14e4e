"""Three real supervisors and a real etcd on loopback: one cache across hosts.

Each test builds its own cluster (etcd + 3 supervisors, 1 worker each) so a
host killed by one test cannot leak into the next.  Loads are counted by the
``counting`` loader in a file every worker appends to; a shared SQLite file
is the writable group's source, as a shared database would be.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.cluster import EXPIRING_LEASE_TTL, LEASE_TTL, TOKEN, Cluster
from tests.support.etcd import EtcdServer
from tests.support.loaders import count_loads
from tests.support.net import free_port
from tests.support.proc import request, start_supervisor, wait_until

# Every test here starts a real etcd and forks or spawns processes (see tests/support/marks.py).
pytestmark = [pytest.mark.etcd, pytest.mark.procs]

#: The ``counted`` group is compressed here, so every peer answer crosses the wire packed.
CONFIG = """
[[groups]]
name = "counted"
loader = "tests.support.loaders:counting"
codec = "zstd"

[[groups]]
name = "kv"
sqlite = "{db}"
"""
#: Loads take a moment, so concurrent misses for one key meet in a flight.
SLOW_LOADS = {"GEECACHE_TEST_LOAD_DELAY": "0.05"}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, config=CONFIG, env=SLOW_LOADS)
    yield c
    c.close()


@pytest.fixture
def expiring_cluster(tmp_path):
    """A cluster whose hosts leave the rings soon after their lease stops being kept alive."""
    c = Cluster(tmp_path, config=CONFIG, env=SLOW_LOADS, lease_ttl=EXPIRING_LEASE_TTL)
    yield c
    c.close()


def test_every_key_loaded_once_cluster_wide_and_owners_agree(cluster):
    keys = [f"user{i}" for i in range(30)]
    for key in keys:
        owners = {cluster.owner(h, key) for h in cluster.hosts}
        assert len(owners) == 1, (key, owners)
        for h in cluster.hosts:  # every host asked, in turn
            assert h.get(f"/api?group=counted&key={key}") == (200, f"value-{key}".encode())
    for key in keys:
        assert count_loads(cluster.count_file, key) == 1, key
    # Keys are spread: every host owns some of them.
    assert {cluster.owner(cluster.hosts[0], k) for k in keys} == {f"127.0.0.1:{h.port}" for h in cluster.hosts}
    stats = [h.admin_json("/stats")["counted"] for h in cluster.hosts]
    assert sum(s["loads"] for s in stats) == len(keys)
    assert sum(s["peer_hits"] for s in stats) >= len(keys)


def test_put_on_one_host_is_read_from_the_others(cluster):
    a, b, c = cluster.hosts
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for i in range(10):
        key = f"doc{i}"
        assert b.get(f"/api?group=kv&key={key}")[0] == 404
        assert a.request("PUT", f"/api?group=kv&key={key}", f"v1-{i}".encode(), auth)[0] == 204
        for _ in range(2):  # (a hot copy is kept at a key's second fetch: hot_after)
            assert b.get(f"/api?group=kv&key={key}") == (200, f"v1-{i}".encode())
            assert c.get(f"/api?group=kv&key={key}") == (200, f"v1-{i}".encode())
        # An update through a third host reaches hosts that held hot copies.
        assert c.request("PUT", f"/api?group=kv&key={key}", f"v2-{i}".encode(), auth)[0] == 204
        assert a.get(f"/api?group=kv&key={key}") == (200, f"v2-{i}".encode())
        assert b.get(f"/api?group=kv&key={key}") == (200, f"v2-{i}".encode())
        assert b.request("DELETE", f"/api?group=kv&key={key}", None, auth)[0] == 204
        assert a.get(f"/api?group=kv&key={key}")[0] == 404
        assert c.get(f"/api?group=kv&key={key}")[0] == 404


def _load_loop(hosts, stop, failures, done, keys):
    """GET keys round-robin from *hosts* until *stop*; bounded by count and time."""
    deadline = time.monotonic() + 60
    i = 0
    while not stop.is_set() and time.monotonic() < deadline and i < 5000:
        h = hosts[i % len(hosts)]
        key = keys[i % len(keys)]
        try:
            status, body = h.get(f"/api?group=counted&key={key}")
            if (status, body) != (200, f"value-{key}".encode()):
                failures.append((h.port, key, status, body[:100]))
        except OSError as exc:
            failures.append((h.port, key, "error", repr(exc)))
        done.append(1)
        i += 1


def test_sigkilled_host_leaves_the_ring_and_no_request_fails(expiring_cluster):
    cluster = expiring_cluster
    a, b, victim = cluster.hosts
    gone = f"127.0.0.1:{victim.port}"
    keys = [f"k{i}" for i in range(60)]
    victim_keys = [k for k in keys if cluster.owner(a, k) == gone]
    assert victim_keys
    for k in keys:
        assert a.get(f"/api?group=counted&key={k}")[0] == 200
    stop, failures, done = threading.Event(), [], []
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_load_loop, [a, b], stop, failures, done, keys) for _ in range(2)]
        # The whole machine dies: nothing revokes the lease, it has to expire.
        victim.send_signal(signal.SIGSTOP)  # no respawn while its children die
        for pid in victim.workers():         # its worker and its registrar
            os.kill(pid, signal.SIGKILL)
        victim.stop(signal.SIGKILL)
        wait_until(lambda: gone not in cluster.members(a) and gone not in cluster.members(b),
                   cluster.lease_ttl + 5, what="the killed host leaves both rings")
        stop.set()
        for f in futures:
            f.result()
    assert failures == []
    assert len(done) > 0
    for k in victim_keys:  # now owned and served by a survivor
        assert cluster.owner(a, k) in {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
        assert cluster.owner(a, k) == cluster.owner(b, k)
        assert b.get(f"/api?group=counted&key={k}") == (200, f"value-{k}".encode())


def test_sigterm_host_is_gone_from_the_ring_at_once(cluster):
    a, b, leaving = cluster.hosts
    gone = f"127.0.0.1:{leaving.port}"
    assert leaving.stop(signal.SIGTERM) == 0
    # The lease is revoked on the way out, so this does not wait for the TTL.
    assert gone not in cluster.etcd.keys("/geecache/registry/")
    wait_until(lambda: gone not in cluster.members(a) and gone not in cluster.members(b), 10,
               what="the stopped host leaves both rings")


def test_hosts_keep_answering_while_etcd_is_down(cluster):
    hosts = cluster.hosts
    before = [cluster.members(h) for h in hosts]
    cluster.etcd.stop()
    deadline = time.monotonic() + 10
    i = 0
    while time.monotonic() < deadline:
        h = hosts[i % 3]
        key = f"outage{i % 40}"
        assert h.get(f"/api?group=counted&key={key}") == (200, f"value-{key}".encode())
        i += 1
        time.sleep(0.01)
    assert [cluster.members(h) for h in hosts] == before
    cluster.etcd.restart()
    wait_until(lambda: len(cluster.etcd.keys("/geecache/registry/")) == 3, cluster.lease_ttl + 10,
               what="all hosts registered again")
    for key in (f"outage{j}" for j in range(40)):
        assert count_loads(cluster.count_file, key) == 1, key


@pytest.mark.parametrize(
    "method,path,headers,body,status",
    [
        ("GET", "/_geecache/counted/x", {}, None, 401),
        ("GET", "/_geecache/counted/x", {"Authorization": "Bearer nope"}, None, 401),
        ("GET", "/_geecache/nosuch/x", {"Authorization": f"Bearer {TOKEN}"}, None, 400),
        ("PUT", "/_geecache/kv/x", {"Authorization": f"Bearer {TOKEN}"}, b"\xff\xfe not protobuf", 400),
        ("PUT", "/_geecache/counted/x", {"Authorization": f"Bearer {TOKEN}"}, b"", 405),
        ("POST", "/_geecache/kv", {"Authorization": f"Bearer {TOKEN}"}, b"\x0a\xff\xff", 400),
    ],
)
def test_bad_peer_requests_get_4xx(tmp_path, method, path, headers, body, status):
    (tmp_path / "geecache.toml").write_text(CONFIG.format(db=tmp_path / "kv.db"))
    host = start_supervisor(tmp_path, "--config", str(tmp_path / "geecache.toml"), "--auth-token", TOKEN,
                            "--peers", "http://127.0.0.1:9", workers=1)
    try:
        got, _h, answer = request(host.port, method, path, body, headers)
        assert got == status, answer
        assert "error" in json.loads(answer)
    finally:
        host.stop()


def test_etcd_unreachable_at_start_serves_alone_then_joins(tmp_path):
    (tmp_path / "geecache.toml").write_text(CONFIG.format(db=tmp_path / "kv.db"))
    etcd = EtcdServer()  # ports chosen, server not started: unreachable
    port = free_port()
    host = start_supervisor(
        tmp_path, "--config", str(tmp_path / "geecache.toml"), "--etcd", etcd.endpoint,
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", str(LEASE_TTL),
        workers=1, port=port, wait=False, env={"GEECACHE_TEST_LOAD_DELAY": "0"})
    try:
        host.wait_ready(2)
        assert host.get("/api?group=counted&key=a") == (200, b"value-a")  # serving as a single host
        assert host.admin_json("/cluster")["members"] == [f"127.0.0.1:{port}"]
        wait_until(lambda: "unreachable" in host.log(), 10, what="a log line saying etcd is unreachable")
        etcd.start()
        wait_until(lambda: etcd.keys("/geecache/registry/") == [f"/geecache/registry/127.0.0.1:{port}"],
                   LEASE_TTL + 10, what="the host registered once etcd came up")
        assert host.get("/api?group=counted&key=b") == (200, b"value-b")
    finally:
        host.stop()
        etcd.close()
