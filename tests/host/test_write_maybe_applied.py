"""A write answered 503 by a host whose source could not commit it in time, through real hosts.

Two cases, told apart by the answer (``X-Geecache-Maybe-Applied``): the transaction holding
the write had begun and had not answered within the bound (a slow commit: it may still land,
and does), or the write never reached a transaction (the host's write turn held elsewhere: it
is not applied, ever).  A client must not send the first to another host, where it would be
applied a second time; the second it may.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import sqlite3
import time

import pytest

from geecache.client import AsyncClient, Client
from geecache.errors import UnavailableError
from tests.support.proc import request, start_supervisor, wait_until

pytestmark = pytest.mark.procs

#: The hosts' bound on a write (the group's ``busy_timeout``; 5 s by default), short so that
#: the slow commits below need not run long.
BUSY_TIMEOUT = 1.0

#: How long the slow key's commit should run: past the source's bound on a write
#: (BUSY_TIMEOUT plus a 1 s grace), with room for a server thread faster than the
#: calibration below.
SLOW_COMMIT_SECONDS = 5.0


def _slow_database(path, *keys: str) -> None:
    """An SQLite file whose table runs a long query (a trigger) inside the transaction that
    inserts one of *keys*, and records each application of it in table ``applied``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A table from before versions: the host adds its columns.
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
        conn.execute("CREATE TABLE applied (key TEXT, spun INTEGER)")
        conn.execute("CREATE TABLE spin (x INTEGER)")
        conn.executemany("INSERT INTO spin VALUES (?)", [(i,) for i in range(1000)])
        spin = "SELECT count(*) FROM spin a, spin b, spin c WHERE a.x < %d"
        started = time.perf_counter()
        conn.execute(spin % 4).fetchone()  # 4M rows: how fast this machine runs the query
        per_bound = (time.perf_counter() - started) / 4
        bound = min(1000, math.ceil(SLOW_COMMIT_SECONDS / per_bound))
        listed = ", ".join(f"'{key}'" for key in keys)
        conn.execute(f"CREATE TRIGGER slow AFTER INSERT ON kv WHEN NEW.key IN ({listed}) BEGIN "
                     f"INSERT INTO applied SELECT NEW.key, ({spin % bound}); END")
    finally:
        conn.close()


def _host(tmp_path, name: str, db):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[[groups]]\nname = "w"\nsqlite = "{db}"\nbusy_timeout = {BUSY_TIMEOUT}\n')
    return start_supervisor(tmp_path / name, "--config", str(cfg), workers=1)


def _sets(host) -> int:
    return host.admin_json("/stats")["w"]["sets"]


def test_a_write_that_may_have_been_applied_is_not_sent_to_another_host(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db_a = tmp_path / "a.db"
    _slow_database(db_a, "slow")
    a, b = _host(tmp_path, "a", db_a), _host(tmp_path, "b", tmp_path / "b.db")
    try:
        with Client([f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"], timeout=60) as c:
            with pytest.raises(UnavailableError) as caught:
                c.set("slow", b"once", group="w")
            assert caught.value.maybe_applied, caught.value
            assert "may have been applied" in str(caught.value)
        assert _sets(b) == 0  # never sent to the second host
        # And it was applied after all, once, by the transaction that had begun.
        conn = sqlite3.connect(db_a)
        try:
            wait_until(lambda: conn.execute("SELECT count(*) FROM applied").fetchone()[0] == 1,
                       timeout=60, what="the slow commit to land")
        finally:
            conn.close()
        assert a.get("/api?group=w&key=slow") == (200, b"once")
    finally:
        a.stop()
        b.stop()


def test_a_write_refused_before_its_transaction_says_so_and_goes_to_the_next_host(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db_a = tmp_path / "a.db"
    a, b = _host(tmp_path, "a", db_a), _host(tmp_path, "b", tmp_path / "b.db")
    try:
        # Host A's write turn held here: its commit thread waits for it past the write's bound.
        turn = os.open(f"{db_a}-writer", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(turn, fcntl.LOCK_EX)
        try:
            status, headers, body = request(a.port, "PUT", "/api?group=w&key=first", b"1", timeout=60)
            assert status == 503, body
            assert "x-geecache-maybe-applied" not in headers and headers["retry-after"] == "1", headers
            with Client([f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"], timeout=60) as c:
                c.set("second", b"2", group="w")  # answered by B after A's 503
            assert b.get("/api?group=w&key=second") == (200, b"2")
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
            os.close(turn)
        # A write queued behind them is answered once A's commit thread has judged them.
        assert a.request("PUT", "/api?group=w&key=third", b"3")[0] == 204
        conn = sqlite3.connect(db_a)
        try:
            keys = {k for (k,) in conn.execute("SELECT key FROM kv")}
        finally:
            conn.close()
        assert keys == {"third"}  # neither refused write was applied later
    finally:
        a.stop()
        b.stop()


def test_a_batch_write_that_may_have_been_applied_says_so_per_key_and_is_not_sent_elsewhere(tmp_path):
    """A batch whose key's commit had begun and did not answer in time: the refusal carries the
    maybe-applied header and, per key, a maybe_applied flag, and neither client sends the
    batch to another host."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db_a = tmp_path / "a.db"
    _slow_database(db_a, "slow1", "slow2", "slow3")
    a, b = _host(tmp_path, "a", db_a), _host(tmp_path, "b", tmp_path / "b.db")
    hosts = [f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"]
    conn = sqlite3.connect(db_a)

    def landed(n: int) -> None:
        # Each slow commit lands before the next batch, which would otherwise wait behind it
        # and be refused before its own transaction began (not applied: free to go elsewhere).
        wait_until(lambda: conn.execute("SELECT count(*) FROM applied").fetchone()[0] == n,
                   timeout=90, what=f"slow commit #{n} to land")

    try:
        from geecache.geecachepb import BatchItem, BatchRequest

        body = BatchRequest(items=[BatchItem(key="slow1", value=b"1")]).SerializeToString()
        status, headers, answer = request(a.port, "POST", "/api/batch?op=set&group=w", body, timeout=60)
        assert status == 503, answer
        assert headers.get("x-geecache-maybe-applied") == "1", headers
        doc = json.loads(answer)
        assert doc["items"] == [{"index": 0, "status": 503, "maybe_applied": True}], doc
        landed(1)

        with Client(hosts, timeout=60) as c:
            with pytest.raises(UnavailableError) as caught:
                c.set_many({"slow2": b"2", "other2": b"x"}, group="w")
            assert caught.value.maybe_applied, caught.value
        landed(2)

        async def async_client() -> None:
            async with AsyncClient(hosts, timeout=60) as ac:
                with pytest.raises(UnavailableError) as caught:
                    await ac.set_many({"slow3": b"3"}, group="w")
                assert caught.value.maybe_applied, caught.value

        asyncio.run(async_client())
        landed(3)
        assert _sets(b) == 0  # no batch was sent to the second host
    finally:
        conn.close()
        a.stop()
        b.stop()
