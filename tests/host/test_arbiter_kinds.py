"""The arbiter's loop over a fake child kind (``tests/support/fake_arbiter.py``): real forks and
real signals, no workers, so the loop's own promises are pinned apart from what workers do.

gunicorn's arbiter is tested through its workers; ours keeps the kinds' policies (respawn,
backoff, boot failures) in ``children.py`` and the loop's (reap, watchdog, halt, stop) here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.support.proc import REPO, base_env, wait_until

pytestmark = pytest.mark.procs


class FakeHost:
    """``fake_arbiter`` in a subprocess; ``events`` fills from its stdout as they happen."""

    def __init__(self, tmp_path, slots: int, *plan: str) -> None:
        self.err = open(tmp_path / "arbiter.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_arbiter", str(slots), *plan],
                                     cwd=REPO, env=base_env(), stdout=subprocess.PIPE, stderr=self.err)
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.log_path = tmp_path / "arbiter.log"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def seen(self, event: str, **fields) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == event
                and all(e.get(k) == v for k, v in fields.items())]

    def wait(self, event: str, count: int = 1, **fields) -> list[dict]:
        return wait_until(lambda: (lambda found: found if len(found) >= count else None)(self.seen(event, **fields)),
                          30, what=f"{count} x {event} {fields}")

    def children(self) -> set[int]:
        """The pids spawned and not yet reaped."""
        return {e["pid"] for e in self.seen("spawned")} - {e["pid"] for e in self.seen("exited")}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for pid in self.children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reader.join(10)
            self.err.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def hosts():
    made: list[FakeHost] = []
    yield made
    for h in made:
        h.stop(signal.SIGKILL)


def test_a_child_killed_after_it_became_ready_is_reaped_and_replaced(tmp_path, hosts):
    h = FakeHost(tmp_path, 1, "beat")
    hosts.append(h)
    [first] = h.wait("ready")
    os.kill(first["pid"], signal.SIGKILL)
    [gone] = h.wait("exited", pid=first["pid"])
    assert gone["code"] == -signal.SIGKILL
    again = h.wait("ready", count=2)[1]
    assert again["pid"] != first["pid"] and again["slot"] == 0
    assert h.stop() == 0
    assert h.seen("stopped") == [{"event": "stopped", "code": 0}]


def test_a_child_that_never_beats_is_aborted_by_the_watchdog_and_replaced(tmp_path, hosts):
    h = FakeHost(tmp_path, 1, "silent", "beat")  # the first child hangs, its replacement serves
    hosts.append(h)
    [silent] = h.wait("spawned", behaviour="silent")
    [aborted] = h.wait("exited", pid=silent["pid"])
    assert aborted["code"] == -signal.SIGABRT  # worker_timeout (2 s) without a heartbeat
    h.wait("ready")
    assert "not ready" in h.log() and "SIGABRT" in h.log()
    assert h.stop() == 0


def test_a_kind_that_halts_the_host_stops_it_with_the_boot_failure_status(tmp_path, hosts):
    h = FakeHost(tmp_path, 2, "beat", "halt")
    hosts.append(h)
    assert h.proc.wait(60) == 3  # EXIT_BOOT_FAILED
    assert h.seen("stopped") == [{"event": "stopped", "code": 3}]
    assert "asked to halt the host" in h.log()
    # The healthy sibling was stopped too, not left behind.
    assert h.children() == set()


def test_sigterm_stops_every_child_gracefully_then_exits_0(tmp_path, hosts):
    h = FakeHost(tmp_path, 2, "beat")
    hosts.append(h)
    h.wait("ready", count=2)
    assert h.stop(signal.SIGTERM) == 0
    codes = sorted(e["code"] for e in h.seen("exited"))
    assert codes == [0, 0]  # each child ran its own SIGTERM handler: nothing was killed
    assert "did not stop in time" not in h.log()
