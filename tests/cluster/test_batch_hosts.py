"""Batches against real hosts: the public ``POST /api/batch`` and the clients' ``*_many``.

One supervisor serves a writable SQLite group and a counting loader group;
three supervisors listing each other with ``--peers`` show that a batch sends
one peer request per owner (the owners' ``peer_requests``) and answers right.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from geecache.client import AsyncClient, Client
from geecache.errors import InvalidKeyError, RefusedError
from geecache.geecachepb import BatchItem, BatchRequest, BatchResponse
from tests.support.loaders import count_loads
from tests.support.cluster import static_hosts
from tests.support.proc import start_supervisor, wait_until

pytestmark = pytest.mark.procs

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(tmp_path) -> str:
    path = tmp_path / "geecache.toml"
    path.write_text(f'[[groups]]\nname = "s"\nsqlite = "{tmp_path / "s.db"}"\n\n'
                    '[[groups]]\nname = "counted"\nloader = "tests.support.loaders:counting"\n')
    return str(path)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    h = start_supervisor(tmp, "--config", _config(tmp), "--auth-token", TOKEN, "--batch-max-keys", "5",
                         "--batch-max-bytes", "4KiB", workers=1,
                         env={"GEECACHE_TEST_COUNT_FILE": str(tmp / "loads.txt"), "GEECACHE_TEST_LOAD_DELAY": "0"})
    h.count_file = tmp / "loads.txt"
    yield h
    h.stop()


def _client(host, token=TOKEN):
    return Client(f"http://127.0.0.1:{host.port}", token=token,
                  admin_urls=f"http://127.0.0.1:{host.admin_port}")


def _post(host, query: str, keys, headers=None):
    body = BatchRequest(items=[BatchItem(key=k) for k in keys]).SerializeToString()
    return host.request("POST", "/api/batch?" + query, body, headers)


def test_set_get_delete_many_with_missing_keys_and_binary_values(host):
    binary = {"b0": bytes(range(256)), "b1": b"\x00\r\n\r\n\x00", "sp ace/&?": b"", "ключ": b"\xff" * 10}
    with _client(host) as c:
        c.set_many(binary, group="s")
        got = c.get_many(list(binary) + ["nope"], group="s")
        assert got == binary                                        # found keys only
        assert c.get_many(["b0", "nope"], group="s", fill=None) == {"b0": binary["b0"], "nope": None}
        assert c.get("nope", group="s", default=None) is None
        assert c.get("b1", group="s", default=None) == binary["b1"]
        assert c.delete_many(["b0", "b1", "nope"], group="s") == 2
        assert c.get_many(["b0", "b1", "ключ"], group="s") == {"ключ": binary["ключ"]}
        c.set_many({"t": "text"}, group="s", ttl=30)
        assert c.get_many(["t"], group="s") == {"t": b"text"}
        assert c.get_many([], group="s") == {}


def test_async_client_many(host):
    async def go():
        async with AsyncClient(f"http://127.0.0.1:{host.port}", token=TOKEN) as c:
            await c.set_many({"a1": b"1", "a2": b"2"}, group="s")
            assert await c.get_many(["a1", "a2", "a3"], group="s") == {"a1": b"1", "a2": b"2"}
            assert await c.get_many(["a3"], group="s", fill=b"") == {"a3": b""}
            assert await c.get("a3", group="s", default=None) is None
            assert await c.delete_many(["a1", "a3"], group="s") == 1

    asyncio.run(go())


def test_the_wire_answers_every_key_in_order(host):
    with _client(host) as c:
        c.set_many({"w1": b"x"}, group="s")
    status, _h, body = _post(host, "group=s&op=get", ["w2", "w1", "w1"])
    assert status == 200
    items = BatchResponse.FromString(body).items
    assert [(i.key, i.status, i.value) for i in items] == [("w2", 404, b""), ("w1", 200, b"x"), ("w1", 200, b"x")]


def test_loads_of_a_batch_go_through_the_loader_once_per_key(host):
    before = count_loads(str(host.count_file))
    with _client(host) as c:
        got = c.get_many(["c1", "c2", "missing-1", "c1"], group="counted")
        assert got == {"c1": b"value-c1", "c2": b"value-c2"}
        assert c.get_many(["c1", "c2"], group="counted") == got   # now from the arena
    assert count_loads(str(host.count_file)) - before == 3


def test_writes_need_the_token_reads_do_not(host):
    with _client(host, token=None) as c:
        with pytest.raises(RefusedError) as err:
            c.set_many({"x": b"1"}, group="s")
        assert err.value.status == 401
        with pytest.raises(RefusedError) as err:
            c.delete_many(["x"], group="s")
        assert err.value.status == 401
        assert c.get_many(["x"], group="s") == {}
    status, headers, _ = _post(host, "group=s&op=delete", ["x"])
    assert status == 401 and "www-authenticate" in {k.lower() for k in headers}


def test_bounds_are_clear_413s(host):
    status, _h, body = _post(host, "group=s&op=get", [f"k{i}" for i in range(6)])
    assert status == 413 and "batch_max_keys (5)" in json.loads(body)["error"]
    with _client(host) as c:
        with pytest.raises(RefusedError) as err:               # a body over batch_max_bytes
            c.set_many({f"big{i}": b"x" * 1100 for i in range(5)}, group="s")
        assert err.value.status == 413
        c.set_many({f"big{i}": b"x" * 1100 for i in range(3)}, group="s")
        c.set_many({f"big{i}": b"x" * 1100 for i in range(3, 5)}, group="s")
        with pytest.raises(RefusedError) as err:               # values over batch_max_bytes
            c.get_many([f"big{i}" for i in range(5)], group="s")
        assert err.value.status == 413 and "batch_max_bytes" in str(err.value)
        assert len(c.get_many([f"big{i}" for i in range(3)], group="s")) == 3


def test_bad_batches_are_400s_naming_the_key(host):
    status, _h, body = _post(host, "group=s&op=get", ["fine", ""])
    assert status == 400 and json.loads(body)["error"].startswith("key #1:")
    status, _h, body = host.request("POST", "/api/batch?group=s&op=get", b"\xff\xff\xff")
    assert status == 400 and "protobuf" in json.loads(body)["error"]
    status, _h, body = _post(host, "group=s&op=frob", ["a"])
    assert status == 400
    status, _h, body = _post(host, "group=nosuch&op=get", ["a"])
    assert status == 400
    status, _h, body = host.request("GET", "/api/batch?group=s")
    assert status == 405
    with _client(host) as c, pytest.raises(InvalidKeyError):   # the client refuses before sending
        c.get_many(["a", ""], group="s")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch3")
    config = _config(tmp)
    env = {"GEECACHE_TEST_COUNT_FILE": str(tmp / "loads.txt"), "GEECACHE_TEST_LOAD_DELAY": "0"}
    with static_hosts(tmp, 3, "--config", config, "--auth-token", TOKEN, env=env) as hosts:
        for h in hosts:
            h.count_file = tmp / "loads.txt"
        yield hosts


def _owner(host, key):
    return host.admin_json(f"/cluster?group=counted&key={key}")["owner"]


def _peer_requests(h) -> int:
    return h.admin_json("/stats")["counted"]["peer_requests"]


def test_a_batch_sends_one_peer_request_per_owner(three):
    a = three[0]
    by_url = {f"http://127.0.0.1:{h.port}": h for h in three}
    keys = [f"spread{i}" for i in range(30)]
    owners = {k: _owner(a, k) for k in keys}
    assert len(set(owners.values())) == 3, "30 keys should land on all three hosts"
    before = {url: _peer_requests(h) for url, h in by_url.items()}
    loads = count_loads(str(a.count_file))
    with _client(a) as c:
        got = c.get_many(keys + ["missing-x"], group="counted")
    assert got == {k: f"value-{k}".encode() for k in keys}
    for url, h in by_url.items():
        if h is not a:
            assert _peer_requests(h) - before[url] == 1, url     # one request, however many keys it owns
    assert count_loads(str(a.count_file)) - loads == 31         # each key once, on its owner
    stats = a.admin_json("/stats")["counted"]
    assert stats["peer_errors"] == 0
    assert stats["peer_hits"] == sum(1 for k in keys if owners[k] != f"http://127.0.0.1:{a.port}")


def test_sets_and_deletes_of_a_batch_reach_every_owner(three):
    a, b = three[0], three[1]
    keys = [f"w{i}" for i in range(12)]
    with _client(a) as ca, _client(b) as cb:
        ca.set_many({k: k.encode() * 3 for k in keys}, group="s")
        assert cb.get_many(keys, group="s") == {k: k.encode() * 3 for k in keys}
        assert cb.delete_many(keys[:6], group="s") == 6
        assert ca.get_many(keys, group="s") == {k: k.encode() * 3 for k in keys[6:]}


def _requests(h, methods: str, route: str) -> float:
    """Requests of *methods* (a regex) to *route* (a regex) this host's /metrics counts."""
    _status, body = h.admin_get("/metrics")
    return sum(float(v) for v in re.findall(
        r'geecache_http_requests_total\{method="(?:%s)",route="%s",status="\d+"\} ([\d.e+]+)'
        % (methods, route), body.decode()))


def _write_requests(h) -> float:
    """Write requests this host served for other hosts, batches (``_writes``) and single writes,
    as counted once its metrics were flushed after everything sent to it so far."""
    # /metrics is flushed once a second: a /healthz sent now is counted in the same flush as
    # every request before it (one worker), so once it shows, they all do.
    marks = _requests(h, "GET", "/healthz")
    assert h.get("/healthz")[0] == 200
    wait_until(lambda: _requests(h, "GET", "/healthz") > marks, what="the metrics flush")
    return _requests(h, "POST|PUT|DELETE", r"/_geecache/\{group\}/(?:_writes|\{key:\.\+\})")


def _source_counts(h) -> tuple[int, int]:
    stats = h.admin_json("/stats")["s"]
    return stats["source_commits"], stats["source_writes"]


def test_a_100_key_set_many_is_one_request_and_one_commit_per_owner(three):
    a = three[0]
    keys = [f"hundred{i}" for i in range(100)]
    owners = {}
    for k in keys:
        owners.setdefault(_owner(a, k), []).append(k)
    assert len(owners) == 3, "100 keys should land on all three hosts"
    before = {h.port: _source_counts(h) for h in three}
    requests = {h.port: _write_requests(h) for h in three}
    with _client(a) as c:
        c.set_many({k: b"x" + k.encode() for k in keys}, group="s")
        assert c.get_many(keys, group="s") == {k: b"x" + k.encode() for k in keys}
    for h in three:
        # Through A, a non-owner of most keys: one peer request to each other owner, none to A.
        assert _write_requests(h) - requests[h.port] == (0 if h is a else 1), h.port
        commits, writes = (x - y for x, y in zip(_source_counts(h), before[h.port]))
        # Each owner got its keys in one request and wrote them in one transaction.
        assert (commits, writes) == (1, len(owners[f"http://127.0.0.1:{h.port}"])), h.port
