"""A real etcd and several real supervisors on loopback, for tests that pause and resume hosts.

Everything is stopped by pid (``Host.stop``); a host paused with
``pause`` (SIGSTOP to the supervisor and each of its children, as a machine
that stalls) is resumed by ``close`` before it is stopped, so nothing is left
behind.  The ``kv`` group's source is one SQLite file every host shares, as a
shared database would be; ``source_value`` reads it directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

from tests.support.etcd import start_etcd
from tests.support.net import free_port
from tests.support.proc import Host, start_supervisor, wait_until

#: A host's etcd lease in these clusters (seconds): see ``Cluster``.
LEASE_TTL = 10
#: For tests that wait for a stalled host to leave the rings by expiry: short, yet a few
#: keepalive periods (a third of it each) longer than a registrar is ever starved.
EXPIRING_LEASE_TTL = 5
TOKEN = "cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
[[groups]]
name = "kv"
sqlite = "{db}"

[[groups]]
name = "counted"
loader = "tests.support.loaders:counting"
"""


@contextlib.contextmanager
def static_hosts(tmp_path: Path, n: int, *args: str, workers: int = 1, env: dict | None = None,
                 exit_zero: bool = False):
    """*n* supervisors on free ports that list each other as static peers (``--peers``), no etcd.

    They start together and are each waited for (*workers* ready); on the way out every one is
    stopped by pid, and with *exit_zero* a host that did not exit 0 fails the test.
    """
    ports = [free_port() for _ in range(n)]
    peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    hosts: list[Host] = []
    codes: list[int] = []
    try:
        for port in ports:
            hosts.append(start_supervisor(tmp_path, "--peers", peers, *args, workers=workers, port=port,
                                          env=env, wait=False))
        for h in hosts:
            h.wait_ready(workers)
        yield hosts
    finally:
        codes = [h.stop() for h in hosts]
    if exit_zero:
        assert codes == [0] * n, codes


def member(host: Host) -> str:
    """The ring member name of *host* (its advertised address)."""
    return f"127.0.0.1:{host.port}"


class Cluster:
    """etcd plus *n* hosts of one worker each; ``close`` resumes and stops everything.

    *lease_ttl* defaults to LEASE_TTL, long enough that a registrar starved of CPU on a
    busy machine for seconds keeps its lease and its host stays in every ring.  A test
    that wants a host to leave by lease expiry passes a shorter one and waits for the
    departure as an event (``wait_members``), never for a time.
    """

    def __init__(self, tmp_path: Path, n: int = 3, *, lease_ttl: int | None = None, args: tuple = (),
                 env: dict | None = None, config: str = CONFIG) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "kv.db"
        #: The file the ``counted`` loader appends each load to (``tests.support.loaders.count_loads``).
        self.count_file = tmp_path / "loads.txt"
        self.lease_ttl = LEASE_TTL if lease_ttl is None else lease_ttl
        self.args = tuple(args)
        self.env = {"GEECACHE_TEST_COUNT_FILE": str(self.count_file),
                    "GEECACHE_TEST_LOAD_DELAY": "0", **(env or {})}
        # *config* is a TOML template; ``{db}`` is the shared SQLite file of the ``kv`` group.
        (tmp_path / "geecache.toml").write_text(config.format(db=self.db))
        self.etcd = start_etcd()
        self.hosts: list[Host] = []
        self.paused: dict[int, list[int]] = {}  # supervisor pid -> the pids stopped with it
        try:
            for _ in range(n):
                self.add_host()
            self.wait_members(self.hosts)
        except BaseException:
            self.close()
            raise

    def _start(self, port: int, env: dict | None = None) -> Host:
        return start_supervisor(
            self.tmp, "--config", str(self.tmp / "geecache.toml"), "--etcd", self.etcd.endpoint,
            "--advertise", f"127.0.0.1:{port}", "--lease-ttl", str(self.lease_ttl),
            "--auth-token", TOKEN, *self.args, workers=1, port=port, wait=False, env={**self.env, **(env or {})})

    def start_again(self, host: Host) -> Host:
        """Start a new supervisor on stopped *host*'s port (a warm restart after SIGUSR1); it
        takes *host*'s place in ``hosts``."""
        again = self._start(host.port)
        self.hosts[self.hosts.index(host)] = again
        again.wait_ready(2)
        return again

    def add_host(self, attempts: int = 3, env: dict | None = None) -> Host:
        """Start one more host (it joins the ring through etcd); *env* adds to its environment."""
        for attempt in range(attempts):
            port = free_port()
            host = self._start(port, env)
            self.hosts.append(host)
            try:
                host.wait_ready(2)  # one worker and the registrar
                return host
            except RuntimeError:
                # The port was taken between choosing and binding it: try a fresh one.
                if "cannot listen" not in host.log() or attempt == attempts - 1:
                    raise
                self.hosts.remove(host)
        raise AssertionError("unreachable")

    def members(self, host: Host) -> list[str]:
        """The member list *host* routes by."""
        return host.admin_json("/cluster")["members"]

    def wait_members(self, expected: list[Host], on: list[Host] | None = None, timeout: float | None = None):
        """Wait until every host of *on* (default: *expected*) routes by exactly *expected*."""
        want = sorted(member(h) for h in expected)
        for h in on if on is not None else expected:
            wait_until(lambda: sorted(self.members(h)) == want, timeout or self.lease_ttl + 15,
                       what=f"members {want} on :{h.port}")

    def owner(self, host: Host, key: str) -> str:
        """The owner of *key* by *host*'s ring."""
        return host.admin_json(f"/cluster?key={key}")["owner"]

    def pause(self, host: Host) -> None:
        """SIGSTOP the host's supervisor, then its children: the whole machine stalls."""
        children = host.workers()
        host.send_signal(signal.SIGSTOP)
        for pid in children:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        self.paused[host.pid] = children

    def resume(self, host: Host) -> None:
        """SIGCONT what ``pause`` stopped: children first, then the supervisor."""
        for pid in self.paused.pop(host.pid, []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            host.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass

    def put(self, host: Host, key: str, value: bytes, **params) -> int:
        """PUT *value* under kv/*key* through *host*; the status."""
        query = "".join(f"&{k}={v}" for k, v in params.items())
        return host.request("PUT", f"/api?group=kv&key={key}{query}", value, AUTH)[0]

    def delete(self, host: Host, key: str) -> int:
        """DELETE kv/*key* through *host*; the status."""
        return host.request("DELETE", f"/api?group=kv&key={key}", None, AUTH)[0]

    def read(self, host: Host, key: str) -> bytes | None:
        """GET kv/*key* through *host*: the value, or None on a 404."""
        status, body = host.get(f"/api?group=kv&key={key}")
        assert status in (200, 404), (host.port, key, status, body[:200])
        return body if status == 200 else None

    def read_all(self, host: Host, group: str, keys) -> dict:
        """key -> value of *keys* of *group* read through *host* (asserting each is found)."""
        out = {}
        for key in keys:
            status, body = host.get(f"/api?group={group}&key={key}")
            assert status == 200, (group, key, status, body[:200])
            out[key] = body
        return out

    def log_reaches_back(self, host: Host, seconds: float) -> bool:
        """True when *host*'s log of recent writes covers the last *seconds* (a younger one cannot
        vouch for them: a host back from a pause would drop all)."""
        from geecache.geecachepb import RecentWrites

        status, _, body = host.request("GET", f"/_geecache/:writes?within={seconds}", None, AUTH)
        assert status == 200, (status, body[:200])
        return RecentWrites.FromString(body).covered

    def source_value(self, key: str, now: float | None = None) -> bytes | None:
        """kv/*key* as the shared SQLite file holds it (None: absent, deleted or expired)."""
        conn = sqlite3.connect(self.db)
        try:
            cols = {row[1] for row in conn.execute("PRAGMA table_info(kv)")}
            if "deleted" not in cols:  # the table as it was before versions
                row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                return None if row is None else bytes(row[0])
            row = conn.execute("SELECT value, deleted, expire_at FROM kv WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        if row is None or row[1] or (row[2] and row[2] <= (now or time.time())):
            return None
        return bytes(row[0])

    def close(self) -> None:
        """Resume anything paused, stop every host by pid, stop etcd."""
        for h in self.hosts:
            if h.pid in self.paused:
                self.resume(h)
        for h in self.hosts:
            h.stop()
        self.etcd.close()
