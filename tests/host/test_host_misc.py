"""Smaller points: a client hanging up is no server error;
the new timeouts refuse nan/inf like every number setting."""

from __future__ import annotations

import re
import socket
import struct

import pytest

from geecache.config import parse_args
from geecache.errors import ConfigError
from tests.support.proc import start_supervisor

_PUT = b"PUT /api?key=Tom HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10


def _abort(port: int, reset: bool) -> None:
    """A PUT whose body is cut short: the client closes (or resets) mid-body."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(_PUT)
        # Let the worker start reading the body (it answers nothing: the wait is bounded).
        s.settimeout(0.3)
        try:
            s.recv(1)
        except socket.timeout:
            pass
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def _put_count(h, status_class: str) -> float:
    status, body = h.admin_get("/metrics")
    # status is the exact code: a class is the sum of its codes.
    return sum(float(v) for v in re.findall(
        r'geecache_http_requests_total\{method="PUT",route="/api",status="%s\d\d"\} ([\d.e+]+)'
        % status_class[0], body.decode()))


@pytest.mark.procs
def test_a_client_that_hangs_up_mid_body_is_not_logged_as_a_500(tmp_path):
    h = start_supervisor(tmp_path, workers=1)
    try:
        _abort(h.port, reset=False)
        _abort(h.port, reset=True)
        # One worker: by the time it answers this, it has seen both cut connections.
        assert h.get("/api?key=Tom") == (200, b"630")
        # The data plane never saw a whole request: nothing is counted as a server error.
        assert _put_count(h, "5xx") == 0
        log = h.log()
        assert "unhandled error" not in log and "Traceback" not in log, log
    finally:
        assert h.stop() == 0


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_load_timeout_refuses_nan_and_inf(tmp_path, bad):
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[[groups]]\nname = "g"\nloader = "tests.support.loaders:counting"\nload_timeout = {bad}\n')
    with pytest.raises(ConfigError) as err:
        parse_args(["--config", str(cfg)], environ={})
    assert err.value.field == "groups[0].load_timeout" and "finite" in err.value.reason


@pytest.mark.parametrize("args,reason", [
    (["--worker-timeout", "nan"], "finite"),
    (["--worker-timeout", "0.5"], "0 (off) or at least 1"),
    (["--load-threads", "0"], "between 1 and 1024"),
    (["--write-threads", "0"], "between 1 and 1024"),
])
def test_new_host_settings_are_checked(args, reason):
    with pytest.raises(ConfigError) as err:
        parse_args(args, environ={})
    assert err.value.field == args[0] and reason in err.value.reason
