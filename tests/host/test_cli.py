"""The command line as gunicorn and uvicorn users expect it: --bind, -w, -c, --version.

Parsing is tested in-process; that a bind address is the one served, and that
a refused one ends the program with exit 2 before anything forks, with real
supervisors (``procs``).
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys

import pytest

from geecache import __version__
from geecache.config import build_parser, parse_args, parse_bind, version_line
from geecache.errors import ConfigError
from tests.support.net import free_port
from tests.support.proc import REPO, SUPERVISOR, Host, base_env, run_supervisor, wait_until


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8001", ("127.0.0.1", 8001)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:8001", ("::1", 8001)),
    ("[::]:9", ("::", 9)),
    (":8001", ("0.0.0.0", 8001)),           # every interface, as gunicorn and Go read it
    (" 10.0.0.5:65535 ", ("10.0.0.5", 65535)),
])
def test_bind_forms_accepted(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text,reason", [
    ("unix:/run/geecache.sock", "unix sockets are not supported"),
    ("unix://run/x", "unix sockets are not supported"),
    ("fd://3", "no scheme"),
    ("http://127.0.0.1:8001", "no scheme"),
    ("127.0.0.1", "has no port"),
    ("::1:8001", "IPv6 address goes in brackets"),
    ("[::1]", "is not [IPv6]:PORT"),
    ("[::1]8001", "is not [IPv6]:PORT"),
    ("[127.0.0.1]:80", "not an IPv6 address"),
    ("127.0.0.1:", "is not a TCP port"),
    ("127.0.0.1:http", "is not a TCP port"),
    ("127.0.0.1:65536", "is not a TCP port"),
    ("127.0.0.1:-1", "is not a TCP port"),
])
def test_bind_forms_refused_with_a_reason(text, reason):
    with pytest.raises(ConfigError) as err:
        parse_bind(text, "--bind")
    assert err.value.field == "--bind" and reason in err.value.reason


def test_bind_from_every_source_sets_host_and_port(tmp_path):
    assert (lambda c: (c.host, c.port))(parse_args(["--bind", "[::1]:8002"], environ={})) == ("::1", 8002)
    assert (lambda c: (c.host, c.port))(parse_args(["-b", ":8003", "--trusted-network"], environ={})) == ("0.0.0.0", 8003)
    cfg = parse_args([], environ={"GEECACHE_BIND": "127.0.0.2:8004"})
    assert (cfg.host, cfg.port) == ("127.0.0.2", 8004)
    path = tmp_path / "h.toml"
    path.write_text('bind = "127.0.0.3:8005"\n')
    cfg = parse_args(["-c", str(path)], environ={})
    assert (cfg.host, cfg.port) == ("127.0.0.3", 8005)
    with pytest.raises(ConfigError) as err:
        parse_args([], environ={"GEECACHE_BIND": "unix:/x"})
    assert err.value.field == "GEECACHE_BIND"


@pytest.mark.parametrize("argv,env,toml,field,other", [
    (["--bind", ":8001", "--port", "8002"], {}, None, "--bind", "--port"),
    (["-b", "127.0.0.1:8001", "--host", "::1"], {}, None, "--bind", "--host"),
    (["--bind", ":8001"], {"GEECACHE_PORT": "8002"}, None, "--bind", "GEECACHE_PORT"),
    ([], {"GEECACHE_BIND": ":8001"}, 'host = "127.0.0.1"\n', "GEECACHE_BIND", "host"),
    ([], {}, 'bind = ":8001"\nport = 8002\n', "bind", "port"),
])
def test_bind_with_host_or_port_is_a_conflict_naming_both(tmp_path, argv, env, toml, field, other):
    if toml is not None:
        path = tmp_path / "h.toml"
        path.write_text(toml)
        argv = ["--config", str(path), *argv]
    with pytest.raises(ConfigError) as err:
        parse_args(argv, environ=env)
    assert err.value.field == field and f"conflicts with {other}" in err.value.reason


def test_short_flags_and_version():
    cfg = parse_args(["-w", "3"], environ={})
    assert cfg.workers == 3
    text = build_parser().format_help()
    assert "-w N, --workers N" in text and "-b ADDR, --bind ADDR" in text and "-c FILE, --config FILE" in text
    assert version_line().split()[:2] == ["geecache", __version__]


@pytest.mark.procs
def test_version_and_help_of_the_command(tmp_path):
    r = run_supervisor("--version")
    assert r.returncode == 0 and r.stdout.split()[:2] == ["geecache", __version__], r
    r = subprocess.run([sys.executable, "-m", "geecache", "--help"], cwd=str(REPO), env=base_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: geecache "), r.stdout[:200]
    assert "GEECACHE_BIND" in r.stdout


def _start(tmp_path, *args: str) -> Host:
    port = free_port()
    log_path = tmp_path / f"bind-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(SUPERVISOR), "--workers", "1", "--arena", "32MiB",
                                 "--data-dir", str(tmp_path / "data"), *[a.format(port=port) for a in args]],
                                cwd=str(REPO), env=base_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    return Host(proc, port, log_path)


def _get(host: str, port: int, path: str):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _serves(h: Host, addr: str) -> tuple[int, bytes]:
    def answer():
        if h.proc.poll() is not None:
            raise AssertionError(f"exited {h.proc.returncode}:\n{h.log()}")
        try:
            return _get(addr, h.port, "/api?key=Tom")
        except OSError:
            return None
    return wait_until(answer, 20, what=f"an answer on {addr}:{h.port}")


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.procs
@pytest.mark.parametrize("bind,connect", [
    ("127.0.0.1:{port}", "127.0.0.1"),
    (":{port}", "127.0.0.1"),   # every interface: loopback among them
    pytest.param("[::1]:{port}", "::1",
                 marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")),
])
def test_the_host_serves_on_its_bind_address(tmp_path, bind, connect):
    # Every interface without a token needs the network declared trusted (protected mode).
    h = _start(tmp_path, "--bind", bind, *(["--trusted-network"] if bind.startswith(":") else []))
    try:
        assert _serves(h, connect) == (200, b"630")
    finally:
        assert h.stop(signal.SIGTERM) == 0, h.log()


@pytest.mark.procs
@pytest.mark.parametrize("args,env,message", [
    (("--bind", "unix:/tmp/geecache.sock"), {}, "config error: --bind: 'unix:/tmp/geecache.sock': unix sockets"),
    (("-b", "127.0.0.1:{port}", "--port", "{port}"), {}, "config error: --bind: conflicts with --port"),
    (("--bind", "127.0.0.1"), {}, "config error: --bind: '127.0.0.1' has no port"),
    ((), {"GEECACHE_BIND": "::1:80"}, "config error: GEECACHE_BIND: '::1:80': an IPv6 address goes in brackets"),
    ((), {"GEECACHE_LOG_LEVEL": "verbose"}, "config error: GEECACHE_LOG_LEVEL: unknown log level 'verbose'"),
])
def test_refused_bind_exits_2_before_forking(tmp_path, args, env, message):
    port = str(free_port())
    r = run_supervisor(*[a.format(port=port) for a in args], "--data-dir", str(tmp_path), env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "started worker" not in r.stderr


def _help_text() -> str:
    r = subprocess.run([sys.executable, "-m", "geecache", "--help"], cwd=str(REPO), env=base_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.procs
def test_help_is_grouped_in_sections_as_gunicorns_is():
    from geecache.config import HOST_SETTINGS

    text = _help_text()
    titles = ["server:", "workers:", "cluster:", "groups:", "limits:", "logging:"]
    starts = [text.index(f"\n{t}\n") for t in titles]
    assert starts == sorted(starts)
    assert "\nother:\n" not in text  # every host setting has its section
    bounds = dict(zip(titles, starts[1:] + [len(text)]))
    sections = {t: text[start:bounds[t]] for t, start in zip(titles, starts)}
    assert "--port PORT" in sections["server:"] and "--data-dir DIR" in sections["server:"]
    assert "--workers N" in sections["workers:"] and "--graceful-timeout" in sections["workers:"]
    assert "--etcd" in sections["cluster:"] and "--breaker-cooldown" in sections["cluster:"]
    assert "--arena SIZE" in sections["groups:"]
    assert "--max-connections" in sections["limits:"] and "--batch-max-keys" in sections["limits:"]
    assert "--access-log" in sections["logging:"] and "--log-format" in sections["logging:"]
    for s in HOST_SETTINGS:
        assert sum(s.flag in body.split() or f"{s.flag}," in body for body in sections.values()) == 1, s.flag


@pytest.mark.procs
def test_help_lists_the_log_levels_and_has_no_markdown():
    text = _help_text()
    assert "--log-level {debug,info,warning,error,critical}" in text
    assert "--log-format {text,json}" in text
    for mark in ("`", "**", "\\|"):
        assert mark not in text, mark


@pytest.mark.procs
@pytest.mark.parametrize("args,env,toml,field", [
    (["--arena", "1"], {}, None, "--arena"),
    ([], {"GEECACHE_ARENA": "1"}, None, "GEECACHE_ARENA"),
    ([], {}, "arena = 1\n", "arena"),
    (["--workers", "3", "--process-rows", "2"], {}, None, "--workers"),
    ([], {"GEECACHE_TLS_CERT": __file__}, None, "GEECACHE_TLS_CERT"),
])
def test_config_errors_name_the_setting_as_the_user_spelled_it(tmp_path, args, env, toml, field):
    if toml is not None:
        (tmp_path / "g.toml").write_text(toml)
        args = [*args, "--config", str(tmp_path / "g.toml")]
    r = run_supervisor("--port", "0", "--data-dir", str(tmp_path / "data"), *args, env=env)
    assert r.returncode == 2, r
    # (An arena too small is found when it is made: after the log's first lines.)
    assert [line for line in r.stderr.splitlines() if line.startswith("config error: ")] == [
        line for line in r.stderr.splitlines() if line.startswith(f"config error: {field}: ")], r.stderr
    assert f"config error: {field}: " in r.stderr and "Traceback" not in r.stderr


@pytest.mark.procs
def test_a_missing_partner_setting_is_named_in_the_style_of_the_given_one(tmp_path):
    r = run_supervisor("--port", "0", "--tls-cert", __file__)
    assert r.returncode == 2 and "config error: --tls-cert: needs --tls-key too" in r.stderr, r.stderr
    r = run_supervisor("--port", "0", env={"GEECACHE_BREAKER_MAX_COOLDOWN": "0.5"})
    assert r.returncode == 2 and r.stderr.startswith(
        "config error: GEECACHE_BREAKER_MAX_COOLDOWN: 0.5 is below GEECACHE_BREAKER_COOLDOWN (1)"), r.stderr


@pytest.mark.procs
def test_a_data_dir_that_is_a_file_is_a_plain_config_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_supervisor("--port", "0", "--data-dir", str(tmp_path / "afile"))
    assert r.returncode == 2, r
    assert r.stderr.strip() == f"config error: --data-dir: {str(tmp_path / 'afile')!r} is a file, not a directory"
