"""Start a real supervisor on a free loopback port, talk to it, stop it by pid.

Every ``Host`` is stopped by its own pid (SIGTERM, then SIGKILL of it and
the children it had), so a failing test leaves no process holding a port
and no worker orphaned; the arena of a supervisor that died by a signal
(it could not unlink it) is unlinked too, so none stays in /dev/shm.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
SUPERVISOR = REPO / "supervisor.py"
SHM_DIR = Path("/dev/shm")
#: An arena name as geecache.shm.segment makes them (never a path).
SHM_NAME = re.compile(r"geecache-[A-Za-z0-9_.-]+")


def child_pids(pid: int) -> list[int]:
    """Direct children of *pid* (Linux /proc), in no particular order."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


#: Every deadline of ``wait_until`` is stretched by this factor ($GEECACHE_TEST_PATIENCE, default
#: 3): a deadline costs nothing while the condition comes, and a busy CI machine must not turn
#: a slow event into a failure.  A wait written as "10 s" allows 30 s.
PATIENCE = float(os.environ.get("GEECACHE_TEST_PATIENCE", "3"))


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll *predicate* until it returns a truthy value (returned), or raise TimeoutError.

    *timeout* is what the condition normally needs, generously; the wait allows PATIENCE
    times that.
    """
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One HTTP request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


#: The pause threshold the tests' hosts run with unless a test asks for the real one
#: (``REAL_PAUSES``).  On a busy machine a CPU-starved worker loop stalls for seconds; the
#: pause guard then asks the other hosts what they wrote and, when a young host's log cannot
#: say, drops every copy: correct, and a reload storm that tests counting loads would take
#: for a bug.  Tests of pauses themselves (SIGSTOPped hosts that must drop what was written
#: meanwhile) pass ``env=REAL_PAUSES``.
TEST_PAUSE_THRESHOLD = "60"
#: The environment of a host whose pause guard runs at its production threshold.
REAL_PAUSES = {"GEECACHE_PAUSE_THRESHOLD": "0.9"}


def base_env(extra: dict | None = None) -> dict:
    """The environment a supervisor subprocess gets: the repo importable, no stray metrics dir,
    and the tests' pause threshold (``TEST_PAUSE_THRESHOLD``) unless *extra* sets one."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("GEECACHE_PAUSE_THRESHOLD", TEST_PAUSE_THRESHOLD)
    env.update(extra or {})
    return env


class Host:
    """A running supervisor process and what a test needs from it."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, admin_port: int | None = None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.admin_port = admin_port  # the aiohttp admin plane: /metrics, /stats, /cluster
        self.log_path = log_path
        self._seen_children: set[int] = set()

    def log(self) -> str:
        """Everything the supervisor and its workers logged so far."""
        return self.log_path.read_text(errors="replace")

    def arena_name(self) -> str | None:
        """The shared-memory segment name the supervisor logged."""
        m = re.search(r"; arena (\S+)", self.log())
        return m.group(1) if m else None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one request to this host."""
        return request(self.port, method, path, body, headers)

    def get(self, path: str) -> tuple[int, bytes]:
        status, _h, body = self.request("GET", path)
        return status, body

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def admin_request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one request to this host's admin port."""
        return request(self.admin_port, method, path, body, headers)

    def admin_get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of a GET on the admin port (``/metrics``, ``/stats``, ``/cluster``)."""
        status, _h, body = self.admin_request("GET", path)
        return status, body

    def admin_json(self, path: str):
        """The JSON document the admin port answers at *path* (asserting a 200)."""
        status, body = self.admin_get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def workers(self) -> list[int]:
        """Pids of the supervisor's live children (workers, and the registrar if any)."""
        pids = [p for p in child_pids(self.pid) if alive(p)]
        self._seen_children.update(pids)
        return pids

    def wait_workers(self, n: int, timeout: float = 20.0) -> list[int]:
        """Wait until exactly *n* children are alive; return their pids."""
        return wait_until(lambda: (lambda w: w if len(w) == n else None)(self.workers()),
                          timeout, what=f"{n} workers")

    def wait_ready(self, workers: int | None = None, timeout: float = 20.0) -> None:
        """Wait until /healthz answers (and *workers* children are up)."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.request("GET", "/healthz")[0] == 200 and (
                    self.admin_port is None or self.admin_request("GET", "/healthz")[0] == 200)
            except OSError:
                return False
        wait_until(ready, timeout, what="supervisor ready")
        if workers is not None:
            self.wait_workers(workers, timeout)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop the supervisor by pid; SIGKILL it and its children if it hangs. Its exit code."""
        self.workers()
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                self.kill_leftovers()
        self.kill_leftovers()
        return self.proc.returncode

    def kill_leftovers(self) -> None:
        """SIGKILL the supervisor and any child it had, if still alive; then drop its arena
        if it died by a signal (see ``_unlink_orphaned_arena``)."""
        if self.proc.poll() is None:
            self.workers()
            self.proc.kill()
            self.proc.wait(10)
        for pid in self._seen_children:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._unlink_orphaned_arena()

    def _unlink_orphaned_arena(self) -> None:
        """Unlink this host's own segment when a signal killed the supervisor.

        Only then: a supervisor that exited by itself had its chance to unlink,
        and tests assert that it did, so cleaning up after it here would hide
        that bug.  Only the one name it logged, never a glob: other hosts (and
        other people's runs) share /dev/shm.
        """
        if self.proc.returncode is None or self.proc.returncode >= 0:
            return
        name = self.arena_name()
        if not name or not SHM_NAME.fullmatch(name):
            return
        # Unlinking under a still-mapped child is harmless, but wait (bounded) for the
        # children to be gone so nothing can attach to the name in between.
        try:
            wait_until(lambda: not any(alive(p) for p in self._seen_children), 5.0,
                       what="children of a killed supervisor gone")
        except TimeoutError:
            pass
        try:
            (SHM_DIR / name).unlink()
        except FileNotFoundError:
            pass


def start_supervisor(tmp_path: Path, *args: str, workers: int = 2, env: dict | None = None,
                     wait: bool = True, port: int | None = None) -> Host:
    """Start ``supervisor.py`` on a free port with a data dir under *tmp_path*.

    With no *port* given, a port taken between choosing and binding it (an
    outgoing connection's ephemeral port, say) is retried on a fresh one.
    """
    for attempt in range(3 if port is None and wait else 1):
        host = _start_supervisor(tmp_path, args, workers, env, port or free_port())
        if not wait:
            return host
        try:
            host.wait_ready(workers)
            return host
        except BaseException:
            host.kill_leftovers()
            if attempt == 2 or port is not None or "cannot listen" not in host.log():
                raise
    raise AssertionError("unreachable")


def _start_supervisor(tmp_path: Path, args, workers: int, env: dict | None, port: int) -> Host:
    log_path = tmp_path / f"supervisor-{port}.log"
    # A free admin port of its own: the default (port + 1000) may be another test's.
    admin = [] if "--admin-port" in args else ["--admin-port", str(free_port())]
    cmd = [sys.executable, str(SUPERVISOR), "--port", str(port), "--workers", str(workers),
           "--data-dir", str(tmp_path / "data"), "--arena", "32MiB", "--graceful-timeout", "5", *admin, *args]
    admin_port = int(admin[1]) if admin else int(args[list(args).index("--admin-port") + 1])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=base_env(env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    return Host(proc, port, log_path, admin_port)


def fork(fn, *args) -> int:
    """Run fn(*args) in a forked child that exits 0 on success, 1 on an exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pids, timeout: float = 60.0) -> dict[int, int]:
    """Wait for every pid (killing stragglers after *timeout*); pid -> exit status."""
    deadline = time.monotonic() + timeout
    status: dict[int, int] = {}
    pending = set(pids)
    while pending:
        for pid in list(pending):
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status[pid] = st
                pending.discard(pid)
        if pending and time.monotonic() > deadline:
            for pid in pending:
                os.kill(pid, signal.SIGKILL)
                status[pid] = os.waitpid(pid, 0)[1]
            raise AssertionError(f"children {sorted(pending)} did not finish in {timeout}s (wedged?)")
        time.sleep(0.01)
    return status


def run_supervisor(*args: str, env: dict | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``supervisor.py`` to completion (for configs that must fail): its result."""
    return subprocess.run([sys.executable, str(SUPERVISOR), *args], cwd=str(REPO), env=base_env(env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def child_holding(fn, timeout: float = 30.0):
    """Run fn() in a forked child that then stays alive until the block ends.

    The block starts once fn() has returned in the child; at its end the
    child is released, reaped and must have exited 0.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def body() -> None:
        fn()
        os.write(ready_w, b"x")
        select.select([done_r], [], [], timeout)  # bounded: the parent writes long before

    pid = fork(body)
    try:
        assert select.select([ready_r], [], [], timeout)[0], "the child never got ready"
        yield pid
    finally:
        os.write(done_w, b"x")
        status = reap([pid], timeout=timeout)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)
    assert list(status.values()) == [0]
