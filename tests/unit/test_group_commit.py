"""Group commit in the sources: writes that arrive together share a transaction, and each
row of it is still judged alone (version, deadline, tombstone, expiry)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from geecache.errors import LoadError, SourceBusyError
from geecache.hlc import pack
from geecache.stats import LocalStats
from geecache.storage import MemoryStorage, SQLiteStorage, Storage, WriteResult
from geecache.storage import sqlite as sqlite_module
from geecache.storage.base import WriteOp, batch_writer
from tests.support.proc import fork, reap, wait_until

T0 = 1_750_000_000.0


def v(n: int) -> int:
    """A version: the HLC timestamp of second *n* after T0."""
    return pack(int((T0 + n) * 1e6))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def counted(path, **kw) -> tuple[SQLiteStorage, LocalStats]:
    s = SQLiteStorage(path, **kw)
    stats = LocalStats()
    s.attach_stats(stats)
    return s, stats


def stored(path, key: str):
    """(value, version, deleted) of *key* read straight from the file, or None."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT value, version, deleted FROM kv WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()


def test_concurrent_writes_share_one_transaction_and_each_is_acked_after_it(tmp_path):
    path = tmp_path / "db.sqlite"
    s, stats = counted(path)

    async def main():
        results = await asyncio.gather(*(s.write(f"k{i}", b"v%d" % i) for i in range(50)))
        assert all(r.applied and not r.existed for r in results)

    run(main())
    snap = stats.snapshot()
    assert snap["source_writes"] == 50
    # All 50 were queued before the first commit started: one transaction holds them.
    assert snap["source_commits"] == 1
    for i in range(50):  # acked means committed: another connection sees every row
        assert stored(path, f"k{i}")[0] == b"v%d" % i
    s.close()


def test_a_batch_is_bounded_in_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_module, "MAX_BATCH_ROWS", 8)
    s, stats = counted(tmp_path / "db.sqlite")

    async def main():
        await asyncio.gather(*(s.write(f"k{i}", b"v") for i in range(40)))

    run(main())
    assert stats.snapshot()["source_commits"] == 5  # 40 rows, 8 per transaction
    s.close()


def test_a_batch_is_bounded_in_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_module, "MAX_BATCH_BYTES", 1000)
    s, stats = counted(tmp_path / "db.sqlite")

    async def main():
        await asyncio.gather(*(s.write(f"k{i}", b"x" * 400) for i in range(10)))

    run(main())
    assert stats.snapshot()["source_commits"] == 5  # two 400-byte values per transaction
    s.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStorage(tombstone_ttl=60)
    else:
        s = SQLiteStorage(tmp_path / "db.sqlite", tombstone_ttl=60)
    yield s
    s.close()


def test_refused_rows_of_a_batch_answer_as_alone_and_the_others_apply(store):
    async def main():
        assert (await store.write("newer", b"v5", version=v(5))).applied
        assert (await store.write("gone", b"x", version=v(1))).applied
        answers = await store.write_many([
            WriteOp("fresh", b"a", v(2)),
            WriteOp("newer", b"old", v(3)),                      # older than the stored v5
            WriteOp("late", b"b", v(2), deadline=time.time() - 1),  # past its deadline
            WriteOp("gone", None, v(2)),                         # a delete: a tombstone
            WriteOp("gone", b"again", v(1)),                     # older than that tombstone
            WriteOp("ttl", b"c", v(2), expire_at=time.time() + 3600),
            WriteOp("fresh", b"a2", v(4)),                       # the same key again, newer
        ])
        assert answers[0] == WriteResult(True, False, v(2))
        assert answers[1] == WriteResult(False, True, v(5)) and answers[1].stale
        assert answers[2].late and not answers[2].applied
        assert answers[3] == WriteResult(True, True, v(2))
        assert answers[4].stale
        assert answers[5].applied
        assert answers[6] == WriteResult(True, True, v(4))
        assert await store.get("fresh") == b"a2"
        assert await store.get("newer") == b"v5"
        assert await store.get("late") is None
        assert await store.get("gone") is None
        row = await store.read("ttl")
        assert row.value == b"c" and row.expire_at > time.time()

    run(main())


def test_a_row_the_database_refuses_fails_alone(tmp_path):
    path = tmp_path / "db.sqlite"
    s = SQLiteStorage(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER no_bad BEFORE INSERT ON kv WHEN NEW.key = 'bad' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")
    conn.commit()
    conn.close()

    async def main():
        answers = await s.write_many([WriteOp("a", b"1"), WriteOp("bad", b"2"), WriteOp("c", b"3")])
        assert answers[0].applied and answers[2].applied
        assert isinstance(answers[1], LoadError) and "trigger" in str(answers[1])
        with pytest.raises(LoadError):
            await s.write("bad", b"2")

    run(main())
    assert stored(path, "a")[0] == b"1" and stored(path, "c")[0] == b"3" and stored(path, "bad") is None
    s.close()


def test_a_store_without_write_many_writes_one_at_a_time():
    class Legacy(Storage):  # a store from before versions and batches: set/delete only
        def __init__(self):
            self.calls = []

        async def get(self, key):
            return None

        async def set(self, key, value):
            self.calls.append(("set", key))

        async def delete(self, key):
            self.calls.append(("delete", key))
            return True

    class Bare:  # not even a Storage: a module:function object with a write
        def __init__(self):
            self.calls = []

        async def write(self, key, value, *, version=0, expire_at=0.0, deadline=0.0):
            self.calls.append(key)
            if key == "boom":
                raise LoadError("no")
            return WriteResult(True, False, 0)

    async def main():
        legacy = Legacy()
        answers = await batch_writer(legacy)([WriteOp("a", b"1"), WriteOp("b", None)])
        assert [a.applied for a in answers] == [True, True] and legacy.calls == [("set", "a"), ("delete", "b")]
        bare = Bare()
        answers = await batch_writer(bare)([WriteOp("x", b"1"), WriteOp("boom", b"2"), WriteOp("y", b"3")])
        assert answers[0].applied and isinstance(answers[1], LoadError) and answers[2].applied
        assert bare.calls == ["x", "boom", "y"]

    run(main())


def test_synchronous_is_the_sqlite_pragma(tmp_path):
    full = SQLiteStorage(tmp_path / "a.sqlite")
    normal = SQLiteStorage(tmp_path / "b.sqlite", synchronous="normal")
    # PRAGMA synchronous: 1 = NORMAL, 2 = FULL.
    assert full._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    assert normal._conn().execute("PRAGMA synchronous").fetchone()[0] == 1
    full.close()
    normal.close()
    with pytest.raises(Exception, match="synchronous"):
        SQLiteStorage(tmp_path / "c.sqlite", synchronous="off")


def test_too_many_waiting_writes_are_refused_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_module, "MAX_QUEUED_ROWS", 10)
    s = SQLiteStorage(tmp_path / "db.sqlite")

    async def main():
        results = await asyncio.gather(*(s.write(f"k{i}", b"v") for i in range(15)), return_exceptions=True)
        busy = [r for r in results if isinstance(r, SourceBusyError)]
        assert len(busy) == 5 and all(r.http_status == 503 for r in busy)
        assert all(r.applied for r in results if not isinstance(r, Exception))

    run(main())
    s.close()


def _hold_the_turn_then_stop(path: str) -> None:
    fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.kill(os.getpid(), signal.SIGSTOP)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.procs
def test_a_stopped_turn_holder_bounds_writes_then_a_kill_frees_them(tmp_path):
    """A process of the host SIGSTOPped holding the write turn: writes wait their bound and
    answer SourceBusyError (never applied later), a queued write's writer is called back
    with it once; once the holder is SIGKILLed the turn is free."""
    path = tmp_path / "db.sqlite"
    # A pool of its own: asyncio.run waits for its default pool's threads, and one of
    # these waits for the turn until the holder dies.
    pool = ThreadPoolExecutor(2)
    s = SQLiteStorage(path, busy_timeout=0.5, executor=pool)
    calls: list = []  # (key, answer) per call of a queued write's writer
    holder = fork(_hold_the_turn_then_stop, str(path))
    try:
        wait_until(lambda: _state(holder) == "T", 10, what="turn holder stopped")

        async def stuck():
            for key in ("q1", "q2"):
                s.queue_write(key, b"1", v(1), lambda row: calls.append((row.key, row.answer)))
            answers = await asyncio.gather(s.write("a", b"1"), s.write("b", b"2"), return_exceptions=True)
            await wait_for_calls(calls, 2)
            return answers

        answers = run(stuck())
        assert all(isinstance(a, SourceBusyError) for a in answers), answers
        assert sorted(key for key, _ in calls) == ["q1", "q2"]
        assert all(isinstance(answer, SourceBusyError) for _, answer in calls), calls
        os.kill(holder, signal.SIGKILL)
        reap([holder])
        holder = None

        async def after():
            # The thread that waited for the turn gets it now and refuses what it held.
            return await s.write("c", b"3")

        assert run(after()).applied
        assert stored(path, "c")[0] == b"3"
        for key in ("a", "b", "q1", "q2"):  # given up: never applied
            assert stored(path, key) is None, key
        assert len(calls) == 2  # the refused rows' late answers called nobody
    finally:
        if holder is not None:
            os.kill(holder, signal.SIGKILL)
            reap([holder])
        s.close()
        pool.shutdown(wait=True)


def test_queued_writes_call_their_writer_back_once_after_the_commit(tmp_path):
    """``queue_write`` (the data plane's PUT): no Future; each writer's callback runs once,
    on the loop, when its row has committed (another connection already reads it)."""
    path = tmp_path / "db.sqlite"
    s, stats = counted(path)
    calls: list = []

    def done(row):
        calls.append((row.key, row.answer, stored(path, row.key)))

    async def main():
        for i in range(5):
            s.queue_write(f"k{i}", b"v%d" % i, v(i + 1), done)
        await wait_for_calls(calls, 5)

    run(main())
    assert sorted(key for key, _, _ in calls) == [f"k{i}" for i in range(5)]
    for key, answer, row in calls:
        assert isinstance(answer, WriteResult) and answer.applied
        assert row is not None and row[0] == b"v" + key[1:].encode()  # committed before the call
    assert stats.snapshot()["source_commits"] == 1
    s.close()


async def wait_for_calls(calls: list, n: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while len(calls) < n:
        assert time.monotonic() < deadline, f"{len(calls)} of {n} writers called back"
        await asyncio.sleep(0.01)


def test_a_commit_that_cannot_start_answers_its_writers_with_why(tmp_path):
    """The commit threads' pool is shut down (a worker stopping): every writer, awaiting or
    queued, is answered with the pool's error at once, none left waiting."""
    pool = ThreadPoolExecutor(1)
    s = SQLiteStorage(tmp_path / "db.sqlite", executor=pool)
    pool.shutdown(wait=True)
    calls: list = []

    async def main():
        s.queue_write("q", b"1", v(1), lambda row: calls.append(row.answer))
        with pytest.raises(RuntimeError, match="shutdown"):
            await s.write("a", b"1")
        await wait_for_calls(calls, 1)

    run(main())
    assert len(calls) == 1 and isinstance(calls[0], RuntimeError), calls
    s.close()
