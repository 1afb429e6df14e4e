"""A peer write's version is bounded by the receiver's clock, and the peer API is protected by default.

Real supervisors over a real SQLite file.  A peer ``PUT`` whose version is
far in the future (2**63 - 2: the end of the HLC's range) is refused with a
400 and a JSON reason and never stored, and ordinary writes of the key keep
working; a row stored with such a version before this check existed does
not make later writes fail either.  A non-loopback ``--host`` without a
token refuses to start unless ``--trusted-network`` says so.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from geecache import hlc
from geecache.geecachepb import SetRequest, WriteResponse
from geecache.storage.sqlite import SQLiteStorage
from tests.support.proc import run_supervisor, start_supervisor

POISON = (1 << 63) - 2


def _config(tmp_path) -> tuple[str, str]:
    db = tmp_path / "g.db"
    path = tmp_path / "g.toml"
    path.write_text(f'[[groups]]\nname = "g"\nsqlite = "{db}"\n')
    return str(path), str(db)


def _peer_put(h, key: str, value: bytes, version: int):
    body = SetRequest(group="g", key=key, value=value, version=version).SerializeToString()
    return h.request("PUT", f"/_geecache/g/{key}", body)


def _stored_version(db: str, key: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()[0]


def _ordinary_writes_work(h, db: str, key: str) -> None:
    for i in range(6):  # both workers, several times each: no clock was dragged to its end
        status, _, body = h.request("PUT", f"/api?group=g&key={key}", f"v{i}".encode())
        assert status == 204, body
        assert h.get(f"/api?group=g&key={key}") == (200, f"v{i}".encode())
    assert abs(hlc.to_unix(_stored_version(db, key)) - time.time()) < 600  # a version of now, not 2112


@pytest.mark.procs
def test_a_peer_write_far_ahead_is_refused_and_writes_keep_working(tmp_path):
    config, db = _config(tmp_path)
    h = start_supervisor(tmp_path, "--config", config, workers=2)
    try:
        assert h.request("PUT", "/api?group=g&key=secret-key", b"before")[0] == 204
        for _ in range(2):  # whichever worker takes it
            status, headers, body = _peer_put(h, "secret-key", b"poison", POISON)
            assert status == 400 and headers["content-type"].startswith("application/json"), (status, body)
            reason = json.loads(body)["error"]
            assert "ahead" in reason and "max_clock_drift" in reason and "secret-key" not in reason
        assert h.get("/api?group=g&key=secret-key") == (200, b"before")  # never stored
        assert _stored_version(db, "secret-key") < POISON
        # A peer write of a version of now is applied as before.
        status, _, body = _peer_put(h, "secret-key", b"from a peer", hlc.HLC().now())
        assert status == 200, body
        answer = WriteResponse()
        answer.ParseFromString(body)
        assert answer.applied
        assert h.get("/api?group=g&key=secret-key") == (200, b"from a peer")
        _ordinary_writes_work(h, db, "secret-key")
        assert "Traceback" not in h.log()
    finally:
        assert h.stop() == 0


@pytest.mark.procs
def test_a_version_stored_far_ahead_before_the_check_does_not_stop_writes(tmp_path):
    config, db = _config(tmp_path)
    store = SQLiteStorage(db)  # the table as a host makes it; the row as an old host stored it
    asyncio.run(store.write("k", b"poisoned", version=hlc.HLC().now()))
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE kv SET version = ? WHERE key = 'k'", (POISON,))
    h = start_supervisor(tmp_path, "--config", config, workers=2)
    try:
        assert h.get("/api?group=g&key=k") == (200, b"poisoned")
        _ordinary_writes_work(h, db, "k")
        assert h.request("DELETE", "/api?group=g&key=k")[0] == 204
        assert h.get("/api?group=g&key=k")[0] == 404
        assert "Traceback" not in h.log()
    finally:
        assert h.stop() == 0


@pytest.mark.procs
@pytest.mark.parametrize("bind", [("--host", "0.0.0.0"), ("--bind", ":0")])
def test_a_public_host_without_a_token_refuses_to_start(tmp_path, bind):
    r = run_supervisor(*bind, "--port", "0", "--arena", "32MiB", "--data-dir", str(tmp_path)) \
        if bind[0] == "--host" else run_supervisor(*bind, "--arena", "32MiB", "--data-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert f"config error: {bind[0]}: " in r.stderr and "auth_token" in r.stderr and "trusted_network" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.procs
@pytest.mark.parametrize("args,logged", [
    (("--host", "0.0.0.0", "--trusted-network"), "protection: no auth_token and the data port is on 0.0.0.0: "
                                                  "trusted_network"),
    (("--host", "0.0.0.0", "--auth-token", "t0ken"), "protection: writes and the peer API need the auth_token"),
    ((), "protection: no auth_token: the data port is on loopback (127.0.0.1) only"),
])
def test_the_log_says_how_the_data_port_is_protected(tmp_path, args, logged):
    h = start_supervisor(tmp_path, *args, workers=1)
    try:
        assert logged in h.log()
    finally:
        assert h.stop() == 0
