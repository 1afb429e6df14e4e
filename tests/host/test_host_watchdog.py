"""A hung child is noticed and replaced: real SIGSTOP, real stuck loops.

Each child stamps a heartbeat from its event loop; one silent for
``--worker-timeout`` gets SIGABRT, then SIGKILL, and is replaced.  The tests
wait (bounded) for the replacement and report how long it took; they assert
no duration.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from tests.support.host import ready_workers, registrars
from tests.support.proc import alive, start_supervisor, wait_until

pytestmark = pytest.mark.procs

TIMEOUT = "2"


def _replaced(h, victim: int, workers: int):
    """True once *victim* is gone and *workers* ready workers serve again."""
    ready = ready_workers(h)
    return not alive(victim) and victim not in ready and len(ready) == workers


def test_a_sigstopped_worker_is_replaced_and_the_other_keeps_serving(tmp_path):
    h = start_supervisor(tmp_path, "--worker-timeout", TIMEOUT, workers=2)
    try:
        wait_until(lambda: len(ready_workers(h)) == 2, 20, what="workers ready")
        victim = ready_workers(h)[0]
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # The other worker answers while the stopped one waits for the watchdog.
            assert h.get("/api?key=Tom") == (200, b"630")
            wait_until(lambda: _replaced(h, victim, 2), 30, what="stopped worker replaced")
        finally:
            if alive(victim):
                os.kill(victim, signal.SIGKILL)
        print(f"hung worker replaced {time.monotonic() - stopped:.2f}s after SIGSTOP")
        log = h.log()
        assert re.search(rf"worker \d \(pid {victim}\) sent no heartbeat for [\d.]+s \(worker_timeout 2s\)"
                         r".*SIGABRT", log), log
        # A stopped process cannot act on SIGABRT: SIGKILL follows.
        assert re.search(rf"worker \d \(pid {victim}\) still there .* sending SIGKILL", log), log
        assert re.search(rf"worker \d \(pid {victim}\) died after .*killed by SIGKILL; respawning", log), log
        assert h.get("/api?key=Sam") == (200, b"567")
    finally:
        assert h.stop() == 0


def test_a_worker_whose_loop_blocks_is_aborted_with_its_stack_logged(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "b"\nloader = "tests.support.host_loaders:blocks_the_loop"\n')
    h = start_supervisor(tmp_path, "--config", str(cfg), "--worker-timeout", TIMEOUT, workers=1)
    try:
        wait_until(lambda: len(ready_workers(h)) == 1, 20, what="worker ready")
        victim = ready_workers(h)[0]
        # The request's own answer is lost with the worker; only the replacement matters here.
        t = threading.Thread(target=lambda: _quiet(h, "/api?group=b&key=block1"), daemon=True)
        t.start()
        wait_until(lambda: _replaced(h, victim, 1), 30, what="blocked worker replaced")
        log = h.log()
        assert re.search(rf"pid {victim}\) sent no heartbeat .*SIGABRT", log), log
        assert re.search(rf"pid {victim}\) died after .*killed by SIGABRT", log), log
        # faulthandler in the worker: where its loop was stuck.
        assert "Fatal Python error: Aborted" in log and "blocks_the_loop" in log, log
        assert h.get("/api?group=b&key=fine") == (200, b"value-fine")
        t.join(15)
    finally:
        assert h.stop() == 0


def _quiet(h, path: str) -> None:
    try:
        h.get(path)
    except OSError:
        pass


def test_worker_timeout_zero_turns_the_watchdog_off(tmp_path):
    h = start_supervisor(tmp_path, "--worker-timeout", "0", workers=1)
    try:
        wait_until(lambda: len(ready_workers(h)) == 1, 20, what="worker ready")
        victim = ready_workers(h)[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(3)  # longer than the shortest timeout (1 s) and its SIGKILL grace
            assert alive(victim) and "SIGABRT" not in h.log()
        finally:
            os.kill(victim, signal.SIGCONT)
        assert h.get("/api?key=Tom") == (200, b"630")
    finally:
        assert h.stop() == 0


@pytest.mark.etcd
def test_a_sigstopped_registrar_is_replaced(tmp_path, etcd_server):
    h = start_supervisor(tmp_path, "--etcd", etcd_server.endpoint, "--worker-timeout", TIMEOUT,
                         workers=1, wait=False)
    try:
        h.wait_ready()
        victim = wait_until(lambda: registrars(h), 20, what="registrar started")[0]
        # Stopped only once its loop beats: before that it would be a boot hang.
        wait_until(lambda: re.search(r"registered \S+ at .*\(lease", h.log()), 20, what="registered")
        os.kill(victim, signal.SIGSTOP)
        try:
            new = wait_until(lambda: [p for p in registrars(h) if p != victim and not alive(victim)],
                             30, what="stopped registrar replaced")
        finally:
            if alive(victim):
                os.kill(victim, signal.SIGKILL)
        log = h.log()
        assert re.search(rf"registrar \(pid {victim}\) sent no heartbeat .*SIGABRT", log), log
        assert re.search(rf"registrar \(pid {victim}\) exited: killed by SIGKILL", log), log
        assert new and h.get("/api?key=Tom") == (200, b"630")
    finally:
        assert h.stop() == 0
