"""The write path through a real host: group commit across concurrent clients, durability of
every acknowledged write when the whole host, or one committing worker, is SIGKILLed, a
SIGSTOPped worker handled like any child, and a stopped holder of the write turn costing
writes a bounded 503."""

from __future__ import annotations

import fcntl
import http.client
import itertools
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.support.proc import alive, fork, reap, start_supervisor, wait_until

pytestmark = pytest.mark.procs

#: Every load loop below stops at this many requests per client, or this many seconds.
MAX_REQUESTS = 3000
MAX_SECONDS = 60.0


def _config(tmp_path, *extra: str):
    db = tmp_path / "w.db"
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[groups]]\nname = "w"\nsqlite = "%s"\n%s' % (db, "".join(e + "\n" for e in extra)))
    return db, cfg


class Writer(threading.Thread):
    """One client: PUTs fresh keys on a keep-alive connection (a new one after an error) until
    told to stop or its bounds run out; ``acked`` holds the keys answered 204."""

    def __init__(self, port: int, name: str, limit: int = MAX_REQUESTS) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix, self.limit = port, name, limit
        self.acked: list[str] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        deadline = time.monotonic() + MAX_SECONDS
        for i in itertools.count():
            if self.stop.is_set() or i >= self.limit or time.monotonic() > deadline:
                break
            key = f"{self.prefix}-{i}"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                conn.request("PUT", f"/api?group=w&key={key}", body=value_of(key))
                resp = conn.getresponse()
                resp.read()
                if resp.status == 204:
                    self.acked.append(key)
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1  # a connection cut by a kill: not acked
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def value_of(key: str) -> bytes:
    return (key * 4).encode()[:100]


def missing_from(db, keys: list[str]) -> list[str]:
    """The *keys* whose row in the file is absent or holds another value."""
    conn = sqlite3.connect(db)
    try:
        rows = dict(conn.execute("SELECT key, value FROM kv WHERE deleted = 0"))
    finally:
        conn.close()
    return [k for k in keys if rows.get(k) != value_of(k)]


def kill_whole_host(h) -> None:
    """SIGKILL the supervisor and every worker at once: nothing gets to flush or close."""
    pids = [h.pid] + h.workers()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    h.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in pids), 10, what="the host gone")


def test_concurrent_puts_share_commits_and_survive_a_sigkill_of_the_whole_host(tmp_path):
    db, cfg = _config(tmp_path)
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2)
    turn = None
    try:
        # First a burst held behind the host's write turn (taken here, as a slow commit
        # of another process would hold it): every PUT of it is queued when the turn
        # comes free, so they must share transactions.
        turn = os.open(str(db) + "-writer", os.O_RDWR | os.O_CREAT)
        fcntl.flock(turn, fcntl.LOCK_EX)
        burst = [Writer(h.port, f"burst{i}", limit=1) for i in range(16)]
        for w in burst:
            w.start()
        wait_until(lambda: h.admin_json("/stats")["w"]["sets"] >= 16, 20, what="the burst queued")
        fcntl.flock(turn, fcntl.LOCK_UN)
        for w in burst:
            w.join(30)
        assert sum(len(w.acked) for w in burst) == 16
        stats = h.admin_json("/stats")["w"]
        assert stats["source_writes"] == 16
        # At most two transactions per worker: the row each had taken when the turn was
        # held, then everything queued behind it.
        assert stats["source_commits"] <= 4, stats

        # Then an open load from several clients, and the whole host SIGKILLed in it.
        load = [Writer(h.port, f"load{i}") for i in range(8)]
        for w in load:
            w.start()
        wait_until(lambda: sum(len(w.acked) for w in load) >= 400, 30, what="load running")
        kill_whole_host(h)
        for w in load:
            w.stop.set()
            w.join(30)
        acked = [k for w in burst + load for k in w.acked]
        assert len(acked) >= 416
        assert missing_from(db, acked) == []  # every acknowledged write is in the file
    finally:
        if turn is not None:
            os.close(turn)
        h.kill_leftovers()


def test_a_worker_sigkilled_while_committing_loses_no_acknowledged_write(tmp_path):
    db, cfg = _config(tmp_path)
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=2)
    try:
        writers = [Writer(h.port, f"c{i}") for i in range(6)]
        for w in writers:
            w.start()
        acked = lambda: sum(len(w.acked) for w in writers)  # noqa: E731
        for _ in range(3):  # three kills, each of a worker in the middle of the load
            before = acked()
            wait_until(lambda: acked() >= before + 200, 30, what="writes acked")
            victim = h.workers()[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in h.wait_workers(2, timeout=20), 20, what="respawned")
        before = acked()
        wait_until(lambda: acked() >= before + 200, 30, what="writes acked after the kills")
        for w in writers:
            w.stop.set()
            w.join(30)
        stats = h.admin_json("/stats")["w"]
        assert stats["source_commits"] < stats["source_writes"]  # the load shared commits
        keys = [k for w in writers for k in w.acked]
        assert missing_from(db, keys) == []
        # Only requests in flight on a killed worker fail (a few per kill), never most.
        assert sum(w.failed for w in writers) <= 3 * len(writers) * 2
    finally:
        h.stop()


def test_a_sigstopped_worker_is_replaced_and_no_acknowledged_write_is_lost(tmp_path):
    db, cfg = _config(tmp_path)
    h = start_supervisor(tmp_path, "--config", str(cfg), "--worker-timeout", "2", workers=2)
    victim = None
    try:
        writers = [Writer(h.port, f"s{i}") for i in range(6)]
        for w in writers:
            w.start()
        acked = lambda: sum(len(w.acked) for w in writers)  # noqa: E731
        wait_until(lambda: acked() >= 200, 30, what="writes acked")
        victim = h.workers()[0]
        os.kill(victim, signal.SIGSTOP)  # maybe holding the turn, or inside a transaction
        wait_until(lambda: not alive(victim), 30, what="the stopped worker killed by the watchdog")
        h.wait_workers(2, timeout=20)
        before = acked()
        wait_until(lambda: acked() >= before + 200, 30, what="writes acked after the stop")
        for w in writers:
            w.stop.set()
            w.join(30)
        keys = [k for w in writers for k in w.acked]
        assert missing_from(db, keys) == []
    finally:
        if victim is not None and alive(victim):
            os.kill(victim, signal.SIGKILL)
        h.stop()


def _hold_the_turn_then_stop(db: str) -> None:
    fd = os.open(db + "-writer", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.kill(os.getpid(), signal.SIGSTOP)


def test_a_stopped_turn_holder_costs_writes_a_bounded_503_and_reads_nothing(tmp_path):
    db, cfg = _config(tmp_path)
    h = start_supervisor(tmp_path, "--config", str(cfg), workers=1)
    holder = None
    try:
        assert h.request("PUT", "/api?group=w&key=before", b"1")[0] == 204
        holder = fork(_hold_the_turn_then_stop, str(db))
        wait_until(lambda: Path(f"/proc/{holder}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
                   10, what="turn holder stopped")
        status, _h, body = h.request("PUT", "/api?group=w&key=stuck", b"2")
        assert status == 503, (status, body)
        reason = json.loads(body)["error"]
        assert "commit" in reason and "stuck" not in reason and str(db) not in reason
        assert h.request("GET", "/api?group=w&key=before")[:1] == (200,)  # reads take no turn
        os.kill(holder, signal.SIGKILL)
        reap([holder])
        holder = None
        assert h.request("PUT", "/api?group=w&key=after", b"3")[0] == 204
        assert h.get("/api?group=w&key=stuck")[0] == 404  # answered 503, and never applied later
    finally:
        if holder is not None:
            os.kill(holder, signal.SIGKILL)
            reap([holder])
        h.stop()
