"""The host's log as gunicorn users read it: ISO-8601 times, JSON lines, an access log, ring and
breaker changes, and debug lines that say what a load did.  Real supervisors, their real stderr."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re

import pytest

from geecache.observability import logs
from geecache.cluster.breaker import Breaker
from tests.support.cluster import Cluster, member
from tests.support.proc import start_supervisor, wait_until

pytestmark = pytest.mark.procs

#: ``2026-12-03T12:34:08.123+00:00 [4242] INFO geecache.supervisor: ...``
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[(\d+)\] "
                       r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): ")


def _log_lines(host) -> list[str]:
    return [line for line in host.log().splitlines() if line.strip()]


def _get_many(port: int, paths: list[str]) -> list[int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        statuses = []
        for path in paths:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        return statuses
    finally:
        conn.close()


def test_text_lines_carry_an_iso_time_with_its_zone_and_the_pid(tmp_path):
    h = start_supervisor(tmp_path, workers=1)
    try:
        lines = _log_lines(h)
        assert lines
        for line in lines:
            if line.startswith((" ", "Traceback")):
                continue  # a traceback's continuation
            assert TEXT_LINE.match(line), line
        assert any(int(TEXT_LINE.match(line).group(1)) == h.pid for line in lines if TEXT_LINE.match(line))
    finally:
        h.stop()


def test_json_format_writes_one_object_a_line_naming_level_process_and_logger(tmp_path):
    h = start_supervisor(tmp_path, "--log-format", "json", "--access-log", workers=1)
    try:
        assert h.get("/api?key=Tom") == (200, b"630")
        wait_until(lambda: '"geecache.access"' in h.log(), what="an access line")
    finally:
        h.stop()
    records = [json.loads(line) for line in _log_lines(h)]  # every line parses
    for rec in records:
        assert {"time", "level", "pid", "process", "logger", "message"} <= rec.keys()
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", rec["time"])
    roles = {rec["process"] for rec in records}
    assert {"supervisor", "worker"} <= roles
    assert any(rec["pid"] == h.pid and rec["process"] == "supervisor" for rec in records)
    # (start_supervisor's readiness probes of /healthz are logged too.)
    access = [rec for rec in records if rec["logger"] == "geecache.access" and "/healthz" not in rec["request"]]
    assert access[0]["status"] == 200 and access[0]["request"] == "GET /api?key=Tom"
    assert access[0]["process"] == "worker" and access[0]["level"] == "info"


def test_a_traceback_stays_inside_its_json_line():
    stream = io.StringIO()
    logger = logging.getLogger("geecache.test-json")
    logs.configure("info", "json", stream)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logs.configure("warning", "text")
    (line,) = stream.getvalue().splitlines()
    rec = json.loads(line)
    assert rec["message"] == "it failed" and "ValueError: boom" in rec["exc_info"]


def test_the_access_log_is_off_by_default_and_logs_each_answer_when_on(tmp_path):
    quiet = start_supervisor(tmp_path, workers=1)
    try:
        assert _get_many(quiet.port, ["/api?key=Tom", "/api?key=Tom", "/api?key=nobody"]) == [200, 200, 404]
    finally:
        quiet.stop()
    assert "geecache.access" not in quiet.log()

    h = start_supervisor(tmp_path, "--access-log", workers=1)
    try:
        # A miss (loaded), a hit (the inline path when the log is off), a 404 and a refused request.
        assert _get_many(h.port, ["/api?key=Tom", "/api?key=Tom", "/api?key=nobody", "/nowhere"]) == \
            [200, 200, 404, 404]
    finally:
        h.stop()  # the worker writes every line before it exits
    access = [line for line in h.log().splitlines() if " geecache.access: " in line and "/healthz" not in line]
    assert len(access) == 4
    assert re.search(r'127\.0\.0\.1:\d+ "GET /api\?key=Tom" 200 \d+\.\d{3}ms$', access[0])
    assert '"GET /api?key=Tom" 200' in access[1]
    assert '"GET /api?key=nobody" 404' in access[2]
    assert '"GET /nowhere" 404' in access[3]


def test_a_sampled_access_log_writes_some_answers_not_all(tmp_path):
    h = start_supervisor(tmp_path, "--access-log", "--access-log-sample", "0.2", workers=1)
    try:
        n = 400
        assert set(_get_many(h.port, ["/api?key=Tom"] * n)) == {200}
    finally:
        h.stop()  # the worker writes every line before it exits
    logged = h.log().count('"GET /api?key=Tom"')
    # Binomial(400, 0.2): 0 or 400 lines have a probability below 1e-38.
    assert 0 < logged < n


def test_debug_says_what_a_load_did(tmp_path):
    h = start_supervisor(tmp_path, "--log-level", "debug", workers=1)
    try:
        assert h.get("/api?key=Tom") == (200, b"630")
        assert h.get("/api?key=nobody")[0] == 404
        wait_until(lambda: "not found" in h.log(), what="the debug line of the failed load")
    finally:
        h.stop()
    log = h.log()
    assert re.search(r"DEBUG geecache.group: group scores: loaded 'Tom' from the source in [\d.]+ms: 3 bytes", log)
    assert "loaded 'nobody' from the source" in log


def test_each_breaker_change_is_logged(caplog):
    now = [0.0]
    breaker = Breaker(failures=1, cooldown=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="geecache.cluster.breaker"):
        breaker.failure("10.0.0.2:8001")
        now[0] = 2.0
        assert breaker.allow("10.0.0.2:8001")  # the probe
        breaker.success("10.0.0.2:8001")
        breaker.success("10.0.0.2:8001")  # closed already: nothing more to say
    messages = [r.getMessage() for r in caplog.records if r.name == "geecache.cluster.breaker"]
    assert messages == [
        "breaker 10.0.0.2:8001: open for 1s (timed out or refused); its keys load locally",
        "breaker 10.0.0.2:8001: half-open, one probe call let through",
        "breaker 10.0.0.2:8001: closed (the peer answered)",
    ]


@pytest.mark.etcd
def test_a_host_logs_each_ring_change_with_its_version(tmp_path):
    cluster = Cluster(tmp_path, n=2)
    try:
        a, b = cluster.hosts
        cluster.wait_members([a, b])
        wait_until(lambda: f"added {member(b)}" in a.log(), what="A's line for B joining")
        b.stop()
        cluster.hosts.remove(b)
        wait_until(lambda: f"removed {member(b)}" in a.log(), timeout=60, what="A's line for B leaving")
    finally:
        cluster.close()
    joined = re.search(rf"geecache.cluster.registry: ring v(\d+): 2 members, added {re.escape(member(b))}: ", a.log())
    left = re.search(rf"geecache.cluster.registry: ring v(\d+): 1 member, removed {re.escape(member(b))}: "
                     rf"{re.escape(member(a))}$", a.log(), re.M)
    assert joined and left and int(left.group(1)) > int(joined.group(1))
