"""SIGHUP rolls the workers onto a re-read config, and SIGUSR1 + a start is a warm restart.

Both keep the cache: source loads are counted by the loader itself (a line
per call in a file, across processes) and by the arena's per-process stat
rows (``/stats``), and neither may grow for a key that was cached.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.host import ready_workers
from tests.support.loaders import count_loads
from tests.support.net import free_port
from tests.support.proc import REPO, SUPERVISOR, Host, alive, base_env, start_supervisor, wait_until

pytestmark = pytest.mark.procs

KEYS = [f"k{i}" for i in range(20)]
#: The longest a test's load runs if the test never stops it.
LOAD_SECONDS = 300


def _config(tmp_path: Path, extra: str = "", group: str = "") -> Path:
    path = tmp_path / "g.toml"
    path.write_text(f'{extra}[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\n{group}')
    return path


def _start(tmp_path, cfg: Path, *args: str, workers: int = 2, port: int | None = None):
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(cfg), *args, workers=workers, port=port,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"})
    return h, count_file


def _fill(h) -> None:
    for k in KEYS:
        assert h.get(f"/api?group=c&key={k}") == (200, f"value-{k}".encode())


def _load(port: int, rounds: int, stop: threading.Event, out: list) -> None:
    """GETs of every key, 8 at a time, each on a fresh connection; (key, status, body).

    Bounded by *rounds* and by ``LOAD_SECONDS``; the test stops it sooner.  A small round
    count alone ran out before a slow roll ended, on a machine faster than the roll.
    """
    async def run():
        connector = aiohttp.TCPConnector(force_close=True, limit=8)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as s:
            async def one(key):
                try:
                    async with s.get(f"http://127.0.0.1:{port}/api?group=c&key={key}") as resp:
                        out.append((key, resp.status, await resp.read()))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    out.append((key, None, repr(exc).encode()))
            deadline = time.monotonic() + LOAD_SECONDS
            for _ in range(rounds):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                await asyncio.gather(*(one(k) for k in KEYS))
    asyncio.run(run())


@pytest.mark.parametrize("socket_mode", ["shared", "reuseport"])
def test_sighup_replaces_every_worker_under_load_without_a_failure_or_a_reload(tmp_path, socket_mode):
    cfg = _config(tmp_path, group="ttl = 0\n")
    h, count_file = _start(tmp_path, cfg, *(["--reuseport"] if socket_mode == "reuseport" else []))
    try:
        _fill(h)
        loads = count_loads(count_file)
        assert loads == len(KEYS) and h.admin_json("/stats")["c"]["loads"] == len(KEYS)
        old = set(h.wait_workers(2))
        # A live change (the TTL), and one the running arena cannot take (its shard count).
        _config(tmp_path, extra="arena_shards = 4\n", group="ttl = 3600\n")
        stop, out = threading.Event(), []
        client = threading.Thread(target=_load, args=(h.port, 100_000, stop, out))
        client.start()
        try:
            wait_until(lambda: len(out) >= 40, 60, what="load running")
            h.send_signal(signal.SIGHUP)
            wait_until(lambda: "every worker now runs the new configuration" in h.log(), 120,
                       what="the roll to finish")
            wait_until(lambda: not any(alive(p) for p in old), 60, what="the old workers gone")
            seen = len(out)
            wait_until(lambda: len(out) >= seen + 40, 60, what="load served by the new workers")
        finally:
            stop.set()
            client.join(30)
        assert not client.is_alive()
        failed = [(k, s, b) for k, s, b in out if s != 200 or b != f"value-{k}".encode()]
        assert not failed, failed[:5]
        new = set(ready_workers(h))
        assert len(new) == 2 and not new & old
        log = h.log()
        assert "arena_shards cannot change while the host runs (4 asked, 8 kept)" in log
        assert "groups[0].ttl 0.0 → 3600.0" in log
        # Every key is still cached: none was loaded again, by either count.
        _fill(h)
        assert count_loads(count_file) == loads
        assert h.admin_json("/stats")["c"]["loads"] == len(KEYS)
    finally:
        assert h.stop() == 0


def test_sighup_with_a_bad_config_keeps_the_running_workers(tmp_path):
    cfg = _config(tmp_path)
    h, _count = _start(tmp_path, cfg, workers=1)
    try:
        before = h.wait_workers(1)
        cfg.write_text('[[groups]]\nname = "c"\nloader = "no_such_module_xyz:load"\n')
        h.send_signal(signal.SIGHUP)
        wait_until(lambda: "running configuration stays" in h.log(), 10, what="the refusal logged")
        assert "SIGHUP: config error: groups[0].loader: " in h.log()
        assert h.workers() == before
        assert h.get("/api?group=c&key=a") == (200, b"value-a")
    finally:
        assert h.stop() == 0


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_roll_whose_nth_new_worker_cannot_boot_is_abandoned_and_the_host_keeps_serving(tmp_path, fail_at):
    # The new config names a loader whose import (the supervisor's config check) makes the
    # fail_at-th worker forked after it exit with the boot-error status: the first new worker
    # or the second, chosen by configuration, not by timing.  Either way the roll is undone
    # and the host serves on with the old config; it never stops.
    cfg = _config(tmp_path)
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0",
                              "GEECACHE_TEST_BOOT_FAIL_AT": str(fail_at)})
    try:
        before = set(h.wait_workers(2))
        cfg.write_text('[[groups]]\nname = "c"\nloader = "tests.support.bootfail:load"\n')
        h.send_signal(signal.SIGHUP)
        wait_until(lambda: "abandoning the roll" in h.log(), 120, what="the roll abandoned")
        if fail_at > 1:  # the first slot was replaced already: it is rolled back too
            wait_until(lambda: "every worker now runs the previous configuration" in h.log(), 120,
                       what="the replaced workers rolled back")
        log = h.log()
        assert "failed to boot" not in log and "stopping instead of restarting" not in log
        assert h.proc.poll() is None
        now = set(h.wait_workers(2))
        assert now == before if fail_at == 1 else len(now & before) == 1
        # Fresh keys load through the old config's loader in every worker, on fresh connections.
        for i in range(20):
            assert h.get(f"/api?group=c&key=fresh{i}") == (200, f"value-fresh{i}".encode())
    finally:
        assert h.stop() == 0


def _state(tmp_path, port: int) -> dict:
    return json.loads((tmp_path / "data" / f"supervisor-{port}.state").read_text())


def test_warm_restart_serves_every_cached_key_without_loading_it(tmp_path):
    cfg = _config(tmp_path)
    h, count_file = _start(tmp_path, cfg)
    _fill(h)
    arena = h.arena_name()
    assert h.stop(signal.SIGUSR1) == 0
    assert os.path.exists(f"/dev/shm/{arena}")
    state = _state(tmp_path, h.port)
    assert state["arena"] == arena and state["warm"]["groups"][0]["name"] == "c"
    second, _ = _start(tmp_path, cfg, port=h.port)
    try:
        assert second.arena_name() == arena
        assert re.search(rf"reattached arena {arena} left for a warm restart: {len(KEYS)} cached entries", second.log())
        _fill(second)
        assert count_loads(count_file) == len(KEYS)  # not one loaded again
        assert second.admin_json("/stats")["c"]["local_hits"] >= len(KEYS)
    finally:
        h.kill_leftovers()
        assert second.stop() == 0
    # A cold stop of the reattached arena removes it (the second supervisor did not create it).
    assert not os.path.exists(f"/dev/shm/{arena}")
    assert not (tmp_path / "data" / f"supervisor-{h.port}.state").exists()


@pytest.mark.parametrize("change,reason", [
    (("--arena", "48MiB"), "arena was 32MiB, is now 48MiB"),
    (("--config", "{other}"), "groups[0] (c) max_bytes was"),
])
def test_warm_restart_with_an_incompatible_arena_discards_it_saying_why(tmp_path, change, reason):
    cfg = _config(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text('[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\nmax_bytes = "2MiB"\n')
    h, count_file = _start(tmp_path, cfg, workers=1)
    _fill(h)
    arena = h.arena_name()
    assert h.stop(signal.SIGUSR1) == 0
    args = [a.format(other=other) for a in change]
    if args[0] != "--config":
        args = ["--config", str(cfg), *args]
    second = start_supervisor(tmp_path, *args, workers=1, port=h.port,
                              env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"})
    try:
        assert f"discarding arena {arena} left for a warm restart: {reason}" in second.log()
        assert not os.path.exists(f"/dev/shm/{arena}") and second.arena_name() != arena
        _fill(second)
        assert count_loads(count_file) == 2 * len(KEYS)  # a cold cache: every key loaded again
    finally:
        h.kill_leftovers()
        assert second.stop() == 0


def test_warm_restart_in_etcd_keeps_the_lease_and_the_cache(tmp_path, etcd_server):
    # A SIGTERM revokes the lease (the others drop the host at once); a warm stop leaves it to
    # expire, so while the host restarts nobody else takes its keys, and its cache stays right.
    cfg = _config(tmp_path)
    etcd = ("--etcd", etcd_server.endpoint, "--lease-ttl", "30")
    count_file = tmp_path / "loads.txt"
    env = {"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"}
    h = start_supervisor(tmp_path, "--config", str(cfg), *etcd, workers=1, env=env, wait=False,
                         port=free_port())
    h.wait_ready(2)  # the worker and the registrar
    me = f"/geecache/registry/127.0.0.1:{h.port}"
    wait_until(lambda: me in etcd_server.keys("/geecache/registry/"), 15, what="registered")
    _fill(h)
    arena = h.arena_name()
    assert h.stop(signal.SIGUSR1) == 0
    assert "leaving lease" in h.log() and "revoked lease" not in h.log()
    assert me in etcd_server.keys("/geecache/registry/")
    second = start_supervisor(tmp_path, "--config", str(cfg), *etcd, workers=1, env=env, port=h.port,
                              wait=False)
    try:
        second.wait_ready(2)
        assert f"reattached arena {arena}" in second.log() and "hot copies dropped" in second.log()
        _fill(second)
        assert count_loads(count_file) == len(KEYS)
        wait_until(lambda: "registered 127.0.0.1" in second.log(), 15, what="registered again")
    finally:
        h.kill_leftovers()
        assert second.stop() == 0
    assert me not in etcd_server.keys("/geecache/registry/")  # a cold stop revokes the new lease


def test_warm_stop_on_port_0_removes_the_arena_after_all(tmp_path):
    """The next start on port 0 would never find it: left, it would leak."""
    cfg = _config(tmp_path)
    log_path = tmp_path / "port0.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(SUPERVISOR), "--config", str(cfg), "--port", "0",
                                 "--workers", "1", "--arena", "32MiB", "--data-dir", str(tmp_path / "data")],
                                cwd=str(REPO), env=base_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    h = Host(proc, 0, log_path)
    try:
        h.port = int(wait_until(lambda: re.search(r"listening on http://127.0.0.1:(\d+)", h.log()), 20,
                                what="the port logged").group(1))
        h.wait_ready(1)
        arena = h.arena_name()
        assert h.stop(signal.SIGUSR1) == 0
    finally:
        h.kill_leftovers()
    assert "a warm restart needs a fixed port" in h.log()
    assert not os.path.exists(f"/dev/shm/{arena}")
    assert not list((tmp_path / "data").glob("supervisor-*.state"))
