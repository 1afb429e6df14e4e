"""geecache.observability.metrics: the arena collector, multiprocess request metrics, the directory's life."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geecache.observability import metrics
from geecache.cache import LocalCache
from tests.support.proc import REPO, base_env


def test_arena_collector_exports_counters_and_gauges():
    from prometheus_client import CollectorRegistry, generate_latest

    cache = LocalCache()
    cache.configure_group("g", 1 << 20)
    cache.configure_group("hot:g", 1 << 17)
    cache.set("g", "k", b"12345")
    cache.set("hot:g", "r", b"67")
    sink = cache.stats_sink("g")
    sink.add("gets", 7)
    sink.add("local_hits", 5)
    collector = metrics.ArenaCollector(["g"], lambda g: cache.stats_sink(g).snapshot(), cache.usage, 1 << 24)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'geecache_gets_total{group="g"} 7.0' in text
    assert 'geecache_local_hits_total{group="g"} 5.0' in text
    assert 'geecache_loads_total{group="g"} 0.0' in text
    assert 'geecache_cache_bytes{group="g"} 6.0' in text  # key + value bytes
    assert 'geecache_cache_entries{group="g"} 1.0' in text
    assert 'geecache_hot_cache_entries{group="g"} 1.0' in text
    assert 'geecache_hot_cache_bytes{group="g"} 3.0' in text
    assert "geecache_arena_size_bytes 1.6777216e+07" in text
    assert "# TYPE geecache_gets_total counter" in text


_OBSERVE = """
import sys
from geecache.observability import metrics
m = metrics.HttpMetrics()
for i in range(int(sys.argv[1])):
    m.observe("GET", "/api", 200 if i % 4 else 404, 0.0001 * i)
    if i == 10:
        m.flush()  # flushing twice must add, not overwrite
m.flush()
"""

_RENDER = """
from geecache.observability import metrics
from geecache.cache import LocalCache
c = LocalCache()
print(metrics.render(metrics.ArenaCollector([], lambda g: {}, c.usage, 0))[0].decode())
"""


def _python(code: str, *args: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=str(REPO), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.procs
def test_request_metrics_sum_over_processes(tmp_path):
    path, created = metrics.prepare_multiproc_dir(str(tmp_path / "mp"))
    try:
        assert not created and os.environ[metrics.ENV_DIR] == path
        env = base_env({metrics.ENV_DIR: path})
        _python(_OBSERVE, "40", env=env)  # two separate processes, as two workers
        _python(_OBSERVE, "20", env=env)
        text = _python(_RENDER, env=env)
        assert 'geecache_http_requests_total{method="GET",route="/api",status="200"} 45.0' in text
        # The exact code, not its class: a miss (404) is told from a 401 or a 413.
        assert 'geecache_http_requests_total{method="GET",route="/api",status="404"} 15.0' in text
        assert ('geecache_http_request_duration_seconds_count{method="GET",route="/api",status="200"} 45.0'
                in text)
        # 0.0001*i for i < 40 and i < 20: 5+5 observations <= 0.0005, and so on.
        assert ('geecache_http_request_duration_seconds_bucket{le="0.0005",method="GET",route="/api",status="200"}'
                ' 8.0' in text)
        assert ('geecache_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api",status="200"}'
                ' 45.0' in text)
        assert len([n for n in os.listdir(path) if n.endswith(".db")]) >= 2
        # A restart wipes the previous run's files, so counts do not carry over.
        metrics.prepare_multiproc_dir(path)
        assert not [n for n in os.listdir(path) if n.endswith(".db")]
    finally:
        os.environ.pop(metrics.ENV_DIR, None)
        metrics.remove_multiproc_dir(path, created)
    assert os.path.isdir(path)  # the operator's directory stays, emptied


def test_own_directory_is_removed(tmp_path):
    saved = os.environ.pop(metrics.ENV_DIR, None)
    try:
        path, created = metrics.prepare_multiproc_dir()
        assert created and os.path.isdir(path)
        metrics.remove_multiproc_dir(path, created)
        assert not os.path.exists(path)
    finally:
        os.environ.pop(metrics.ENV_DIR, None)
        if saved is not None:
            os.environ[metrics.ENV_DIR] = saved
