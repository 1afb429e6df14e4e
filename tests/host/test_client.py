"""geecache.Client and AsyncClient against a real server process on loopback.

The server is the real ``supervisor.py`` (one worker, a 16 MiB arena, the demo
group ``scores``); a broken host (5xx) and a host that accepts but never
answers are tiny real socket servers in this process.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from geecache.client import AsyncClient, Client
from geecache.errors import ConfigError, InvalidKeyError, NotFoundError, RefusedError, UnavailableError
from tests.support.net import free_port
from tests.support.proc import wait_until

ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR = ROOT / "supervisor.py"
TOKEN = "s3cret"
GROUP = "scores"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class Server:
    """One API server subprocess on a free loopback port, stopped by pid."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()  # explicit: the default (port + 1000) may be taken
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.data_dir = tempfile.mkdtemp(prefix="geecache-client-test-")
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, str(SUPERVISOR), "--port", str(self.port), "--workers", "1",
               "--admin-port", str(self.admin_port), "--arena", "16MiB", "--data-dir", self.data_dir]
        return cmd + (["--auth-token", self.token] if self.token else [])

    def start(self) -> "Server":
        self.log = open(os.path.join(self.data_dir, "server.log"), "wb")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server on {self.url} not healthy after {START_TIMEOUT}s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.data_dir, "server.log").read_bytes()[-2000:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server(token=TOKEN).start()
    yield s
    s.close()


class _BrokenHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request 503 and counts them."""

    hits = 0

    def _fail(self) -> None:
        type(self).hits += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"error": "overloaded"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = _fail

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_host():
    """A real HTTP server on loopback that answers 503 to everything."""
    handler = type("Broken", (_BrokenHandler,), {"hits": 0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()
    t.join(5)


@pytest.fixture
def silent_host():
    """A socket that accepts connections (backlog) but never answers: a hung host."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


AWKWARD_KEYS = ["Tom", "with space", "a&b=c?d#e", "slash/and%25percent+plus", "ключ-鍵-🔑"]


@pytest.mark.procs
def test_set_get_delete_roundtrip_with_awkward_keys(server):
    with Client(server.url, token=TOKEN) as c:
        for i, key in enumerate(AWKWARD_KEYS):
            value = bytes(range(256)) + str(i).encode()
            c.set(key, value, group=GROUP)
            assert c.get(key, group=GROUP) == value
        # each key reached the server as itself: distinct keys kept distinct values
        assert [c.get(k, group=GROUP)[256:] for k in AWKWARD_KEYS] == [str(i).encode() for i in range(len(AWKWARD_KEYS))]
        # and under its own name: read back with hand-written encodings, as curl would send them
        for key, query in (("with space", "with%20space"), ("a&b=c?d#e", "a%26b%3Dc%3Fd%23e"),
                           ("slash/and%25percent+plus", "slash%2Fand%2525percent%2Bplus")):
            with urllib.request.urlopen(f"{server.url}/api?group={GROUP}&key={query}", timeout=5) as r:
                assert r.read() == c.get(key, group=GROUP)
        assert c.delete("with space", group=GROUP) is True
        with pytest.raises(NotFoundError):
            c.get("with space", group=GROUP)
        assert c.delete("with space", group=GROUP) is False


@pytest.mark.procs
def test_set_with_ttl_expires(server):
    def gone():
        try:
            c.get("fleeting", group=GROUP)
        except NotFoundError:
            return True
        return False

    with Client(server.url, token=TOKEN, admin_urls=server.admin_url) as c:
        c.set("fleeting", b"soon gone", group=GROUP, ttl=0.3)
        assert c.get("fleeting", group=GROUP) == b"soon gone"
        # Bounded wait until the value's lifetime is over: gone, from the source too.
        wait_until(gone, 15, interval=0.1, what="the value to expire")
        with pytest.raises(InvalidKeyError):
            c.set("k", b"v", group=GROUP, ttl=-1)  # refused before any request


@pytest.mark.procs
def test_str_value_is_sent_as_utf8(server):
    with Client(server.url, token=TOKEN) as c:
        c.set("greeting", "héllo", group=GROUP)
        assert c.get("greeting", group=GROUP) == "héllo".encode()


@pytest.mark.procs
def test_missing_key_is_not_found_not_refused(server):
    with Client(server.url) as c, pytest.raises(NotFoundError):
        c.get("no-such-key-anywhere", group=GROUP)


@pytest.mark.procs
def test_write_without_token_is_refused_401(server):
    with Client(server.url) as c, pytest.raises(RefusedError) as info:
        c.set("Tom", b"1", group=GROUP)
    assert info.value.status == 401
    assert info.value.reason


@pytest.mark.procs
def test_wrong_token_is_refused_401(server):
    with Client(server.url, token="wrong") as c, pytest.raises(RefusedError) as info:
        c.delete("Tom", group=GROUP)
    assert info.value.status == 401


@pytest.mark.procs
def test_value_over_item_limit_is_refused_413(server):
    with Client(server.url, token=TOKEN) as c, pytest.raises(RefusedError) as info:
        c.set("big", b"x" * ((1 << 20) + 1), group=GROUP)
    assert info.value.status == 413


@pytest.mark.procs
def test_unknown_group_is_refused_400_with_reason(server):
    with Client(server.url) as c, pytest.raises(RefusedError) as info:
        c.get("Tom", group="no-such-group")
    assert info.value.status == 400
    assert "unknown group" in info.value.reason and "no-such-group" not in info.value.reason  # no echo


def test_bad_key_fails_before_any_request():
    # nothing listens on this URL: an InvalidKeyError proves no request was tried
    with Client(dead_url()) as c:
        with pytest.raises(InvalidKeyError):
            c.get("")
        with pytest.raises(InvalidKeyError):
            c.get("k" * 251)
        with pytest.raises(TypeError):
            c.set("k", 123)  # type: ignore[arg-type]


def test_bad_base_url_is_a_config_error():
    for urls in (["ftp://127.0.0.1:1"], ["127.0.0.1:8001"], []):
        with pytest.raises(ConfigError):
            Client(urls)
    with pytest.raises(ConfigError):
        Client("http://127.0.0.1:8001", timeout=0)


@pytest.mark.procs
def test_stats_is_a_dict(server):
    with Client(server.url, admin_urls=server.admin_url) as c:
        doc = c.stats()
    assert isinstance(doc, dict) and doc


def test_stats_default_to_the_admin_port_beside_each_data_url():
    c = Client(["http://10.0.0.5:8001", "https://[::1]:8443/prefix"])
    assert [h.url for h in c._admin_hosts] == ["http://10.0.0.5:9001", "http://[::1]:9443"]


@pytest.mark.procs
def test_fails_over_from_a_dead_host(server):
    with Client([dead_url(), server.url], token=TOKEN) as c:
        c.set("failover", b"ok", group=GROUP)
        assert c.get("failover", group=GROUP) == b"ok"


@pytest.mark.procs
def test_fails_over_from_a_5xx_host_and_then_prefers_the_good_one(server, broken_host):
    url, handler = broken_host
    with Client([url, server.url], token=TOKEN) as c:
        c.set("pref", b"v", group=GROUP)
        for _ in range(5):
            assert c.get("pref", group=GROUP) == b"v"
    assert handler.hits == 1  # tried once, then the answering host goes first


@pytest.mark.procs
def test_not_found_is_not_retried_on_other_hosts(server, broken_host):
    url, handler = broken_host
    with Client([server.url, url]) as c, pytest.raises(NotFoundError):
        c.get("absent-key", group=GROUP)
    assert handler.hits == 0


def test_every_host_down_is_unavailable_naming_each(broken_host):
    url, _ = broken_host
    dead = dead_url()
    with Client([dead, url], timeout=1.0) as c, pytest.raises(UnavailableError) as info:
        c.get("Tom")
    assert [u for u, _ in info.value.attempts] == [dead, url]
    assert "503" in info.value.attempts[1][1]


def test_hung_host_times_out_as_unavailable(silent_host):
    with Client(silent_host, timeout=0.3) as c, pytest.raises(UnavailableError) as info:
        c.get("Tom")
    assert "timed out" in str(info.value).lower() or "timeout" in str(info.value).lower()


@pytest.mark.procs
def test_pooled_connection_survives_a_server_restart():
    s = Server(token=TOKEN).start()
    try:
        with Client(s.url, token=TOKEN) as c:
            c.set("k", b"1", group=GROUP)
            assert c.get("k", group=GROUP) == b"1"  # leaves a keep-alive connection in the pool
            s.stop()
            s.start()  # same port: the pooled connection is now dead
            c.set("k", b"2", group=GROUP)
            assert c.get("k", group=GROUP) == b"2"
    finally:
        s.close()


@pytest.mark.procs
def test_one_client_shared_by_threads(server):
    errors: list[BaseException] = []
    with Client(server.url, token=TOKEN, pool_size=2) as c:
        for t in range(4):
            c.set(f"thread-{t}", str(t).encode(), group=GROUP)

        def worker(t: int) -> None:
            try:
                for _ in range(50):
                    assert c.get(f"thread-{t}", group=GROUP) == str(t).encode()
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    assert not errors
    assert not any(th.is_alive() for th in threads)


@pytest.mark.procs
def test_async_client_roundtrip_and_errors(server):
    async def scenario() -> None:
        async with AsyncClient([dead_url(), server.url], token=TOKEN, admin_urls=server.admin_url) as c:
            for key in AWKWARD_KEYS:
                await c.set(key, key.encode() * 3, group=GROUP)
            got = await asyncio.gather(*(c.get(k, group=GROUP) for k in AWKWARD_KEYS))
            assert got == [k.encode() * 3 for k in AWKWARD_KEYS]
            assert await c.delete("Tom", group=GROUP) is True
            assert await c.delete("Tom", group=GROUP) is False
            with pytest.raises(NotFoundError):
                await c.get("Tom", group=GROUP)
            assert isinstance(await c.stats(), dict)
        async with AsyncClient(server.url) as anon:
            with pytest.raises(RefusedError) as info:
                await anon.set("x", b"y", group=GROUP)
            assert info.value.status == 401

    asyncio.run(scenario())


@pytest.mark.procs
def test_async_client_unavailable_and_5xx_failover(server, broken_host, silent_host):
    url, handler = broken_host

    async def scenario() -> None:
        async with AsyncClient([url, server.url], token=TOKEN) as c:
            await c.set("async-pref", b"v", group=GROUP)
            for _ in range(3):
                assert await c.get("async-pref", group=GROUP) == b"v"
        assert handler.hits == 1
        async with AsyncClient([dead_url(), silent_host], timeout=0.3) as c:
            with pytest.raises(UnavailableError) as info:
                await c.get("Tom")
            assert len(info.value.attempts) == 2

    asyncio.run(scenario())


# -- serializers, per-item TTLs, timeouts, retries (pymemcache's and redis-py's options) ---------


@pytest.mark.procs
def test_serializers_round_trip_json_pickle_and_text(server):
    from geecache import serde

    with Client(server.url, token=TOKEN, **serde.JSON) as js, Client(server.url, token=TOKEN) as raw:
        doc = {"retries": 3, "hosts": ["a", "b"], "name": "ключ"}
        js.set("serde-json", doc, group=GROUP)
        assert js.get("serde-json", group=GROUP) == doc
        assert json.loads(raw.get("serde-json", group=GROUP)) == doc  # stored as JSON bytes
        js.set_many({"serde-j1": [1], "serde-j2": None}, group=GROUP)
        assert js.get_many(["serde-j1", "serde-j2", "serde-none"], group=GROUP, fill="-") == {
            "serde-j1": [1], "serde-j2": None, "serde-none": "-"}
        assert js.get("serde-none", group=GROUP, default=None) is None  # a miss is not deserialized
    with Client(server.url, token=TOKEN, **serde.PICKLE) as pk:
        pk.set("serde-pickle", {"t": (1, 2), "s": {3}}, group=GROUP)
        assert pk.get("serde-pickle", group=GROUP) == {"t": (1, 2), "s": {3}}
    with Client(server.url, token=TOKEN, **serde.TEXT) as text:
        text.set("serde-text", "naïve", group=GROUP)
        assert text.get("serde-text", group=GROUP) == "naïve"
        with pytest.raises(TypeError):
            text.set("serde-text", b"bytes", group=GROUP)


@pytest.mark.procs
def test_set_many_takes_a_ttl_per_key(server):
    with Client(server.url, token=TOKEN) as c:
        c.set_many({"ttl-short": b"1", "ttl-kept": b"2"}, group=GROUP, ttl={"ttl-short": 1})
        assert c.get_many(["ttl-short", "ttl-kept"], group=GROUP) == {"ttl-short": b"1", "ttl-kept": b"2"}
        wait_until(lambda: c.get("ttl-short", group=GROUP, default=None) is None, 15,
                   what="the key with a TTL to expire")
        assert c.get("ttl-kept", group=GROUP) == b"2"


@pytest.mark.parametrize("kwargs, name", [
    (dict(connect_timeout=0), "connect_timeout"), (dict(read_timeout=-1), "read_timeout"),
    (dict(timeout=float("inf")), "timeout"), (dict(retries=-1), "retries"), (dict(retries=1.5), "retries"),
    (dict(backoff=-0.1), "backoff"), (dict(pool_size=0), "pool_size"), (dict(serializer="json"), "serializer"),
])
def test_client_options_are_checked_by_name(kwargs, name):
    for cls in (Client, AsyncClient):
        with pytest.raises(ConfigError) as info:
            cls("http://127.0.0.1:8001", **kwargs)
        assert info.value.field == name


def test_read_timeout_bounds_a_connected_host_that_never_answers(silent_host):
    with Client(silent_host, connect_timeout=5.0, read_timeout=0.3) as c, pytest.raises(UnavailableError) as info:
        c.get("Tom")
    assert "timed out" in str(info.value).lower()
    assert not info.value.maybe_applied  # a read


def test_retries_pass_over_the_hosts_again_with_backoff(broken_host):
    url, handler = broken_host
    with Client(url, retries=2, backoff=0.01) as c, pytest.raises(UnavailableError) as info:
        c.get("Tom")
    assert handler.hits == 3  # the first pass and two retries
    assert len(info.value.attempts) == 1  # the last pass's attempts


@pytest.fixture
def hangup_host():
    """A real socket server that reads each request and closes without answering; counts them."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    seen.append(conn.recv(65536))
                except OSError:
                    pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", seen
    stop.set()
    t.join(5)
    srv.close()


def test_a_write_that_reached_a_host_is_never_retried(hangup_host):
    url, seen = hangup_host
    with Client(url, retries=3, backoff=0.01) as c, pytest.raises(UnavailableError) as info:
        c.set("Tom", b"1")
    assert info.value.maybe_applied
    wait_until(lambda: seen, 10, what="the PUT to arrive")
    assert len([r for r in seen if r.startswith(b"PUT ")]) == 1
    seen.clear()
    with Client(url, retries=2, backoff=0.01) as c, pytest.raises(UnavailableError):
        c.get("Tom")  # a read is retried: the first pass, its fresh-connection retry is not taken
    wait_until(lambda: len(seen) >= 3, 10, what="the reads of every pass")


@pytest.mark.procs
def test_async_client_shares_the_options(server, broken_host):
    from geecache import serde

    url, handler = broken_host

    async def run():
        async with AsyncClient(server.url, token=TOKEN, pool_size=2, **serde.JSON) as c:
            await c.set("async-serde", {"n": 1}, group=GROUP)
            assert await c.get("async-serde", group=GROUP) == {"n": 1}
            await c.set_many({"async-t": 1}, group=GROUP, ttl={"async-t": 60})
            assert await c.get_many(["async-t"], group=GROUP) == {"async-t": 1}
        async with AsyncClient(url, retries=1, backoff=0.01, limit_per_host=1) as c:
            with pytest.raises(UnavailableError):
                await c.get("Tom")
    asyncio.run(run())
    assert handler.hits == 2
