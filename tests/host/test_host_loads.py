"""Slow loaders don't starve unrelated work.

A real supervisor, loaders that stall in the loads' thread pool or on the
loop: each stalled load ends in a JSON 504 after its group's ``load_timeout``
and releases the host-wide flight, so a later request loads again; a fresh
key and a PUT to an SQLite group are served meanwhile (separate, bounded
pools).  Status codes and bodies are asserted, every wait bounded, no
duration asserted.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.support.proc import start_supervisor

pytestmark = pytest.mark.procs

STALLED = 6


def _config(tmp_path) -> str:
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        '[[groups]]\nname = "slow"\nloader = "tests.support.host_loaders:sleeps_in_a_thread"\n'
        "load_timeout = 1\n"
        '[[groups]]\nname = "aslow"\nloader = "tests.support.host_loaders:sleeps_on_the_loop"\n'
        "load_timeout = 1\n"
        f'[[groups]]\nname = "s"\nsqlite = "{tmp_path / "s.db"}"\n')
    return str(cfg)


def test_stalled_loads_time_out_and_block_neither_a_fresh_key_nor_a_put(tmp_path):
    stall = tmp_path / "stall"
    stall.write_text("")
    h = start_supervisor(tmp_path, "--config", _config(tmp_path), workers=1,
                         env={"GEECACHE_TEST_STALL_FILE": str(stall)})
    try:
        answers: dict[str, tuple[int, bytes]] = {}

        def get(key: str) -> None:
            answers[key] = h.get(f"/api?group=slow&key={key}")

        stalled = [threading.Thread(target=get, args=(f"block{i}",)) for i in range(STALLED)]
        for t in stalled:
            t.start()
        # While those six hold six threads of the loads' pool:
        assert h.get("/api?group=slow&key=fresh") == (200, b"value-fresh")
        status, _, _ = h.request("PUT", "/api?group=s&key=k", body=b"v1")
        assert status in (200, 204)
        assert h.get("/api?group=s&key=k") == (200, b"v1")
        for t in stalled:
            t.join(20)
        assert not any(t.is_alive() for t in stalled)
        for i in range(STALLED):
            status, body = answers[f"block{i}"]
            assert status == 504, (status, body)
            assert "load_timeout" in json.loads(body)["error"]
        # The flights were released: once the source answers again, the next request loads.
        stall.unlink()
        assert h.get("/api?group=slow&key=block0") == (200, b"value-block0")
        assert h.admin_json("/stats")["slow"]["load_errors"] >= STALLED
    finally:
        assert h.stop() == 0


def test_a_stalled_async_load_is_cancelled_with_a_504(tmp_path):
    h = start_supervisor(tmp_path, "--config", _config(tmp_path), workers=1)
    try:
        status, body = h.get("/api?group=aslow&key=block1")
        assert status == 504, (status, body)
        assert h.get("/api?group=aslow&key=other") == (200, b"value-other")
    finally:
        assert h.stop() == 0
