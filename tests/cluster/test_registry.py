"""Registration and discovery against a real etcd, with registrars in real processes.

Each registrar runs the way the supervisor runs it: a clean interpreter (a
subprocess standing in for the supervisor, which never imports grpc) forks a
child that calls `registrar_main` and leaves with `os._exit`. We do not fork
from the pytest process itself: other test modules in the same session may
have loaded grpc here, and forking a process with a live gRPC runtime is
exactly what hangs. The child's `on_members` writes the list to a JSON file
by atomic rename; the test polls it with bounded waits. Keys are checked with
`etcdctl`, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geecache.errors import ConfigError
from geecache.cluster.registry import (
    REGISTRY_PREFIX,
    parse_endpoints,
    registry_key,
    run_registrar,
    validate_advertise,
)
from tests.support.etcd import EtcdServer
from tests.support.proc import PATIENCE

ROOT = Path(__file__).resolve().parents[2]
#: For the tests that wait for a lease to expire: a few keepalive periods (a third of it
#: each) longer than a registrar starved of CPU on a busy machine ever waits.
EXPIRING_TTL = 5

# The stand-in supervisor: asserts it is grpc-free, forks the registrar,
# prints the child's pid, and exits with the child's exit code (128+N if
# signal N killed it, as a shell reports it).
_SUPERVISOR = r"""
import json, os, sys
from geecache.cluster.registry import registrar_main
assert "grpc" not in sys.modules and "aetcd" not in sys.modules, "supervisor imported grpc"
endpoints, advertise, ttl, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def on_members(members):
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(members, f)
    os.replace(tmp, out)

pid = os.fork()
if pid == 0:
    code = 1
    try:
        code = registrar_main(endpoints, advertise, ttl, on_members)
    finally:
        os._exit(code)
print(pid, flush=True)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def wait_until(pred, timeout: float, what: str):
    """Poll `pred` until it returns a truthy value; fail the test after PATIENCE x `timeout` s."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Registrar:
    """One registrar process tree: the stand-in supervisor and its forked registrar."""

    def __init__(self, endpoints: str, advertise: str, ttl: int, tmp: Path) -> None:
        self.advertise = advertise
        self.out = tmp / f"members-{advertise.replace(':', '_')}.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISOR, endpoints, advertise, str(ttl), str(self.out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()  # bounded by the child printing or exiting
        if not line.strip().isdigit():
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"registrar did not start: {line!r}\n{err}")
        self.pid = int(line)

    def members(self) -> list[str] | None:
        try:
            return json.loads(self.out.read_text())
        except (OSError, ValueError):
            return None

    def signal(self, sig: int) -> None:
        # Only while its parent runs: until the parent has reaped it, the
        # pid cannot have been reused by another process.
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> str:
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.stderr.read()


@pytest.fixture
def spawn(tmp_path):
    """Start registrars; all are killed by pid (and their logs printed) at teardown."""
    started: list[Registrar] = []

    def start(endpoint: str, advertise: str, ttl: int = 10) -> Registrar:
        r = Registrar(endpoint, advertise, ttl, tmp_path)
        started.append(r)
        return r

    yield start
    for r in started:
        print(f"--- registrar {r.advertise} stderr ---\n{r.close()}")


A, B = "127.0.0.1:18001", "127.0.0.1:18002"
KEY_A, KEY_B = registry_key(A), registry_key(B)


@pytest.mark.procs
def test_register_shows_up_under_prefix(etcd_server, spawn):
    a = spawn(etcd_server.endpoint, A)
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A], 10, "key in etcd")
    value = etcd_server.etcdctl("get", "--print-value-only", KEY_A).stdout.strip()
    assert value == A
    kv = json.loads(etcd_server.etcdctl("get", "-w", "json", KEY_A).stdout)["kvs"][0]
    assert kv.get("lease", 0) != 0, "the key must be held by a lease"
    assert wait_until(a.members, 15, "member list") == [A]


@pytest.mark.procs
def test_two_registrars_see_each_other(etcd_server, spawn):
    a = spawn(etcd_server.endpoint, A)
    b = spawn(etcd_server.endpoint, B)
    wait_until(lambda: a.members() == [A, B], 10, "A sees both")
    wait_until(lambda: b.members() == [A, B], 10, "B sees both")
    assert etcd_server.keys(REGISTRY_PREFIX) == [KEY_A, KEY_B]


@pytest.mark.procs
def test_sigterm_revokes_lease_at_once(etcd_server, spawn):
    # A TTL far longer than the test: only a revoke can make the key vanish.
    a = spawn(etcd_server.endpoint, A, ttl=60)
    b = spawn(etcd_server.endpoint, B, ttl=60)
    wait_until(lambda: a.members() == [A, B], 10, "A sees both")
    b.signal(signal.SIGTERM)
    assert b.wait() == 0
    assert etcd_server.keys(REGISTRY_PREFIX) == [KEY_A]
    wait_until(lambda: a.members() == [A], 15, "A drops B")


@pytest.mark.procs
def test_sigkill_key_expires_with_lease(etcd_server, spawn):
    ttl = EXPIRING_TTL
    a = spawn(etcd_server.endpoint, A, ttl=ttl)
    b = spawn(etcd_server.endpoint, B, ttl=ttl)
    wait_until(lambda: a.members() == [A, B], 10, "A sees both")
    b.signal(signal.SIGKILL)
    assert b.wait() == 128 + signal.SIGKILL
    # Generous bound (TTL plus slack for a loaded CI box); a timeout is a failure.
    wait_until(lambda: a.members() == [A], ttl + 10, "A drops B after B's lease expires")
    assert etcd_server.keys(REGISTRY_PREFIX) == [KEY_A]
    assert a.proc.poll() is None


@pytest.mark.procs
def test_etcd_unreachable_at_start_then_registers(etcd_unstarted, spawn):
    a = spawn(etcd_unstarted.endpoint, A, ttl=EXPIRING_TTL)
    assert wait_until(a.members, 10, "single-host list while etcd is down") == [A]
    etcd_unstarted.start()
    wait_until(lambda: etcd_unstarted.keys(REGISTRY_PREFIX) == [KEY_A], 15, "key after etcd starts")
    b = spawn(etcd_unstarted.endpoint, B, ttl=EXPIRING_TTL)
    wait_until(lambda: a.members() == [A, B], 10, "A watches once connected")
    for r in (a, b):
        r.signal(signal.SIGTERM)
        assert r.wait() == 0
    # One clear line for the outage, not one per retry.
    assert a.proc.stderr.read().count("etcd unreachable") == 1


@pytest.mark.procs
def test_sigterm_while_etcd_down_exits_cleanly(etcd_unstarted, spawn):
    a = spawn(etcd_unstarted.endpoint, A)
    assert wait_until(a.members, 10, "single-host list") == [A]
    a.signal(signal.SIGTERM)
    assert a.wait() == 0  # the revoke attempt is bounded; no hang on a dead etcd


@pytest.mark.procs
def test_dead_endpoint_is_skipped(etcd_server, spawn):
    from tests.support.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    spawn(f"{dead},{etcd_server.endpoint}", A)
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A], 15, "registered via 2nd endpoint")


def _lease_of(etcd: EtcdServer, key: str) -> int:
    kvs = json.loads(etcd.etcdctl("get", "-w", "json", key).stdout).get("kvs") or []
    return kvs[0].get("lease", 0) if kvs else 0


@pytest.mark.procs
def test_lease_revoked_behind_its_back_is_regranted(etcd_server, spawn):
    a = spawn(etcd_server.endpoint, A, ttl=30)
    old = wait_until(lambda: _lease_of(etcd_server, KEY_A), 10, "key with a lease")
    etcd_server.etcdctl("lease", "revoke", f"{old:x}")
    new = wait_until(lambda: _lease_of(etcd_server, KEY_A), 10, "key back under a lease")
    assert new != old
    assert a.members() == [A] and a.proc.poll() is None


@pytest.mark.procs
def test_outage_keeps_list_and_reregisters(etcd_server, spawn):
    ttl = EXPIRING_TTL
    a = spawn(etcd_server.endpoint, A, ttl=ttl)
    b = spawn(etcd_server.endpoint, B, ttl=ttl)
    wait_until(lambda: a.members() == [A, B] and b.members() == [A, B], 10, "both see both")
    etcd_server.kill()
    # Longer than the TTL: the list must survive an outage the leases do not.
    deadline = time.monotonic() + ttl + 2
    while time.monotonic() < deadline:
        assert a.members() == [A, B] and b.members() == [A, B]
        assert a.proc.poll() is None and b.proc.poll() is None
        time.sleep(0.1)
    etcd_server.start()
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A, KEY_B], 15, "both re-registered")
    # The watch is live again: a departure after the outage is seen.
    b.signal(signal.SIGTERM)
    assert b.wait() == 0
    wait_until(lambda: a.members() == [A], 10, "A drops B after the outage")


@pytest.mark.procs
def test_hung_etcd_does_not_hang_registrar(etcd_server, spawn):
    ttl = 2
    a = spawn(etcd_server.endpoint, A, ttl=ttl)
    b = spawn(etcd_server.endpoint, B, ttl=ttl)
    wait_until(lambda: a.members() == [A, B] and b.members() == [A, B], 10, "both see both")
    etcd_server.freeze()
    try:
        deadline = time.monotonic() + 3  # longer than one keepalive call's bound
        while time.monotonic() < deadline:
            assert a.members() == [A, B] and b.members() == [A, B]
            time.sleep(0.1)
    finally:
        etcd_server.thaw()
    # The registrars timed out their calls and rebuilt their sessions: a
    # departure afterwards is seen, and the survivor is registered.
    b.signal(signal.SIGTERM)
    assert b.wait() == 0
    assert "lost etcd" in b.proc.stderr.read(), "the hang must be detected by a call's time bound"
    wait_until(lambda: a.members() == [A], 15, "A drops B after the hang")
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A], 10, "A registered")


@pytest.mark.procs
def test_operator_delete_of_own_key_is_repaired(etcd_server, spawn):
    a = spawn(etcd_server.endpoint, A)
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A], 10, "key in etcd")
    etcd_server.etcdctl("del", KEY_A)
    wait_until(lambda: etcd_server.keys(REGISTRY_PREFIX) == [KEY_A], 10, "key put back")
    assert a.members() == [A]


@pytest.mark.procs
def test_importing_registry_does_not_load_grpc():
    code = "import sys, geecache.cluster.registry; print('grpc' in sys.modules or 'aetcd' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("spec, expected", [
    ("http://127.0.0.1:2379,127.0.0.1:2479", [("127.0.0.1", 2379), ("127.0.0.1", 2479)]),
    ("localhost", [("localhost", 2379)]),
    (["127.0.0.1:1", " http://[::1]:2 "], [("127.0.0.1", 1), ("::1", 2)]),
])
def test_parse_endpoints(spec, expected):
    assert parse_endpoints(spec) == expected


@pytest.mark.parametrize("spec, reason", [
    ("", "no endpoints"),
    ("a:1,,b:2", "empty endpoint"),
    ("https://a:1", "only http://"),
    ("a:99999", "bad endpoint"),
    ("a:0", "port 0"),
    ("a:x", "bad endpoint"),
    ("http://a:1/v3", "expected"),
    ("http://:1", "no host"),
])
def test_parse_endpoints_rejects(spec, reason):
    with pytest.raises(ConfigError, match=reason) as e:
        parse_endpoints(spec)
    assert e.value.field == "etcd"


@pytest.mark.parametrize("bad", ["", "a b:1", "host:\n1", "h:notaport", "http://"])
def test_validate_advertise_rejects(bad):
    with pytest.raises(ConfigError) as e:
        validate_advertise(bad)
    assert e.value.field == "advertise"


def test_registry_key():
    assert registry_key("127.0.0.1:8001") == "/geecache/registry/127.0.0.1:8001"


@pytest.mark.parametrize("kwargs, field", [
    (dict(endpoints="https://x:1"), "etcd"),
    (dict(advertise=""), "advertise"),
    (dict(lease_ttl=0), "lease_ttl"),
    (dict(lease_ttl=1.5), "lease_ttl"),
])
def test_run_registrar_rejects_bad_config_before_connecting(kwargs, field):
    args = dict(endpoints="127.0.0.1:1", advertise=A, lease_ttl=5,
                on_members=lambda m: None, stop=None)
    args.update(kwargs)
    with pytest.raises(ConfigError) as e:
        asyncio.run(run_registrar(**args))
    assert e.value.field == field
