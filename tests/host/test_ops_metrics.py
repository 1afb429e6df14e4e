"""The metrics operators look for, scraped from real hosts, checked by
``promtool`` (Debian's prometheus package) when it is on PATH; the alert rules of
docs/operations.md checked by ``promtool check rules``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import static_hosts
from tests.support.proc import start_supervisor, wait_until

PROMTOOL = shutil.which("promtool")
DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _value(text: str, series: str) -> float | None:
    """The value of the sample whose name and labels are exactly *series*."""
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else None


def _promtool_metrics(text: str) -> None:
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), \
        (out.stdout + out.stderr).decode()


@pytest.mark.procs
def test_process_build_worker_ring_and_heartbeat_series(tmp_path):
    h = start_supervisor(tmp_path, workers=2)
    try:
        def scraped():
            text = h.admin_get("/metrics")[1].decode()
            return text if _value(text, "geecache_workers_ready") == 2 else None
        text = wait_until(scraped, 10, what="both workers ready in the scrape")
        assert re.search(r'^geecache_build_info\{python="[\d.]+\w*",version="[^"]+"\} 1\.0$', text, re.M)
        assert _value(text, "geecache_workers") == 2 and _value(text, "geecache_workers_configured") == 2
        assert _value(text, "geecache_ring_members") == 0 and _value(text, "geecache_ring_version") == 0
        for proc in ("worker-0", "worker-1", "supervisor"):
            label = '{process="%s"}' % proc
            assert _value(text, "geecache_process_cpu_seconds_total" + label) > 0
            assert _value(text, "geecache_process_resident_memory_bytes" + label) > 1 << 20
            assert _value(text, "geecache_process_start_time_seconds" + label) > 1e9
            assert _value(text, "geecache_process_open_fds" + label) > 2
        for proc in ("worker-0", "worker-1"):
            assert _value(text, 'geecache_child_ready{process="%s"}' % proc) == 1
            assert 0 <= _value(text, 'geecache_child_heartbeat_age_seconds{process="%s"}' % proc) < 30
        assert "geecache_peer_breaker_state" not in text  # one host alone: no peer pool, so no breaker
        # Series by slot, not pid: a SIGKILLed worker's respawn continues worker-<its slot>.
        victim = h.workers()[0]
        before = {p: _value(text, 'geecache_process_start_time_seconds{process="%s"}' % p)
                  for p in ("worker-0", "worker-1")}
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in h.workers() and len(h.workers()) == 2, 20, what="respawn")
        text = wait_until(scraped, 20, what="the respawned worker ready in the scrape")
        after = {p: _value(text, 'geecache_process_start_time_seconds{process="%s"}' % p)
                 for p in ("worker-0", "worker-1")}
        assert len(re.findall(r"^geecache_process_start_time_seconds\{", text, re.M)) == 3
        assert sum(1 for p in after if after[p] != before[p]) == 1
        # Loads are timed: one histogram sample per load.
        h.get("/api?key=Tom")
        h.get("/api?key=nobody")

        def loads_timed():
            body = h.admin_get("/metrics")[1].decode()
            count = _value(body, 'geecache_source_load_duration_seconds_count{group="scores"}')
            return body if count is not None and count >= 2 else None
        text = wait_until(loads_timed, 10, what="the loads in the histogram")
        if PROMTOOL:
            _promtool_metrics(text)
    finally:
        assert h.stop() == 0


@pytest.mark.procs
def test_peer_call_latency_and_ring_series_of_two_hosts(tmp_path):
    with static_hosts(tmp_path, 2, exit_zero=True) as hosts:
        a = hosts[0]
        for i in range(40):  # about half of them owned by the other host: peer fetches
            a.get(f"/api?key=k{i}")

        def peer_calls():
            body = a.admin_get("/metrics")[1].decode()
            count = _value(body, 'geecache_peer_call_duration_seconds_count{method="GET"}')
            return body if count and count >= 5 else None
        text = wait_until(peer_calls, 10, what="peer fetches in the histogram")
        assert _value(text, "geecache_ring_members") == 2 and _value(text, "geecache_ring_version") >= 1
        assert _value(text, 'geecache_peer_call_duration_seconds_bucket{le="+Inf",method="GET"}') == \
            _value(text, 'geecache_peer_call_duration_seconds_count{method="GET"}')
        if PROMTOOL:
            for h in hosts:
                _promtool_metrics(h.admin_get("/metrics")[1].decode())


def _alert_rules() -> str:
    doc = DOC.read_text()
    m = re.search(r"<!-- alert-rules -->\n```yaml\n(.*?)```", doc, re.S)
    assert m, "docs/operations.md has no alert-rules block"
    return m.group(1)


def test_the_documented_alert_rules_name_exported_series():
    rules = _alert_rules()
    exported = {"up", "geecache_workers_ready", "geecache_workers_configured",
                "geecache_child_heartbeat_age_seconds", "geecache_process_start_time_seconds",
                "geecache_local_hits_total", "geecache_hot_hits_total", "geecache_peer_hits_total",
                "geecache_gets_total", "geecache_load_errors_total", "geecache_loads_total",
                "geecache_source_load_duration_seconds_bucket", "geecache_peer_errors_total",
                "geecache_peer_call_duration_seconds_bucket", "geecache_ring_members",
                "geecache_peer_breaker_state", "geecache_pause_wipes_total"}
    named = set(re.findall(r"\b((?:geecache_\w+)|up)\b", rules))
    assert named <= exported, named - exported
    doc = DOC.read_text()
    for name in exported - {"up"}:
        base = re.sub(r"_bucket$", "", name)
        assert f"`{base}`" in doc, f"{base} is not in the metrics table"


@pytest.mark.procs
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_documented_alert_rules(tmp_path):
    path = tmp_path / "geecache-rules.yml"
    path.write_text(_alert_rules())
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    assert b"SUCCESS: 12 rules found" in out.stdout, out.stdout.decode()


PAUSE_WIPE_TEST = """
rule_files: [geecache-rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'geecache_pause_wipes_total{instance="a", group="kv"}'
        values: '0 0 0 1 1 1'
      - series: 'geecache_pause_wipes_total{instance="b", group="kv"}'
        values: '0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: GeeCachePauseWipedCache
        exp_alerts: []
      - eval_time: 5m
        alertname: GeeCachePauseWipedCache
        exp_alerts:
          - exp_labels: {instance: a}
            exp_annotations:
              summary: "a: cache dropped whole after a pause (1 group drops in 15m)"
"""


@pytest.mark.procs
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_a_cache_wiped_after_a_pause_raises_the_alert(tmp_path):
    (tmp_path / "geecache-rules.yml").write_text(_alert_rules())
    (tmp_path / "pause-test.yml").write_text(PAUSE_WIPE_TEST)
    out = subprocess.run([PROMTOOL, "test", "rules", "pause-test.yml"], cwd=tmp_path, capture_output=True,
                         timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()


class _Breaker:
    """The interface ``geecache.cluster.breaker.Breaker`` gives: a state per peer."""

    def __init__(self, states: dict[str, str]) -> None:
        self._states = states

    def state(self, peer: str) -> str:
        return self._states.get(peer, "closed")


class _Pool:
    """What HostView reads of an HTTPPool: its ring, its own address, and a breaker."""

    def __init__(self, members, me, breaker) -> None:
        from geecache.cluster.consistenthash import Ring

        self._ring = Ring()
        self._ring.add(*members)
        self.self_address = me
        self.breaker = breaker

    def ring(self):
        return 7, self._ring


def _host_text(pool) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from geecache.observability import metrics
    from workers.dashboard import HostView

    view = HostView({}, lambda name: {}, pool=pool, workers_configured=3)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.HostCollector(view))
    return generate_latest(registry).decode()


def test_breaker_state_per_peer_of_the_pool():
    members = ["http://a:1", "http://b:1", "http://c:1"]
    assert "geecache_peer_breaker_state" not in _host_text(None)  # a host alone: no pool, no peers
    text = _host_text(_Pool(members, "http://a:1", _Breaker({"http://b:1": "open"})))
    assert _value(text, 'geecache_peer_breaker_state{peer="http://b:1"}') == 1
    assert _value(text, 'geecache_peer_breaker_state{peer="http://c:1"}') == 0
    assert 'peer="http://a:1"' not in text  # no breaker to itself
    assert _value(text, "geecache_ring_members") == 3 and _value(text, "geecache_ring_version") == 7
    # Outside a supervisor (no heartbeat cells) this process stands for the one worker.
    assert _value(text, 'geecache_child_ready{process="worker-0"}') == 1


@pytest.mark.procs
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_breaker_series():
    _promtool_metrics(_host_text(_Pool(["http://a:1", "http://b:1"], "http://a:1",
                                       _Breaker({"http://b:1": "half_open"}))))


def _sum(text: str, name: str, **labels) -> float:
    """The sum of *name*'s samples carrying at least *labels*."""
    total = 0.0
    for m in re.finditer(r"^%s(?:\{([^}]*)\})? (\S+)$" % re.escape(name), text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.procs
def test_exact_status_connections_bytes_and_budgets_are_exported(tmp_path):
    import socket

    # A long header timeout: the held connections stay mid-request (busy) for the whole test.
    h = start_supervisor(tmp_path, "--max-connections", "2", "--header-timeout", "300", workers=1)
    held = []
    try:
        # Exact codes: a hit, a miss of the source (404), an empty key (400).
        assert h.get("/api?key=Tom") == (200, b"630")
        assert h.get("/api?key=nobody")[0] == 404
        assert h.get("/api?key=")[0] == 400
        head, rest = b"GET /api?key=probe HTTP/1.1\r\n", b"Host: x\r\n\r\n"
        for _ in range(2):  # the worker's cap: both held open, each mid-request (an idle one
            # would be closed to make room for a new client instead of the refusal)
            held.append(socket.create_connection(("127.0.0.1", h.port), timeout=10))
            held[-1].sendall(head)

        def opened():
            text = h.admin_get("/metrics")[1].decode()
            return text if _value(text, "geecache_connections_open") == 2 else None
        wait_until(opened, 20, what="two open connections in the scrape")
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as third:
            answer = third.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503")

        def refused():
            text = h.admin_get("/metrics")[1].decode()
            return text if _value(text, "geecache_connections_refused_total") == 1 else None
        text = wait_until(refused, 20, what="the refused connection counted")
        sent = rest
        before_read = _value(text, "geecache_bytes_read_total")
        before_written = _value(text, "geecache_bytes_written_total")
        held[0].sendall(sent)
        got = held[0].recv(4096)
        assert got.startswith(b"HTTP/1.1 404")

        def grown():
            body = h.admin_get("/metrics")[1].decode()
            return body if _value(body, "geecache_bytes_written_total") >= before_written + len(got) else None
        text = wait_until(grown, 20, what="the bytes of the probe counted")
    finally:
        for s in held:
            s.close()
        assert h.stop() == 0
    assert _sum(text, "geecache_http_requests_total", method="GET", route="/api", status="200") >= 1
    assert _sum(text, "geecache_http_requests_total", method="GET", route="/api", status="404") >= 2
    assert _sum(text, "geecache_http_requests_total", method="GET", route="/api", status="400") == 1
    assert not re.search(r'status="\dxx"', text)
    # (The held heads were read before the refusal, or between its scrape and this one.)
    assert len(sent) <= _value(text, "geecache_bytes_read_total") - before_read <= len(sent) + 2 * len(head)
    assert _value(text, "geecache_bytes_written_total") == before_written + len(got)
    # Every connection the readiness probes and the test made: taken in, plus the one refused.
    assert _value(text, "geecache_connections_accepted_total") >= 5
    # With no [[groups]], the demo group gets min(64MiB, arena / 2) of the 32MiB arena; hot copies 1/8 of it.
    assert _value(text, 'geecache_cache_budget_bytes{group="scores"}') == 16 << 20
    assert _value(text, 'geecache_hot_cache_budget_bytes{group="scores"}') == 2 << 20
    if PROMTOOL:
        _promtool_metrics(text)
