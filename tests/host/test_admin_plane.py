"""The two planes of a real host: the data port serves requests, the admin port everything else."""

from __future__ import annotations

import re
import socket
import time

import pytest

from geecache.config import parse_args
from geecache.errors import ConfigError
from tests.support.h11client import read_answers, request_bytes
from tests.support.proc import start_supervisor, wait_until


def test_admin_port_defaults():
    cfg = parse_args(["--port", "8001"], environ={})
    assert (cfg.admin_host, cfg.admin_port) == ("127.0.0.1", 9001)
    assert parse_args(["--port", "0"], environ={}).admin_port == 0  # any free, like the data port
    cfg = parse_args(["--host", "0.0.0.0", "--trusted-network", "--admin-port", "7000"], environ={})
    assert (cfg.admin_host, cfg.admin_port) == ("127.0.0.1", 7000)  # loopback even when data is wider
    # Named as the user spells settings: the defaulted admin port like the --port that moved it.
    with pytest.raises(ConfigError, match="^--admin-port: the default"):
        parse_args(["--port", "65000"], environ={})
    with pytest.raises(ConfigError, match="--admin-port: 8001 is the data port"):
        parse_args(["--port", "8001", "--admin-port", "8001"], environ={})
    cfg = parse_args([], environ={"GEECACHE_HEADER_TIMEOUT": "2.5", "GEECACHE_MAX_CONNECTIONS": "10"})
    assert (cfg.header_timeout, cfg.max_connections, cfg.keepalive_timeout) == (2.5, 10, 75.0)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planes")
    h = start_supervisor(tmp, "--host", "0.0.0.0", "--trusted-network", "--keepalive-timeout", "0.5", "--header-timeout", "0.5",
                         workers=2)
    yield h
    assert h.stop() == 0


@pytest.mark.procs
def test_each_plane_serves_its_own_paths(host):
    assert host.get("/api?key=Tom") == (200, b"630")
    for path in ("/metrics", "/stats", "/cluster"):
        status, body = host.get(path)
        assert status == 404 and b'"error"' in body, path  # not on the data port
        assert host.admin_get(path)[0] == 200, path
    assert host.admin_get("/api?key=Tom")[0] == 404  # and the API is not on the admin port
    assert host.admin_json("/healthz")["status"] == "ok" and host.json("/healthz")["status"] == "ok"
    assert host.admin_json("/stats")["scores"]["gets"] >= 1


@pytest.mark.procs
def test_admin_listens_on_loopback_while_data_listens_wider(host):
    m = re.search(r"listening on http://(\S+):(\d+) \(admin http://(\S+):(\d+)\)", host.log())
    assert m and m.group(1) == "0.0.0.0" and m.group(3) == "127.0.0.1"
    assert int(m.group(4)) == host.admin_port


@pytest.mark.procs
def test_metrics_count_data_plane_requests_in_fine_buckets(host):
    n = 30
    for _ in range(n):
        assert host.get("/api?key=Tom") == (200, b"630")

    def hits(text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("geecache_http_requests_total{") and 'route="/api"' in line
                   and 'status="200"' in line)

    # Each worker flushes its tallies every second; the sum reaches n (bounded wait).
    text = wait_until(lambda: (lambda t: t if hits(t) >= n else None)(host.admin_get("/metrics")[1].decode()),
                      10, interval=0.2, what="hits flushed to the metrics files")
    assert 'le="2.5e-05"' in text and 'route="/api"' in text


@pytest.mark.procs
def test_worker_applies_the_configured_timeouts(host):
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as s:
        s.sendall(request_bytes("GET", "/healthz"))
        assert read_answers(s, ["GET"]).answers[0].status == 200
        s.settimeout(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and s.recv(4096):
            pass
        assert time.monotonic() < deadline  # closed by the server (idle), within the bound
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as s:
        s.sendall(b"GET /api?key=Tom HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        s.settimeout(10)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408 ")


@pytest.mark.procs
def test_contention_counters_are_served_per_process_and_summed(host):
    from geecache.shm.stats import CONTENTION_FIELDS

    assert host.get("/api?key=Tom") == (200, b"630")
    doc = host.admin_json("/stats/contention")
    pids = {row["pid"] for row in doc["processes"]}
    # Every worker that served has its own row (the supervisor may have one too).
    assert set(host.workers()) <= pids
    for row in doc["processes"]:
        assert set(row) == {"pid", *CONTENTION_FIELDS} and all(isinstance(v, int) for v in row.values())
    assert doc["total"] == {f: sum(r[f] for r in doc["processes"]) for f in CONTENTION_FIELDS}
    assert host.get("/stats/contention")[0] == 404  # not on the data port
