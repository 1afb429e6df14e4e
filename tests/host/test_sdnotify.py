"""systemd's Type=notify, against a real AF_UNIX datagram socket given as $NOTIFY_SOCKET: READY=1
only once the workers serve, WATCHDOG=1 from the arbiter's loop, STOPPING=1 at the stop; and the
documented unit passes ``systemd-analyze verify``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geecache.host.sdnotify import Notifier
from tests.support.host import ready_workers
from tests.support.proc import start_supervisor

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    return sock


def _messages_until(sock: socket.socket, want: str, timeout: float, seen: list) -> dict:
    """Datagrams (as dicts) until one carries *want*=1; each is appended to *seen*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        seen.append((time.monotonic(), msg))
        if msg.get(want) == "1":
            return msg
    raise AssertionError(f"no {want}=1 within {timeout}s; got {[m for _, m in seen]}")


@pytest.mark.procs
def test_ready_after_the_workers_serve_then_watchdog_and_stopping(tmp_path):
    path = tmp_path / "notify.sock"
    sock = _listener(path)
    seen: list = []
    h = start_supervisor(tmp_path, workers=2, wait=False,
                         env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    try:
        ready = _messages_until(sock, "READY", 60, seen)
        # When systemd hears READY=1, both workers have stamped their first heartbeat.
        assert len(ready_workers(h)) == 2, h.log()
        assert h.get("/api?key=Tom") == (200, b"630")
        assert ready["MAINPID"] == str(h.pid)
        assert re.fullmatch(r"serving on 127\.0\.0\.1:\d+ with 2 workers", ready["STATUS"])
        assert sum(1 for _, m in seen if m.get("READY") == "1") == 1
        # WATCHDOG_USEC 0.4 s: a beat every 0.2 s at most, the loop turning at least once a second.
        _messages_until(sock, "WATCHDOG", 30, seen)
        _messages_until(sock, "WATCHDOG", 30, seen)
        assert h.stop() == 0
        _messages_until(sock, "STOPPING", 10, seen)
    finally:
        h.kill_leftovers()
        sock.close()
    assert sum(1 for _, m in seen if m.get("READY") == "1") == 1  # once, not per worker


def test_no_notify_socket_no_messages_and_a_watchdog_for_another_pid_is_ignored(tmp_path):
    environ = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "1000000",
               "WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = Notifier.from_environ(environ)
    assert environ == {}  # taken out, so no child talks to systemd in the supervisor's name
    assert notifier.watchdog_interval == 0
    assert not Notifier.from_environ({}).send("READY=1")


def test_an_abstract_notify_socket_is_reached(tmp_path):
    name = f"geecache-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"})
        assert notifier.watchdog_interval == 0.5
        notifier.ready("serving")
        notifier.ready("again")  # once per process
        notifier.beat(now=100.0)
        notifier.beat(now=100.1)  # within half the interval: nothing
        notifier.beat(now=100.6)
        got = [sock.recv(4096).decode() for _ in range(3)]
    assert got[0].splitlines()[:2] == ["READY=1", "STATUS=serving"]
    assert got[1:] == ["WATCHDOG=1", "WATCHDOG=1"]


def test_a_gone_notify_socket_is_not_fatal(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert not notifier.send("READY=1")
    assert not notifier.send("READY=1")
    assert len([r for r in caplog.records if "notify socket" in r.getMessage()]) == 1


@pytest.mark.procs
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_documented_unit_is_type_notify_and_verifies(tmp_path):
    m = re.search(r"```ini\n(# /etc/systemd/system/geecache.service\n.*?)```", DOC.read_text(), re.S)
    assert m, "docs/operations.md has no unit file"
    unit = m.group(1)
    assert "\nType=notify\n" in unit and "\nWatchdogSec=" in unit and "\nNotifyAccess=main\n" in unit
    path = tmp_path / "geecache.service"
    # The ExecStart binary must exist for verify: this interpreter stands in for the venv's.
    path.write_text(unit.replace("/opt/geecache/bin/geecache", sys.executable))
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
