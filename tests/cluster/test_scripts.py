"""scripts/start_cluster.sh and stop_cluster.sh: a real etcd and 3 real supervisors.

Free loopback ports and a temp run directory, so it never meets a developer's
own cluster on 8001-8003.  Checks what an operator relies on: every host
answers, every host registers in etcd, a second start refuses, and stop leaves
no process, no run directory and no shared-memory segment behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.etcd import find_binary
from tests.support.net import consecutive_free_ports
from tests.support.proc import alive

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "start_cluster.sh"
STOP = ROOT / "scripts" / "stop_cluster.sh"
SUPERVISOR = ROOT / "supervisor.py"
HOSTS = 3


def _supervisor_missing() -> str | None:
    if not SUPERVISOR.exists():
        return "supervisor.py is not in the tree yet"
    out = subprocess.run([sys.executable, str(SUPERVISOR), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    if out.returncode != 0 or "--etcd" not in out.stdout:
        return "supervisor.py does not support --etcd yet"
    return None


def _tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    out = [pid]
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    for child in children.split():
        out += _tree(int(child))
    return out


def _mapped_segments(pid: int) -> set[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if "/dev/shm/geecache-" in line
            and not line.endswith("(deleted)")}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return r.read()


@pytest.fixture
def cluster_env(tmp_path):
    reason = _supervisor_missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ)
    env.update({
        "GEECACHE_RUN_DIR": str(tmp_path / "run" / "cluster"),
        "GEECACHE_BASE_PORT": str(consecutive_free_ports(HOSTS)),
        "GEECACHE_ADMIN_BASE_PORT": str(consecutive_free_ports(HOSTS)),
        "GEECACHE_ETCD_PORT": str(consecutive_free_ports(2)),  # client port and peer port
        "GEECACHE_WORKERS": "1",
        "GEECACHE_ARENA": "16MiB",
        "GEECACHE_START_TIMEOUT": "60",
        "PYTHON": sys.executable,
    })
    yield env
    if Path(env["GEECACHE_RUN_DIR"]).exists():  # the test failed midway: still stop by pid
        subprocess.run(["bash", str(STOP)], env=env, capture_output=True, timeout=120)


def _run(script: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.etcd  # the cluster script starts one
def test_start_query_each_host_then_stop_leaves_nothing(cluster_env):
    env = cluster_env
    run_dir = Path(env["GEECACHE_RUN_DIR"])
    base = int(env["GEECACHE_BASE_PORT"])
    etcd_url = f"http://127.0.0.1:{env['GEECACHE_ETCD_PORT']}"

    started = _run(START, env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"curl 'http://127.0.0.1:{base}/api?key=Tom'" in started.stdout
    assert "get --prefix /geecache/registry/" in started.stdout

    pid_files = sorted((run_dir / "pids").glob("*.pid"))
    assert len(pid_files) == HOSTS + 1  # etcd + one supervisor per host
    pids = [p for f in pid_files for p in _tree(int(f.read_text()))]
    assert all(alive(p) for p in pids)
    segments = set().union(*(_mapped_segments(p) for p in pids))

    # every host answers for the same key with the same value (routed to one owner)
    values = {_get(f"http://127.0.0.1:{base + i}/api?key=Tom") for i in range(HOSTS)}
    assert len(values) == 1 and values.pop()
    admin = int(env["GEECACHE_ADMIN_BASE_PORT"])
    assert f"curl 'http://127.0.0.1:{admin}/stats'" in started.stdout
    assert all(b'"scores"' in _get(f"http://127.0.0.1:{admin + i}/stats") for i in range(HOSTS))

    # every host registered itself in etcd (bounded wait: registration may trail /healthz)
    want = {f"/geecache/registry/127.0.0.1:{base + i}" for i in range(HOSTS)}
    deadline = time.monotonic() + 30
    while True:
        keys = set(subprocess.run(
            [find_binary("etcdctl"), "--endpoints", etcd_url, "--command-timeout=3s",
             "get", "--prefix", "--keys-only", "/geecache/registry/"],
            capture_output=True, text=True, timeout=30).stdout.split())
        if want <= keys or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert want <= keys

    again = _run(START, env)
    assert again.returncode != 0
    assert "already running" in again.stderr
    assert all(alive(p) for p in pids)  # the refused start touched nothing

    # One supervisor dies hard before the stop: its arena is mapped by no one any more.
    crashed = int((run_dir / "pids" / f"host-{base}.pid").read_text())
    os.kill(crashed, signal.SIGKILL)

    stopped = _run(STOP, env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [p for p in pids if alive(p)]
    assert not run_dir.exists()
    assert not [s for s in segments if os.path.exists(s)]


def test_stop_without_a_cluster_is_a_no_op(tmp_path):
    env = dict(os.environ, GEECACHE_RUN_DIR=str(tmp_path / "nothing-here"))
    out = _run(STOP, env)
    assert out.returncode == 0
    assert "nothing to stop" in out.stdout


@pytest.mark.etcd  # the cluster script starts one
def test_start_with_a_port_taken_fails_and_leaves_nothing(cluster_env):
    env = cluster_env
    run_dir = Path(env["GEECACHE_RUN_DIR"])
    base = int(env["GEECACHE_BASE_PORT"])
    with socket.socket() as squatter:  # something else already owns the second host's port
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen()
        out = _run(START, env)
    assert out.returncode != 0
    assert f"127.0.0.1:{base + 1}" in out.stderr
    assert not run_dir.exists()  # what had started was stopped again
    etcd_port = int(env["GEECACHE_ETCD_PORT"])
    with socket.socket() as probe:  # etcd is gone: its port can be bound again
        # SO_REUSEADDR: closed connections' TIME_WAIT does not block a bind; a live listener would.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", etcd_port))
