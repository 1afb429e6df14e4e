"""A group's codec changed under cached values: every read decodes by the entry's own codec id.

Two real supervisors (``--peers``) share a group whose values are cached
compressed (owned entries on each host, hot copies of the other's keys).
The codec is then changed by SIGHUP, or by a warm restart with another
config, and every read path must still give the value: a public GET and
HEAD (the hit, owned and hot), a batch GET, a peer GET and batch, a handoff
ask.  Also the other way round: values cached raw, then a codec set.
"""

from __future__ import annotations

import gzip
import http.client
import threading
import time
import signal
from pathlib import Path

import pytest

from geecache.compression import unpack
from geecache.geecachepb import BatchItem, BatchRequest, BatchResponse, GetResponse
from tests.support.loaders import document
from tests.support.net import free_port
from tests.support.proc import request as _request, start_supervisor, wait_until

pytestmark = pytest.mark.procs

KEYS = [f"k{i}" for i in range(12)]
#: About 1.2 kB of JSON: every codec keeps it in a fraction of that.
VALUES = {key: document(key, items=10) for key in KEYS}
#: Seconds a SIGHUP roll may take before the test gives up on it.
ROLL_DEADLINE = 120


def _write_config(path: Path, db: Path, codec: str) -> None:
    path.write_text(f'[[groups]]\nname = "z"\nsqlite = "{db}"\ncodec = "{codec}"\n')


def _assert_every_read_serves_the_value(hosts) -> None:
    for h in hosts:
        for key, value in VALUES.items():
            for _ in range(3):  # both workers, the hit each time after the first
                status, headers, body = _request(h.port, "GET", f"/api?group=z&key={key}")
                assert (status, len(body), body) == (200, len(value), value), (h.port, key)
                assert "content-encoding" not in headers
            status, _, body = _request(h.port, "GET", f"/api?key={key}")  # the default group's fast path
            assert (status, body) == (200, value)
            status, headers, body = _request(h.port, "HEAD", f"/api?group=z&key={key}")
            assert (status, headers.get("content-length")) == (200, str(len(value))), (h.port, key)
            # A client that accepts gzip gets the value or a gzip body it can decode, never a raw frame.
            status, headers, body = _request(h.port, "GET", f"/api?group=z&key={key}",
                                             headers={"Accept-Encoding": "gzip"})
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            assert (status, body) == (200, value)
            # The peer API: the answer's bytes decode by the codec id it carries.
            for target in (f"/_geecache/z/{key}", f"/_geecache/z/{key}?handoff=1"):
                status, _, body = _request(h.port, "GET", target)
                if status == 404 and "handoff" in target:
                    continue  # not cached on this host (a handoff ask never loads)
                assert status == 200, (target, status, body)
                msg = GetResponse()
                msg.ParseFromString(body)
                assert unpack(msg.codec, msg.value) == value, (h.port, target)
        batch = BatchRequest(items=[BatchItem(key=k) for k in KEYS]).SerializeToString()
        status, _, body = _request(h.port, "POST", "/api/batch?group=z", batch)
        assert status == 200, body
        answer = BatchResponse()
        answer.ParseFromString(body)
        assert [(i.key, i.status, i.value) for i in answer.items] == [(k, 200, VALUES[k]) for k in KEYS]
        status, _, body = _request(h.port, "POST", "/_geecache/z/_batch", batch)
        assert status == 200, body
        answer.ParseFromString(body)
        assert [(i.status, unpack(i.codec, i.value)) for i in answer.items] == [(200, VALUES[k]) for k in KEYS]


def _start_two(tmp_path: Path, config: Path, ports: list[int]):
    peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    hosts = []
    try:
        for port in ports:
            hosts.append(start_supervisor(tmp_path, "--config", str(config), "--peers", peers, workers=2,
                                          port=port, wait=False))
        for h in hosts:
            h.wait_ready(2)
    except BaseException:
        for h in hosts:
            h.kill_leftovers()
        raise
    return hosts


def _fill(hosts) -> None:
    for key, value in VALUES.items():
        assert _request(hosts[0].port, "PUT", f"/api?group=z&key={key}", value)[0] == 204
    # Each host: its own keys owned, the other's as hot copies (at a worker's second fetch of the
    # key, hot_after: with two workers, by the third read at the latest).
    for h in hosts * 3:
        for key, value in VALUES.items():
            assert _request(h.port, "GET", f"/api?group=z&key={key}")[2] == value
    stats = [h.admin_json("/stats")["z"] for h in hosts]
    assert sum(s["entries"] for s in stats) == len(KEYS) and all(s["hot_entries"] for s in stats)


def _sighup(h, config_text_contains: str) -> None:
    seen = h.log().count("every worker now runs the new configuration")
    h.send_signal(signal.SIGHUP)
    # A roll is two worker boots and two graceful retirements: generous on a loaded machine.
    wait_until(lambda: h.log().count("every worker now runs the new configuration") > seen, ROLL_DEADLINE,
               what="the roll to finish")
    assert config_text_contains in h.log()


@pytest.mark.parametrize("before,after", [("zstd", "none"), ("gzip", "none"), ("lz4", "none"),
                                          ("snappy", "none"), ("none", "zstd"), ("gzip", "zstd")])
def test_sighup_to_another_codec_serves_every_cached_value(tmp_path, before, after):
    config, db = tmp_path / "g.toml", tmp_path / "z.db"
    _write_config(config, db, before)
    hosts = _start_two(tmp_path, config, [free_port(), free_port()])
    try:
        _fill(hosts)
        _write_config(config, db, after)
        for h in hosts:
            _sighup(h, f"groups[0].codec {before} → {after}")
        stats = [h.admin_json("/stats")["z"] for h in hosts]
        # Nothing was dropped by the roll: the reads below are the entries cached before it.
        assert sum(s["entries"] for s in stats) == len(KEYS) and all(s["hot_entries"] for s in stats)
        loads = sum(s["loads"] for s in stats)
        _assert_every_read_serves_the_value(hosts)
        assert sum(h.admin_json("/stats")["z"]["loads"] for h in hosts) == loads  # served from the cache
    finally:
        for h in hosts:
            h.stop()


def test_warm_restart_with_another_codec_serves_every_cached_value(tmp_path):
    config, db = tmp_path / "g.toml", tmp_path / "z.db"
    _write_config(config, db, "zstd")
    h = start_supervisor(tmp_path, "--config", str(config), workers=2)
    second = None
    try:
        for key, value in VALUES.items():
            assert _request(h.port, "PUT", f"/api?group=z&key={key}", value)[0] == 204
        arena = h.arena_name()
        assert h.stop(signal.SIGUSR1) == 0
        _write_config(config, db, "none")
        second = start_supervisor(tmp_path, "--config", str(config), workers=2, port=h.port)
        assert f"reattached arena {arena} left for a warm restart: {len(KEYS)} cached entries" in second.log()
        _assert_every_read_serves_the_value([second])
        assert second.admin_json("/stats")["z"]["loads"] == 0  # every value came from the reattached arena
    finally:
        h.kill_leftovers()
        if second is not None:
            second.stop()


def test_no_wrong_value_while_workers_roll_onto_another_codec(tmp_path):
    config, db = tmp_path / "g.toml", tmp_path / "z.db"
    _write_config(config, db, "zstd")
    hosts = _start_two(tmp_path, config, [free_port(), free_port()])
    stop, answers = threading.Event(), []

    def load(port: int) -> None:  # one keep-alive connection, bounded in rounds and in time
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 300
        try:
            for _ in range(100_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                for key in KEYS:
                    try:
                        conn.request("GET", f"/api?group=z&key={key}")
                        resp = conn.getresponse()
                        answers.append((key, resp.status, resp.read()))
                    except (OSError, http.client.HTTPException):
                        conn.close()  # a retired worker closed it between requests: reconnect
        finally:
            conn.close()

    try:
        _fill(hosts)
        clients = [threading.Thread(target=load, args=(h.port,)) for h in hosts]
        for c in clients:
            c.start()
        try:
            wait_until(lambda: len(answers) >= 100, 60, what="load running")
            _write_config(config, db, "none")
            for h in hosts:
                _sighup(h, "groups[0].codec zstd → none")
            seen = len(answers)
            wait_until(lambda: len(answers) >= seen + 100, 60, what="load served by the new workers")
        finally:
            stop.set()
            for c in clients:
                c.join(30)
        assert not any(c.is_alive() for c in clients)
        wrong = [(k, st, len(b)) for k, st, b in answers if (st, b) != (200, VALUES[k])]
        assert not wrong, (len(wrong), wrong[:5])
    finally:
        for h in hosts:
            h.stop()
