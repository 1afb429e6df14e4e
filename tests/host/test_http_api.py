"""The HTTP API of a real 2-worker host: reads, writes, errors, single flight, stats, metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest

from tests.support.loaders import count_loads
from tests.support.proc import start_supervisor, wait_until

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs

CONFIG = """
[[groups]]
name = "scores"
sqlite = "scores.db"
max_bytes = "4MiB"
item_limit = "64KiB"

[[groups]]
name = "counted"
loader = "tests.support.loaders:counting"

[[groups]]
name = "upper"
loader = "tests.support.loaders:sync_upper"

[[groups]]
name = "broken"
loader = "tests.support.loaders:failing"
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "geecache.toml").write_text(CONFIG)
    count_file = tmp / "loads.txt"
    h = start_supervisor(tmp, "--config", str(tmp / "geecache.toml"), workers=2,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file)})
    h.count_file = count_file
    yield h
    assert h.stop() == 0


async def _fetch_all(port: int, paths: list[str], concurrency: int) -> list[tuple[int, bytes]]:
    """GET every path, *concurrency* at a time, each on a fresh connection (so the
    kernel hands them to different workers)."""
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(path):
            async with sem:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    return resp.status, await resp.read()
        return await asyncio.gather(*(one(p) for p in paths))


def fetch_all(port: int, paths: list[str], concurrency: int = 25) -> list[tuple[int, bytes]]:
    return asyncio.run(_fetch_all(port, paths, concurrency))


def test_put_get_delete_round_trip(host):
    assert host.request("PUT", "/api?key=Ann&group=scores", b"701")[0] == 204
    # The default group is the first configured one.
    status, headers, body = host.request("GET", "/api?key=Ann")
    assert (status, body) == (200, b"701")
    assert headers["content-type"] == "application/octet-stream"
    assert host.request("PUT", "/api?key=Ann", b"702")[0] == 204
    assert fetch_all(host.port, ["/api?key=Ann"] * 10) == [(200, b"702")] * 10  # every worker sees it
    assert host.request("DELETE", "/api?key=Ann")[0] == 204
    status, _, body = host.request("GET", "/api?key=Ann")
    assert status == 404 and "error" in json.loads(body)
    assert host.request("DELETE", "/api?key=Ann")[0] == 404


def test_put_with_ttl_is_gone_after_it_everywhere(host):
    """A PUT with ?ttl=S is gone after S (memcached's exptime, Redis SET EX),
    not just out of the cache: the source row expires too, so a reload finds nothing."""
    stats = lambda: host.admin_json("/stats")["scores"]  # noqa: E731
    assert host.request("PUT", "/api?key=Brief&ttl=0.5", b"here")[0] == 204
    assert host.get("/api?key=Brief") == (200, b"here")
    # Bounded wait for expiry (no duration is asserted).  Before the fix the entry
    # was reloaded from the source, which kept the value forever: 200 every time.
    wait_until(lambda: host.get("/api?key=Brief")[0] == 404, 15, interval=0.2,
               what="the value to expire")
    assert [status for status, _ in fetch_all(host.port, ["/api?key=Brief"] * 10)] == [404] * 10
    # An expired value can be written again, and a later PUT without ttl keeps it.
    assert host.request("PUT", "/api?key=Brief", b"again")[0] == 204
    assert host.get("/api?key=Brief") == (200, b"again")
    assert host.request("PUT", "/api?key=Lasting", b"stays")[0] == 204  # no ttl: the group's (none)
    before = stats()
    assert host.get("/api?key=Lasting") == (200, b"stays")
    assert stats()["loads"] == before["loads"] and stats()["local_hits"] == before["local_hits"] + 1


def test_binary_and_unicode_keys_and_values(host):
    value = bytes(range(256)) * 10
    assert host.request("PUT", "/api?key=%C3%A9t%C3%A9%20%2F%26x", value)[0] == 204
    assert host.get("/api?key=%C3%A9t%C3%A9%20%2F%26x") == (200, value)


def test_loader_group_loads_once_then_hits(host):
    assert host.get("/api?group=counted&key=alpha") == (200, b"value-alpha")
    stats_before = host.admin_json("/stats")["counted"]
    for _ in range(5):
        assert host.get("/api?group=counted&key=alpha") == (200, b"value-alpha")
    stats = host.admin_json("/stats")["counted"]
    assert count_loads(host.count_file, "alpha") == 1
    assert stats["local_hits"] - stats_before["local_hits"] == 5
    assert stats["gets"] - stats_before["gets"] == 5
    assert host.get("/api?group=upper&key=abc") == (200, b"ABC")  # a sync loader returning str
    status, body = host.get("/api?group=counted&key=missing-1")
    assert status == 404 and json.loads(body)["error"]


def test_single_flight_across_workers(host):
    results = fetch_all(host.port, ["/api?group=counted&key=flight"] * 50, concurrency=50)
    assert results == [(200, b"value-flight")] * 50
    assert count_loads(host.count_file, "flight") == 1


def test_stats_add_up_across_workers(host):
    assert host.request("PUT", "/api?key=statkey", b"1")[0] == 204
    before = host.admin_json("/stats")["scores"]
    n = 60
    assert fetch_all(host.port, ["/api?key=statkey"] * n) == [(200, b"1")] * n
    after = host.admin_json("/stats")
    s = after["scores"]
    assert s["gets"] - before["gets"] == n
    assert s["local_hits"] - before["local_hits"] == n
    assert s["entries"] >= 1 and s["bytes"] > 0 and 0 < s["hit_rate"] <= 1
    assert set(after) == {"scores", "counted", "upper", "broken"}
    # Both workers served some of them: each worker has its own metrics file.
    metrics_dir = re.search(r"metrics directory (\S+)", host.log()).group(1)
    wait_until(lambda: len(list(Path(metrics_dir).glob("counter_*.db"))) >= 2, 15, what="two workers' files")


def _api_requests_total(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("geecache_http_requests_total{") and 'route="/api"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def fresh_host(tmp_path):
    """A host of its own, so that every /api request it counts is one the test sent."""
    (tmp_path / "geecache.toml").write_text(CONFIG)
    h = start_supervisor(tmp_path, "--config", str(tmp_path / "geecache.toml"), workers=2)
    yield h
    assert h.stop() == 0


def test_metrics_count_every_request_across_workers(fresh_host):
    host = fresh_host
    # Readiness was checked on /healthz: no /api request was counted before these.
    n = 40
    fetch_all(host.port, ["/api?group=upper&key=m"] * n + ["/api?key="] * 5)
    # Each worker flushes its request counts at least once a second: wait for all of them
    # (bounded); exactly those sent are counted, across both workers.
    text = wait_until(lambda: (lambda t: t if _api_requests_total(t) >= n + 5 else None)(
        host.admin_get("/metrics")[1].decode()), 30, what="request counts flushed")
    assert _api_requests_total(text) == n + 5
    status, headers, _ = host.admin_request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert re.search(r'geecache_gets_total\{group="upper"\} [1-9]', text)
    assert re.search(r'geecache_cache_entries\{group="upper"\} [1-9]', text)
    # The exact code: the empty keys are 400s.
    assert 'geecache_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api",status="400"}' in text
    assert "geecache_arena_size_bytes 3.3554432e+07" in text


BIG = b"x" * (100 * 1024)


@pytest.mark.parametrize("method,path,body,status", [
    ("GET", "/api", None, 400),                                   # no key
    ("GET", "/api?key=", None, 400),                              # empty key
    ("GET", "/api?key=" + "k" * 251, None, 400),                  # over the key limit
    ("GET", "/api?key=%FF%FE", None, 400),                        # not UTF-8: refused, never a U+FFFD key
    ("GET", "/api?key=Tom&group=nope", None, 400),                # unknown group
    ("GET", "/api?key=Tom&group=", None, 400),                    # empty group
    ("PUT", "/api", b"v", 400),                                   # no key
    ("PUT", "/api?key=" + "k" * 251, b"v", 400),
    ("PUT", "/api?key=a&group=nope", b"v", 400),
    ("PUT", "/api?key=big", BIG, 413),                            # over the group's item limit
    ("PUT", "/api?key=huge", b"x" * (2 << 20), 413),              # over the HTTP body limit
    ("PUT", "/api?key=a&group=counted", b"v", 405),               # read-only source
    ("PUT", "/api?key=a&ttl=soon", b"v", 400),                    # ttl not a number
    ("PUT", "/api?key=a&ttl=-1", b"v", 400),                      # ttl out of range
    ("PUT", "/api?key=a&ttl=nan", b"v", 400),
    ("DELETE", "/api?key=a&group=counted", None, 405),
    ("DELETE", "/api", None, 400),
    ("POST", "/api?key=a", b"v", 405),                            # wrong method
    ("PATCH", "/healthz", b"", 405),
    ("GET", "/stats", None, 404),                                 # the admin port's, not the data port's
    ("GET", "/nope", None, 404),                                  # unknown path
    ("GET", "/api/extra", None, 404),
    ("GET", "/_geecache/nope/k", None, 400),                      # peer API: unknown group
    ("PUT", "/_geecache/scores/k", b"\xff\xff\xff", 400),         # peer API: malformed protobuf
])
def test_bad_requests_get_json_4xx_never_5xx(host, method, path, body, status):
    got, headers, answer = host.request(method, path, body)
    assert got == status, answer
    assert headers["content-type"].startswith("application/json")
    reason = json.loads(answer)["error"]
    assert reason and "Traceback" not in reason
    if status == 405 and path.startswith("/api"):
        assert "GET" in headers["allow"]


def test_failing_loader_is_502_not_a_crash(host):
    status, body = host.get("/api?group=broken&key=x")
    # The cause is the operator's (logged), not the client's: the answer names no source detail.
    assert (status, json.loads(body)["error"]) == (502, "loading from the source failed")
    wait_until(lambda: "backend down" in host.log(), 10, what="the cause logged")
    assert host.admin_json("/stats")["broken"]["load_errors"] >= 1
    assert host.get("/healthz")[0] == 200


def test_healthz(host):
    h = host.json("/healthz")
    assert h["status"] == "ok" and h["pid"] in host.workers()
    assert h["groups"] == ["scores", "counted", "upper", "broken"]


def test_auth_token_guards_writes_only(tmp_path):
    h = start_supervisor(tmp_path, "--auth-token", "s3cret", workers=1)
    try:
        assert h.request("PUT", "/api?key=Tom", b"1")[0] == 401
        assert h.request("PUT", "/api?key=Tom", b"1", {"Authorization": "Bearer wrong"})[0] == 401
        status, headers, body = h.request("DELETE", "/api?key=Tom", None, {"Authorization": "s3cret"})
        assert status == 401 and json.loads(body)["error"] and "bearer" in headers["www-authenticate"].lower()
        assert h.get("/api?key=Tom") == (200, b"630")  # reads need no token
        assert h.request("PUT", "/api?key=Tom", b"631", {"Authorization": "Bearer s3cret"})[0] == 204
        assert h.get("/api?key=Tom") == (200, b"631")
    finally:
        assert h.stop() == 0
