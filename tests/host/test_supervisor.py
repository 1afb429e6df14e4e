"""The supervisor as a process: demo, stop, respawn, resize, boot storms, bad configs."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

from tests.support.loaders import count_loads
from tests.support.proc import REPO, alive, run_supervisor, start_supervisor, wait_until

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs


def shm_exists(name: str | None) -> bool:
    return bool(name) and Path("/dev/shm", name.lstrip("/")).exists()


def test_demo_serves_and_sigterm_cleans_up(tmp_path):
    h = start_supervisor(tmp_path, workers=2)
    arena = h.arena_name()
    metrics_dir = re.search(r"metrics directory (\S+)", h.log()).group(1)
    workers = h.workers()
    assert h.get("/api?key=Tom") == (200, b"630")
    assert h.get("/api?key=Jack") == (200, b"589")
    assert h.get("/api?key=Sam") == (200, b"567")
    assert shm_exists(arena) and os.path.isdir(metrics_dir)
    assert h.stop(signal.SIGTERM) == 0
    assert not shm_exists(arena)
    assert not os.path.exists(metrics_dir)
    assert not any(alive(p) for p in workers)
    # The demo database persists: a second run does not re-seed over a change.
    h = start_supervisor(tmp_path, workers=1)
    try:
        assert h.request("PUT", "/api?key=Tom", b"700")[0] == 204
    finally:
        assert h.stop() == 0
    h = start_supervisor(tmp_path, workers=1)
    try:
        assert h.get("/api?key=Tom") == (200, b"700")
    finally:
        assert h.stop(signal.SIGINT) == 0


def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "slow"\nloader = "tests.support.loaders:counting"\n')
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=1,
                         env={"GEECACHE_TEST_LOAD_DELAY": "1.0", "GEECACHE_TEST_COUNT_FILE": str(count_file)})
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", h.get("/api?key=inflight")))
    t.start()
    # The request is inside the loader (which sleeps 1 s) when the stop begins.
    wait_until(lambda: count_loads(count_file, "inflight") == 1, 10, what="load started")
    assert h.stop(signal.SIGTERM) == 0
    t.join(10)
    assert result["r"] == (200, b"value-inflight")


def _load(port: int, keys: list[str], rounds: int, stop: threading.Event, out: list) -> None:
    """Bounded concurrent GETs of *keys* (fresh connections); records (key, status, body)."""
    async def run():
        connector = aiohttp.TCPConnector(force_close=True, limit=8)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async def one(key):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/api?group=c&key={key}") as resp:
                        out.append((key, resp.status, await resp.read()))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    out.append((key, None, repr(exc).encode()))  # a connection cut by the kill
            for _ in range(rounds):
                if stop.is_set():
                    break
                await asyncio.gather(*(one(k) for k in keys))
    asyncio.run(run())


def test_sigkill_worker_under_load_is_respawned_and_cache_survives(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\n')
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"})
    try:
        keys = [f"k{i}" for i in range(20)]
        for k in keys:
            assert h.get(f"/api?group=c&key={k}") == (200, f"value-{k}".encode())
        loads_before = count_loads(count_file)
        assert loads_before == len(keys)
        hits_before = h.admin_json("/stats")["c"]["local_hits"]
        victim = h.workers()[0]
        stop, out = threading.Event(), []
        loader = threading.Thread(target=_load, args=(h.port, keys, 30, stop, out))
        loader.start()
        wait_until(lambda: len(out) >= 40, 10, what="load running")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 30, what="victim gone")
        new = h.wait_workers(2, timeout=30)
        assert victim not in new
        loader.join(30)
        stop.set()
        assert not loader.is_alive()
        answered = [(k, s, b) for k, s, b in out if s is not None]
        assert len(answered) >= len(out) - 8  # at most the victim's in-flight requests fail
        assert all(s == 200 and b == f"value-{k}".encode() for k, s, b in answered), "a wrong value"
        # After the kill: every key still a hit, no reload from the source.
        for k in keys:
            assert h.get(f"/api?group=c&key={k}") == (200, f"value-{k}".encode())
        assert count_loads(count_file) == loads_before
        assert h.admin_json("/stats")["c"]["local_hits"] > hits_before
        assert re.search(rf"worker \d \(pid {victim}\) died after .*killed by SIGKILL", h.log())
    finally:
        assert h.stop() == 0


def test_ttin_ttou_change_the_worker_count(tmp_path):
    # One signal at a time: two of the same kind pending at once coalesce (POSIX).
    h = start_supervisor(tmp_path, workers=2)
    try:
        h.send_signal(signal.SIGTTIN)
        three = h.wait_workers(3)
        h.send_signal(signal.SIGTTOU)
        h.wait_workers(2)
        h.send_signal(signal.SIGTTOU)
        one = h.wait_workers(1)
        assert set(one) <= set(three)
        h.send_signal(signal.SIGTTOU)  # never below one
        wait_until(lambda: h.log().count("worker count now 1") == 2, 30, what="third SIGTTOU handled")
        assert h.workers() == one
        assert h.get("/api?key=Sam") == (200, b"567")
        assert h.log().count("retired: exit status 0") == 2
    finally:
        assert h.stop() == 0


def test_worker_retired_while_still_booting_leaves(tmp_path):
    """SIGTTOU right after SIGTTIN: the new worker gets SIGTERM before it has its own
    handlers; blocked across the fork, the signal waits for them instead of being lost."""
    h = start_supervisor(tmp_path, workers=1)
    try:
        seen = set()
        for _ in range(8):
            h.send_signal(signal.SIGTTIN)
            seen.update(h.wait_workers(2))
            h.send_signal(signal.SIGTTOU)
            seen.update(h.wait_workers(1, timeout=15))
        assert not [p for p in seen - set(h.workers()) if alive(p)]
        assert h.get("/api?key=Jack") == (200, b"589")
    finally:
        assert h.stop() == 0


def test_workers_exit_when_the_supervisor_dies(tmp_path):
    h = start_supervisor(tmp_path, workers=2)
    workers = h.workers()
    arena = h.arena_name()
    os.kill(h.pid, signal.SIGKILL)
    h.proc.wait(10)
    try:
        wait_until(lambda: not any(alive(p) for p in workers), 10, what="orphans gone")
    finally:
        h.kill_leftovers()
        # A SIGKILLed supervisor cannot unlink; clean up what it left, as an operator would.
        if shm_exists(arena):
            os.unlink(Path("/dev/shm", arena.lstrip("/")))


def test_boot_failure_storm_stops_the_host(tmp_path):
    """Workers that cannot boot are respawned ever later (each delay logged), then the host
    halts with exit 3, its arena unlinked."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\n')
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2, wait=False,
                         env={"GEECACHE_TEST_DIE_IN_CHILD": "1"})
    try:
        code = h.proc.wait(60)
    finally:
        h.kill_leftovers()
    log = h.log()
    assert code == 3, log
    delays = [float(d) for d in re.findall(r"before it was ready: exit status 1; boot failure \d+ of \d+ "
                                           r"in a row; respawning in ([\d.]+)s", log)]
    assert len(delays) >= 4, log
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert "times in a row" in log and "stopping instead of restarting" in log
    assert not alive(h.pid)
    assert not shm_exists(h.arena_name())


def test_worker_boot_error_stops_the_host(tmp_path):
    # The group's database passes the config check, then is replaced by junk: every
    # respawned worker fails to open it at boot, and the supervisor stops at the first
    # WORKER_BOOT_ERROR instead of respawning into the same failure.
    db = tmp_path / "s.db"
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[[groups]]\nname = "s"\nsqlite = "{db}"\n')
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2)
    try:
        for extra in ("-wal", "-shm"):
            Path(str(db) + extra).unlink(missing_ok=True)
        db.write_bytes(b"not a database, just junk " * 200)
        for p in h.workers():
            os.kill(p, signal.SIGKILL)
        code = h.proc.wait(30)
    finally:
        h.kill_leftovers()
    assert code == 3, h.log()
    assert "failed to boot" in h.log() and "stopping instead of restarting" in h.log()
    assert not shm_exists(h.arena_name())


@pytest.mark.parametrize("config,field", [
    ('[[groups]]\nname = "a"\nloader = "tests.support.loaders:counting"\n'
     '[[groups]]\nname = "b"\nloader = "tests.support.loaders:counting"\nmax_bytes = "12 parsecs"\n',
     "groups[1].max_bytes"),
    ('[[groups]]\nname = "a"\nloader = "no_such_module_xyz:load"\n', "groups[0].loader"),
    ('[[groups]]\nname = "a"\nloader = "tests.support.loaders:counting"\nsqlite = "x.db"\n', "groups[0]"),
    ('[[groups]]\nname = "a"\nloader = "tests.support.loaders:counting"\npolicy = "mru"\n', "groups[0].policy"),
    ('[[groups]]\nname = "a"\nloader = "tests.support.loaders:counting"\n' * 2, "groups[1].name"),
    ('workers = 0\n', "workers"),
    (''.join(f'[[groups]]\nname = "g{i}"\nloader = "tests.support.loaders:counting"\nmax_bytes = "10MiB"\n'
             for i in range(3)),
     "groups[2].max_bytes"),  # each fits the arena, all three do not: caught before fork too
])
def test_invalid_config_exits_2_naming_the_field(tmp_path, config, field):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    r = run_supervisor("--config", str(path), "--port", "0", "--arena", "32MiB",
                       "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("config error:")]
    assert line and line[0].startswith(f"config error: {field}: "), r.stderr
    assert "Traceback" not in r.stderr
    assert "started worker" not in r.stderr


def test_bad_flags_and_help(tmp_path):
    r = run_supervisor("--lease-ttl", "1", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "config error: --lease-ttl: must be at least 2" in r.stderr
    r = run_supervisor("--help")
    assert r.returncode == 0 and "--workers" in r.stdout and "--etcd" in r.stdout


def test_host_level_config_errors_exit_2_before_forking(tmp_path):
    # An arena /dev/shm cannot hold would fail later as SIGBUS in a worker.
    r = run_supervisor("--port", "0", "--arena", "100000GiB", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "config error: --arena: " in r.stderr and "--shm-size" in r.stderr, r.stderr
    # A wildcard bind is no address peers can reach: etcd needs an explicit --advertise.
    r = run_supervisor("--port", "0", "--host", "0.0.0.0", "--trusted-network", "--etcd", "http://127.0.0.1:9",
                       "--arena", "32MiB", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "config error: advertise: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "started worker" not in r.stderr


def test_many_groups_fit_the_arena(tmp_path):
    """Each group also takes a record for its hot partition: 20 groups must still start."""
    path = tmp_path / "many.toml"
    path.write_text("".join(f'[[groups]]\nname = "g{i}"\nloader = "tests.support.loaders:sync_upper"\n'
                            f'max_bytes = "1MiB"\n' for i in range(20)))
    host = start_supervisor(tmp_path, "--config", str(path), workers=1)
    try:
        assert host.get("/api?group=g19&key=abc") == (200, b"ABC")
    finally:
        assert host.stop() == 0


def test_supervisor_never_imports_grpc():
    code = ("import sys; sys.argv = ['supervisor.py']; import supervisor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'aetcd')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_sigttin_beyond_the_arenas_process_rows_is_refused(tmp_path):
    # Three stat rows: two workers, a third by SIGTTIN, and no more.
    h = start_supervisor(tmp_path, "--process-rows", "3", workers=2)
    try:
        h.send_signal(signal.SIGTTIN)
        three = h.wait_workers(3)
        h.send_signal(signal.SIGTTIN)
        wait_until(lambda: "SIGTTIN refused" in h.log(), 10, what="the refusal logged")
        assert "process_rows" in h.log()
        assert sorted(h.workers()) == sorted(three)
        assert h.get("/api?key=Tom") == (200, b"630")
    finally:
        assert h.stop() == 0


@pytest.mark.parametrize("args,env,field", [
    ((), {"GEECACHE_LOG_LEVEL": "verbose"}, "GEECACHE_LOG_LEVEL"),   # was a traceback
    (("--graceful-timeout", "nan"), {}, "--graceful-timeout"),       # was accepted: no draining
    (("--workers", "70", "--process-rows", "64"), {}, "--workers"),  # more workers than stat rows
    (("--port", "eighty"), {}, "--port"),
])
def test_bad_settings_from_flags_and_environment_exit_2_naming_them(tmp_path, args, env, field):
    r = run_supervisor(*args, "--data-dir", str(tmp_path), env=env)
    assert r.returncode == 2, r.stderr
    assert f"config error: {field}: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "started worker" not in r.stderr


def test_python_m_geecache_is_the_supervisor():
    r = subprocess.run([sys.executable, "-m", "geecache", "--help"], cwd=str(REPO), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--workers" in r.stdout and "GEECACHE_WORKERS" in r.stdout, r.stderr
