"""A kill storm never stops the host.

Real supervisors, real SIGKILLs, a bounded real client load.  A worker the
supervisor has seen become ready may be killed at any rate: it is respawned
and the host keeps answering with the right values.  Only a death before
ready counts as a boot failure (tests/host/test_supervisor.py has the halts).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
import time

import pytest

from tests.support.host import ready_workers
from tests.support.loaders import count_loads
from tests.support.proc import start_supervisor, wait_until

pytestmark = pytest.mark.procs

#: Client threads, each one request at a time on a fresh connection: a kill
#: can fail at most the requests in flight on the killed worker.
CLIENTS = 2


class Load:
    """CLIENTS threads GETting *keys* until stopped; counts answers by kind."""

    def __init__(self, port: int, keys: list[str]) -> None:
        self.port = port
        self.keys = keys
        self.stop = threading.Event()
        self.ok = self.failed = self.wrong = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.wrong

    def _run(self, n: int) -> None:
        i = n
        while not self.stop.is_set():
            key = self.keys[i % len(self.keys)]
            i += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", f"/api?group=c&key={key}")
                resp = conn.getresponse()
                body = resp.read()
                good = resp.status == 200 and body == f"value-{key}".encode()
                kind = "ok" if good else ("wrong" if resp.status == 200 else "failed")
                why = f"{resp.status} {body[:80]!r}"
            except (OSError, http.client.HTTPException) as exc:
                kind, why = "failed", repr(exc)  # a connection cut by the kill
            finally:
                conn.close()
            with self._lock:
                setattr(self, kind, getattr(self, kind) + 1)
                if kind != "ok" and len(self.failures) < 20:
                    self.failures.append(why)


def storm(h, kills: int, interval: float, load: Load, deadline: float = 120.0) -> int:
    """SIGKILL a ready worker every *interval* s until *kills* were sent (bounded); the count."""
    done = 0
    end = time.monotonic() + deadline
    victims: list[int] = []
    while done < kills and time.monotonic() < end:
        assert h.proc.poll() is None, f"supervisor exited with {h.proc.returncode}:\n{h.log()[-3000:]}"
        ready = [p for p in ready_workers(h) if p not in victims]
        if not ready:
            time.sleep(0.02)
            continue
        victim = ready[done % len(ready)]
        os.kill(victim, signal.SIGKILL)
        victims.append(victim)
        done += 1
        time.sleep(interval)
    return done


def start(tmp_path, workers: int):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\n')
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=workers,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"})
    keys = [f"k{i}" for i in range(20)]
    for k in keys:
        assert h.get(f"/api?group=c&key={k}") == (200, f"value-{k}".encode())
    wait_until(lambda: len(ready_workers(h)) == workers, 20, what="workers ready")
    return h, keys, count_file


def check_survived(h, load: Load, kills: int, wanted: int) -> None:
    assert kills == wanted, f"only {kills} kills sent within the deadline:\n{h.log()[-3000:]}"
    assert h.proc.poll() is None, f"supervisor exited with {h.proc.returncode}:\n{h.log()[-3000:]}"
    assert load.wrong == 0, load.failures
    # Each kill can fail at most the requests in flight on the killed worker.
    assert load.failed <= kills * CLIENTS, (load.failed, load.total, load.failures)
    assert "stopping instead of restarting" not in h.log()
    print(f"kills={kills} requests={load.total} failed={load.failed} wrong={load.wrong}")


def test_sixty_sigkills_at_200ms_under_load_leave_the_host_up(tmp_path):
    h, keys, count_file = start(tmp_path, workers=2)
    try:
        loads_before = count_loads(count_file)
        with Load(h.port, keys) as load:
            wait_until(lambda: load.ok >= 50, 10, what="load running")
            kills = storm(h, 60, 0.2, load)
            # Keep the load running until a fresh set of workers serves it.
            wait_until(lambda: len(ready_workers(h)) == 2, 20, what="workers ready after the storm")
            settled = load.ok
            wait_until(lambda: load.ok >= settled + 20, 10, what="load served after the storm")
        # (A share of failures would measure the machine's speed: a slow one sends fewer
        # requests per kill.  The bound per kill, in check_survived, is the invariant.)
        check_survived(h, load, kills, 60)
        assert h.get("/healthz")[0] == 200
        # The arena outlived 60 workers: no key was loaded again.
        assert count_loads(count_file) == loads_before
        assert len(re.findall(r"died after [\d.]+s: killed by SIGKILL; respawning", h.log())) == 60
    finally:
        assert h.stop() == 0


def test_one_worker_killed_every_second_is_respawned_each_time(tmp_path):
    h, keys, _ = start(tmp_path, workers=1)
    try:
        with Load(h.port, keys) as load:
            wait_until(lambda: load.ok >= 50, 10, what="load running")
            kills = storm(h, 6, 1.0, load)
            wait_until(lambda: len(ready_workers(h)) == 1, 20, what="worker ready after the kills")
            settled = load.ok
            wait_until(lambda: load.ok >= settled + 20, 10, what="load served after the kills")
        check_survived(h, load, kills, 6)
        assert h.get("/api?group=c&key=k1") == (200, b"value-k1")
    finally:
        assert h.stop() == 0
