"""TLS on the HTTP port and between peers: two real supervisors with ``--peers`` over https.

Each host serves its one port with ``--tls-cert/--tls-key`` and verifies its
peers against ``--tls-ca``; the certificate is made at test time for
127.0.0.1 (tests.support.certs).  Loads are counted by the ``counting``
loader, which records the pid of the process that ran it, so a test can
tell which host loaded a key.
"""

from __future__ import annotations

import http.client

import pytest

from tests.support.certs import client_context, self_signed
from tests.support.loaders import count_loads
from tests.support.net import free_port
from tests.support.proc import start_supervisor, wait_until

# Every test here forks or spawns processes (see tests/support/marks.py).
pytestmark = pytest.mark.procs

CONFIG = """
[[groups]]
name = "counted"
loader = "tests.support.loaders:counting"
"""


def https(port: int, path: str, ctx) -> tuple[int, bytes]:
    """(status, body) of one GET over TLS to 127.0.0.1:*port*."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def url(port: int) -> str:
    return f"https://127.0.0.1:{port}"


class TLSPair:
    """Two hosts that list each other by https URL; stopped by pid."""

    def __init__(self, tmp, cert, key, ca):
        self.tmp = tmp
        self.ctx = client_context(cert)
        self.count_file = tmp / "loads.txt"
        (tmp / "geecache.toml").write_text(CONFIG)
        self.ports = [free_port(), free_port()]
        peers = ",".join(url(p) for p in self.ports)
        self.hosts = []
        try:
            for port in self.ports:
                self.hosts.append(start_supervisor(
                    tmp, "--config", str(tmp / "geecache.toml"), "--peers", peers,
                    "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca),
                    workers=1, port=port, wait=False,
                    env={"GEECACHE_TEST_COUNT_FILE": str(self.count_file), "GEECACHE_TEST_LOAD_DELAY": "0"}))
            for host in self.hosts:
                # The helpers' readiness probe speaks plain http: probe over TLS instead.
                wait_until(lambda: self._healthy(host), 20, what=f"https /healthz on :{host.port}")
                host.wait_workers(1)
        except BaseException:
            self.close()
            raise

    def _healthy(self, host) -> bool:
        if host.proc.poll() is not None:
            raise RuntimeError(f"supervisor exited with {host.proc.returncode}:\n{host.log()}")
        try:
            return https(host.port, "/healthz", self.ctx)[0] == 200
        except OSError:
            return False

    def stats(self, i: int) -> dict:
        return self.hosts[i].admin_json("/stats")["counted"]  # the admin port is plain http

    def key_owned_by(self, asker: int, owner: int, prefix: str) -> str:
        """A key that host *asker* routes to host *owner*'s https URL."""
        for i in range(200):
            key = f"{prefix}{i}"
            if self.hosts[asker].admin_json(f"/cluster?key={key}")["owner"] == url(self.ports[owner]):
                return key
        raise AssertionError(f"no key of 200 routes to {url(self.ports[owner])}")

    def close(self):
        for host in self.hosts:
            host.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, certs):
    cert, key = certs
    p = TLSPair(tmp_path_factory.mktemp("tls"), cert, key, ca=cert)
    yield p
    p.close()


def test_remote_key_is_fetched_from_its_owner_over_tls(pair):
    key = pair.key_owned_by(asker=0, owner=1, prefix="remote")
    a_before, b_before = pair.stats(0), pair.stats(1)
    assert https(pair.ports[0], f"/api?group=counted&key={key}", pair.ctx) == (200, f"value-{key}".encode())
    a_after, b_after = pair.stats(0), pair.stats(1)
    assert a_after["peer_hits"] - a_before["peer_hits"] == 1
    assert a_after["peer_errors"] == a_before["peer_errors"]
    assert b_after["peer_requests"] - b_before["peer_requests"] == 1
    # Loaded once, by the owner's worker, not by the host that was asked.
    assert count_loads(pair.count_file, key) == 1
    loader_pid = int(next(line for line in pair.count_file.read_text().splitlines()
                          if line.split(" ", 1)[1] == key).split()[0])
    assert loader_pid in pair.hosts[1].workers()
    # The second ask fetches it again and keeps the hot copy (hot_after); the third is the hot
    # copy on the asking host: no new peer call.
    assert https(pair.ports[0], f"/api?group=counted&key={key}", pair.ctx) == (200, f"value-{key}".encode())
    assert pair.stats(1)["peer_requests"] - b_after["peer_requests"] == 1
    assert https(pair.ports[0], f"/api?group=counted&key={key}", pair.ctx) == (200, f"value-{key}".encode())
    assert pair.stats(0)["hot_hits"] - a_after["hot_hits"] == 1
    assert pair.stats(1)["peer_requests"] - b_after["peer_requests"] == 1


def test_plain_http_to_the_tls_port_gets_no_answer(pair):
    conn = http.client.HTTPConnection("127.0.0.1", pair.ports[0], timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/api?group=counted&key=plain")
            conn.getresponse().read()
    finally:
        conn.close()
    assert count_loads(pair.count_file, "plain") == 0


def test_client_that_does_not_trust_the_cert_is_refused(pair, tmp_path):
    other_cert, _ = self_signed(tmp_path, "stranger")
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
        https(pair.ports[0], "/healthz", client_context(other_cert))


def test_hosts_route_by_their_https_urls_and_agree_on_owners(pair):
    for i, (port, host) in enumerate(zip(pair.ports, pair.hosts)):
        view = host.admin_json("/cluster")
        assert view["self"] == url(port), i
        assert sorted(view["members"]) == sorted(url(p) for p in pair.ports), i
    for n in range(20):
        owners = {host.admin_json(f"/cluster?key=agree{n}")["owner"] for host in pair.hosts}
        assert len(owners) == 1, (n, owners)


def test_peer_whose_cert_is_not_trusted_is_a_slow_path(tmp_path, certs):
    """Peers verify each other: a host trusting another CA cannot fetch, and loads locally."""
    cert, key = certs
    stranger, _ = self_signed(tmp_path, "stranger")
    p = TLSPair(tmp_path, cert, key, ca=stranger)
    try:
        remote = p.key_owned_by(asker=0, owner=1, prefix="untrusted")
        before = p.stats(0)
        assert https(p.ports[0], f"/api?group=counted&key={remote}", p.ctx) == (200, f"value-{remote}".encode())
        after = p.stats(0)
        assert after["peer_errors"] - before["peer_errors"] == 1
        assert after["peer_hits"] == before["peer_hits"]
        assert after["loads"] - before["loads"] == 1
        assert p.stats(1)["peer_requests"] == 0
    finally:
        p.close()


def test_tls_ca_is_enforced_on_a_host_without_its_own_cert(tmp_path, certs):
    """A plain-http host that calls an https peer must verify it against ``--tls-ca``."""
    cert, key = certs
    stranger, _ = self_signed(tmp_path, "stranger")
    (tmp_path / "geecache.toml").write_text(CONFIG)
    count_file = tmp_path / "loads.txt"
    env = {"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "0"}
    pa, pb = free_port(), free_port()
    peers = f"http://127.0.0.1:{pa},{url(pb)}"
    ctx = client_context(cert)
    hosts = []
    try:
        hosts.append(start_supervisor(
            tmp_path, "--config", str(tmp_path / "geecache.toml"), "--peers", peers,
            "--advertise", f"127.0.0.1:{pa}", "--tls-ca", str(stranger), workers=1, port=pa, env=env))
        hosts.append(start_supervisor(
            tmp_path, "--config", str(tmp_path / "geecache.toml"), "--peers", peers, "--advertise", url(pb),
            "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert),
            workers=1, port=pb, env=env, wait=False))
        wait_until(lambda: _answers(pb, ctx), 20, what=f"https /healthz on :{pb}")
        a = hosts[0]
        remote = next(k for k in (f"ca{i}" for i in range(200)) if a.admin_json(f"/cluster?key={k}")["owner"] == url(pb))
        before = a.admin_json("/stats")["counted"]
        assert a.get(f"/api?group=counted&key={remote}") == (200, f"value-{remote}".encode())
        after = a.admin_json("/stats")["counted"]
        # B's certificate is not signed by A's --tls-ca: the fetch must fail verification.
        assert after["peer_hits"] == before["peer_hits"]
        assert after["peer_errors"] - before["peer_errors"] == 1
        assert hosts[1].admin_json("/stats")["counted"]["peer_requests"] == 0
    finally:
        for host in hosts:
            host.stop()


def _answers(port: int, ctx) -> bool:
    try:
        return https(port, "/healthz", ctx)[0] == 200
    except OSError:
        return False
