"""Storage backends: memory, SQLite (several processes), loader functions."""

import asyncio
import os
import select
import sqlite3
import threading
import time

import pytest

from geecache.errors import ConfigError, LoadError, NotFoundError, ReadOnlySourceError
from geecache.storage import FunctionSource, MemoryStorage, SQLiteStorage, Storage, load_source
from tests.support.proc import reap


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- MemoryStorage -----------------------------------------------------------

def test_memory_not_found_is_not_empty():
    async def main():
        s = MemoryStorage({"empty": b"", "text": "héllo"})
        assert isinstance(s, Storage) and not s.readonly
        assert await s.get("empty") == b""
        assert await s.get("missing") is None
        assert await s.get("text") == "héllo".encode()
        await s.set("k", b"v")
        assert await s.get("k") == b"v"
        assert await s.delete("k") is True
        assert await s.delete("k") is False
        assert await s.get("k") is None
        with pytest.raises(TypeError):
            await s.set("k", 5)

    run(main())


# --- SQLiteStorage -----------------------------------------------------------

def test_sqlite_basic_semantics(tmp_path):
    async def main():
        s = SQLiteStorage(tmp_path / "db.sqlite")
        assert await s.get("missing") is None
        await s.set("empty", b"")
        assert await s.get("empty") == b""
        await s.set("k", b"one")
        await s.set("k", b"two")
        assert await s.get("k") == b"two"
        await s.set("ключ", "значение")
        assert await s.get("ключ") == "значение".encode()
        assert await s.delete("k") is True
        assert await s.delete("k") is False
        assert await s.get("k") is None
        s.close()
        with pytest.raises(LoadError, match="closed"):
            await s.get("empty")
        # Durable: a new instance on the same file sees the data.
        again = SQLiteStorage(tmp_path / "db.sqlite")
        assert await again.get("empty") == b""
        again.close()

    run(main())


def test_sqlite_uses_wal_and_separate_tables(tmp_path):
    async def main():
        path = tmp_path / "db.sqlite"
        a = SQLiteStorage(path, table="users")
        b = SQLiteStorage(path, table="scores")
        await a.set("k", b"A")
        await b.set("k", b"B")
        assert (await a.get("k"), await b.get("k")) == (b"A", b"B")
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # A row another tool wrote as TEXT still reads as bytes; a tool that
        # names only key and value still can write (unversioned, no expiry).
        conn.execute("INSERT INTO users (key, value) VALUES ('t', 'plain text')")
        conn.commit()
        conn.close()
        assert await a.get("t") == b"plain text"
        a.close()
        b.close()

    run(main())


@pytest.mark.parametrize("table", ["", "1abc", "kv; DROP TABLE kv", 'a"b', "x" * 64, None])
def test_sqlite_table_must_be_an_identifier(tmp_path, table):
    with pytest.raises(ConfigError) as info:
        SQLiteStorage(tmp_path / "db.sqlite", table=table)
    assert info.value.field == "table"
    assert not (tmp_path / "db.sqlite").exists()


def test_sqlite_bad_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot open SQLite database"):
        SQLiteStorage(tmp_path / "no" / "such" / "dir" / "db.sqlite")


class _WriteLockHolder(threading.Thread):
    """Another connection holding a new (rollback-journal) file's write lock until told to commit."""

    def __init__(self, path) -> None:
        super().__init__(daemon=True)
        self.path, self.holding, self.release = path, threading.Event(), threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE other (x)")
        self.holding.set()
        self.release.wait(30)
        conn.execute("COMMIT")
        conn.close()


def test_a_new_file_whose_write_lock_another_connection_holds_is_waited_for(tmp_path):
    # Two hosts sharing one new database start together: setting WAL mode while the other
    # holds the write lock is refused at once by SQLite, not through its busy handler.
    holder = _WriteLockHolder(tmp_path / "shared.db")
    holder.start()
    assert holder.holding.wait(10)
    threading.Timer(0.3, holder.release.set).start()
    store = SQLiteStorage(tmp_path / "shared.db", busy_timeout=30)
    try:
        assert holder.release.is_set()  # it waited for the lock, and then opened the file
        assert asyncio.run(store.set("k", b"v")) is not None and asyncio.run(store.get("k")) == b"v"
    finally:
        store.close()
        holder.join(10)


def test_a_file_locked_past_busy_timeout_is_a_config_error_naming_it(tmp_path):
    holder = _WriteLockHolder(tmp_path / "shared.db")
    holder.start()
    assert holder.holding.wait(10)
    try:
        with pytest.raises(ConfigError, match="database is locked") as err:
            SQLiteStorage(tmp_path / "shared.db", busy_timeout=0.2)
        assert err.value.field == "storage"
    finally:
        holder.release.set()
        holder.join(10)


@pytest.mark.procs
def test_sqlite_from_several_processes_at_once(tmp_path):
    writers, per_child = 3, 200
    s = SQLiteStorage(tmp_path / "db.sqlite")
    run(s.set("parent", b"p"))  # the parent holds a connection across the fork
    done_r, done_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = set()
    for n in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                async def child():
                    for i in range(per_child):
                        await s.set(f"c{n}-{i}", f"{n}:{i}".encode())
                    os.write(done_w, b"x")
                    # Wait until every writer is done, then read everyone's keys.
                    if not select.select([go_r], [], [], 30)[0]:
                        return False
                    os.read(go_r, 1)
                    for m in range(writers):
                        for i in range(per_child):
                            if await s.get(f"c{m}-{i}") != f"{m}:{i}".encode():
                                return False
                    return await s.get("parent") == b"p"

                code = 0 if asyncio.run(child()) else 1
            finally:
                os._exit(code)
        pids.add(pid)
    try:
        got = b""
        deadline = time.monotonic() + 60
        while len(got) < writers and time.monotonic() < deadline:
            if select.select([done_r], [], [], 1)[0]:
                got += os.read(done_r, writers)
        assert len(got) == writers, "writers did not finish"
        os.write(go_w, b"x" * writers)
    finally:
        try:
            status = reap(pids, timeout=60)  # a stuck child is killed, and fails the test
        finally:
            for fd in (done_r, done_w, go_r, go_w):
                os.close(fd)
    assert [os.waitstatus_to_exitcode(st) for st in status.values()] == [0] * writers
    # The parent's pre-fork connection still works: no child closed it or
    # removed the WAL under it.

    async def check():
        assert await s.get("parent") == b"p"
        for m in range(writers):
            for i in range(0, per_child, 17):
                assert await s.get(f"c{m}-{i}") == f"{m}:{i}".encode()

    run(check())
    s.close()


# --- FunctionSource ----------------------------------------------------------

def test_function_source_return_types():
    async def main():
        values = {"b": b"bytes", "s": "strï", "e": b"", "ba": bytearray(b"ba")}
        src = FunctionSource(values.get)
        assert src.readonly
        assert await src.get("b") == b"bytes"
        assert await src.get("s") == "strï".encode()
        assert await src.get("e") == b""
        assert await src.get("ba") == b"ba"
        assert await src.get("missing") is None

        async def aload(key):
            await asyncio.sleep(0)
            return None if key == "none" else key.upper()

        asrc = FunctionSource(aload)
        assert await asrc.get("abc") == b"ABC"
        assert await asrc.get("none") is None

    run(main())


@pytest.mark.parametrize("bad", [5, 1.5, ["x"], {"a": 1}, True])
def test_function_source_bad_return(bad):
    src = FunctionSource(lambda key: bad)
    with pytest.raises(LoadError, match=f"returned {type(bad).__name__} for key 'k'; expected bytes, str or None"):
        run(src.get("k"))


def test_function_source_raising_loader():
    def boom(key):
        raise OSError("database down")

    async def aboom(key):
        raise OSError("database down")

    for fn in (boom, aboom):
        with pytest.raises(LoadError, match="database down") as info:
            run(FunctionSource(fn).get("k"))
        assert isinstance(info.value.__cause__, OSError)

    def not_found(key):
        raise NotFoundError(key)

    with pytest.raises(NotFoundError):
        run(FunctionSource(not_found).get("k"))


def test_function_source_is_read_only():
    src = FunctionSource(lambda k: b"")
    with pytest.raises(ReadOnlySourceError):
        run(src.set("k", b"v"))
    with pytest.raises(ReadOnlySourceError):
        run(src.delete("k"))
    with pytest.raises(TypeError):
        FunctionSource("not callable")


def test_sync_loader_runs_off_the_loop_unless_asked():
    seen = []

    def load(key):
        seen.append(threading.get_ident())
        return b"v"

    async def main():
        await FunctionSource(load).get("k")
        await FunctionSource(load, in_thread=False).get("k")
        return threading.get_ident()

    loop_thread = run(main())
    assert seen[0] != loop_thread
    assert seen[1] == loop_thread


# --- load_source -------------------------------------------------------------

LOADERS = '''
import asyncio
def sync_load(key):
    return "sync:" + key
async def async_load(key):
    return b"async:" + key.encode()
class Sources:
    class Inner:
        @staticmethod
        def get(key):
            return None
NOT_CALLABLE = 42
'''


@pytest.fixture
def loaders(tmp_path, monkeypatch):
    (tmp_path / "gc_test_loaders.py").write_text(LOADERS)
    (tmp_path / "gc_test_broken.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "gc_test_loaders"


def test_load_source_finds_functions(loaders):
    async def main():
        assert await load_source(f"{loaders}:sync_load").get("k") == b"sync:k"
        assert await load_source(f"{loaders}:async_load").get("k") == b"async:k"
        assert await load_source(f"{loaders}:Sources.Inner.get").get("k") is None
        assert await load_source("os.path:basename").get("a/b") == b"b"

    run(main())


@pytest.mark.parametrize(
    "spec, reason",
    [
        ("gc_test_loaders", "not of the form"),
        ("gc_test_loaders:", "not of the form"),
        (":sync_load", "not of the form"),
        ("a:b:c", "not of the form"),
        ("gc_test_loaders:sync load", "not of the form"),
        ("gc_test_loaders:sync_load()", "not of the form"),
        (None, "not of the form"),
        ("gc_no_such_module_xyz:f", "cannot import module 'gc_no_such_module_xyz'"),
        ("gc_test_broken:f", "raised RuntimeError\\('broken at import'\\)"),
        ("gc_test_loaders:missing", "'gc_test_loaders' has no attribute 'missing'"),
        ("gc_test_loaders:Sources.Nope.get", "'gc_test_loaders.Sources' has no attribute 'Nope'"),
        ("gc_test_loaders:NOT_CALLABLE", "is a int, not a callable"),
    ],
)
def test_load_source_errors(loaders, spec, reason):
    with pytest.raises(ConfigError, match=reason) as info:
        load_source(spec)
    assert info.value.field == "loader"


# --- versioned, expiring rows --------------------------------------------------

from geecache.hlc import pack  # noqa: E402
from geecache.storage import Row, WriteResult  # noqa: E402
from geecache.storage.sqlite import PURGE_BATCH, PURGE_GRACE  # noqa: E402

T0 = 1_750_000_000.0  # Unix seconds: the injected clock's start


class Clock:
    """An injectable wall clock (Unix seconds) that a test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def v(n: int) -> int:
    """A version: the HLC timestamp of second *n* after T0."""
    return pack(int((T0 + n) * 1e6))


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    """A versioned store of each kind on an injected clock (``store.clock``)."""
    clock = Clock()
    if request.param == "memory":
        s = MemoryStorage(clock=clock, tombstone_ttl=60)
    else:
        s = SQLiteStorage(tmp_path / "db.sqlite", clock=clock, tombstone_ttl=60)
    s.clock = clock
    yield s
    s.close()


def test_an_older_write_is_refused_and_says_so(store):
    async def main():
        assert store.versioned
        assert await store.write("k", b"v2", version=v(2)) == WriteResult(True, False, v(2))
        # The lost update: v1's late write must not undo v2.
        late = await store.write("k", b"v1", version=v(1))
        assert late == WriteResult(False, True, v(2)) and late.stale and not late.late
        assert await store.set("k", b"v1", version=v(1)) is False
        # Equal is refused too: the same write delivered twice applies once.
        assert (await store.write("k", b"again", version=v(2))).applied is False
        assert await store.get("k") == b"v2"
        assert await store.read("k") == Row(b"v2", v(2), 0.0)
        assert await store.set("k", b"v3", version=v(3)) is True
        assert await store.get("k") == b"v3"

    run(main())


def test_a_delete_leaves_a_tombstone_that_refuses_older_sets(store):
    async def main():
        await store.set("k", b"v1", version=v(1))
        deleted = await store.write("k", None, version=v(5))
        assert deleted == WriteResult(True, True, v(5))
        assert await store.get("k") is None and await store.read("k") is None
        # A set older than the delete arrives late: the key stays deleted.
        assert (await store.write("k", b"zombie", version=v(3))).stale
        assert await store.get("k") is None
        # An older delete is refused too, and deleting a deleted key is not "existed".
        assert await store.delete("k", version=v(4)) is False
        assert (await store.write("k", None, version=v(6))) == WriteResult(True, False, v(6))
        # A newer set brings it back.
        assert await store.set("k", b"v7", version=v(7)) is True
        assert await store.get("k") == b"v7"

    run(main())


def test_tombstones_expire_after_their_horizon(store):
    async def main():
        await store.write("k", None, version=v(5))
        store.clock.t += 59
        assert not (await store.write("k", b"old", version=v(3))).applied
        store.clock.t += 2  # past tombstone_ttl=60: the tombstone no longer refuses
        assert (await store.write("k", b"old", version=v(3))).applied
        assert await store.get("k") == b"old"

    run(main())


def test_a_row_expires_and_an_expired_row_blocks_nothing(store):
    async def main():
        assert await store.set("k", b"short", version=v(10), expire_at=T0 + 1.5)
        assert await store.get("k") == b"short"
        assert await store.read("k") == Row(b"short", v(10), T0 + 1.5)
        store.clock.t = T0 + 1.5  # expire_at is the first instant it is gone
        assert await store.get("k") is None and await store.read("k") is None
        # Gone means gone for writes too: an older version may write again ...
        assert await store.set("k", b"back", version=v(9)) is True
        assert await store.read("k") == Row(b"back", v(9), 0.0)
        # ... and a delete of an expired value finds nothing (but applies).
        await store.set("gone", b"x", version=v(10), expire_at=T0 + 1)
        assert await store.write("gone", None, version=v(11)) == WriteResult(True, False, v(11))
        # A write without expire_at clears an expiry.
        await store.set("k", b"ttl", version=v(12), expire_at=T0 + 5)
        await store.set("k", b"forever", version=v(13))
        store.clock.t = T0 + 1000
        assert await store.get("k") == b"forever"

    run(main())


def test_a_write_at_or_after_its_deadline_is_refused_as_late(store):
    async def main():
        await store.set("k", b"v1", version=v(1))
        late = await store.write("k", b"v2", version=v(2), deadline=T0)
        assert late == WriteResult(False, True, v(1), late=True) and not late.stale
        assert await store.set("k", b"v2", version=v(2), deadline=T0 - 1) is False
        assert await store.get("k") == b"v1"
        assert await store.set("k", b"v2", version=v(2), deadline=T0 + 0.5) is True
        assert await store.get("k") == b"v2"

    run(main())


def test_unversioned_writes_always_apply_above_any_stored_version(store):
    async def main():
        future = v(10**6)  # a version from a clock far ahead
        await store.set("k", b"ahead", version=future)
        # A legacy caller: no version.  It applies (as set always did) ...
        assert await store.set("k", b"legacy") is True
        assert await store.get("k") == b"legacy"
        # ... under a version above the stored one, so the late write of
        # that older version cannot undo it.
        stored = (await store.read("k")).version
        assert stored > future
        assert not (await store.write("k", b"late", version=future)).applied
        # Unversioned deletes apply and leave a tombstone above too.
        assert await store.delete("k") is True
        assert not (await store.write("k", b"late", version=stored)).applied
        assert await store.get("k") is None
        # On a new key an unversioned write is stamped from the HLC.
        assert (await store.write("fresh", b"x")).version > 0

    run(main())


@pytest.mark.parametrize("kw", [{"version": -1}, {"version": 1 << 63}, {"version": 1.5},
                                {"version": True}, {"expire_at": float("nan")},
                                {"expire_at": -1}, {"deadline": float("inf")}])
def test_bad_versions_and_times_are_refused(store, kw):
    with pytest.raises(ValueError):
        run(store.write("k", b"x", **kw))


def test_expired_rows_and_tombstones_are_purged_on_write(store, tmp_path):
    async def main():
        for i in range(100):
            await store.write(f"d{i}", None, version=v(1))
            await store.set(f"e{i}", b"x", version=v(1), expire_at=T0 + 1)
        store.clock.t += 120 + PURGE_GRACE  # (SQLite keeps expired rows that long: clock skew)
        for i in range(10):  # each write drops up to PURGE_BATCH expired rows
            await store.set(f"live{i}", b"y", version=v(2))

    run(main())
    if isinstance(store, MemoryStorage):
        rows = len(store._rows)
    else:
        conn = sqlite3.connect(tmp_path / "db.sqlite")
        rows = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT key FROM kv WHERE expire_at > 0 AND expire_at <= 1 LIMIT 32"))
        conn.close()
        assert "kv__expire_at" in plan  # the purge does not scan the table
    assert rows == 10


def test_a_host_whose_clock_is_ahead_purges_no_row_live_by_its_writers_clock(tmp_path):
    """Hosts sharing one database disagree on the time: one an hour ahead must not delete the
    rows and tombstones another wrote, which are still live by the writer's clock."""
    path = tmp_path / "db.sqlite"
    writer = SQLiteStorage(path, clock=Clock(T0))
    ahead = SQLiteStorage(path, clock=Clock(T0 + 3600))

    async def main():
        await writer.set("lives-30-min", b"x", version=v(1), expire_at=T0 + 1800)
        await writer.write("deleted", None, version=v(5))  # a tombstone: refuses older writes
        for i in range(PURGE_BATCH + 1):
            await ahead.set(f"other{i}", b"y", version=v(2))  # each write purges a batch
        assert await writer.get("lives-30-min") == b"x"
        assert not (await writer.write("deleted", b"late", version=v(4))).applied

    try:
        run(main())
    finally:
        writer.close()
        ahead.close()


@pytest.mark.procs
def test_sqlite_waits_for_the_lock_no_longer_than_the_deadline(tmp_path):
    """Another process holds SQLite's write lock: a write with a deadline is
    refused as late once the deadline passes, instead of waiting out the
    5 s busy timeout and landing after it."""
    path = tmp_path / "db.sqlite"
    s = SQLiteStorage(path)
    run(s.set("k", b"v1", version=v(1)))
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            os.write(ready_w, b"x")
            time.sleep(30)  # killed by the parent long before
        finally:
            os._exit(0)
    try:
        assert select.select([ready_r], [], [], 20)[0], "the lock holder did not start"
        result = run(s.write("k", b"v2", version=v(2), deadline=time.time() + 0.3))
        assert result.late and not result.applied
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert run(s.get("k")) == b"v1"
    assert run(s.set("k", b"v2", version=v(2))) is True
    s.close()


# The table that SQLiteStorage created before versions existed (commit 45c2327).
OLD_SCHEMA = "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID"


def test_sqlite_migrates_a_table_from_before_versions_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(OLD_SCHEMA)
    conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('Tom', x'363330'), ('Sam', x'353637')")
    conn.close()

    async def main():
        s = SQLiteStorage(path)
        # Old rows read as before: unversioned, never expiring.
        assert await s.get("Tom") == b"630"
        assert await s.read("Sam") == Row(b"567", 0, 0.0)
        # Any versioned write beats an unversioned old row; then versions rule.
        assert await s.set("Tom", b"new", version=v(5)) is True
        assert await s.set("Tom", b"older", version=v(4)) is False
        assert await s.delete("Sam", version=v(1)) is True
        assert await s.get("Sam") is None
        s.close()
        # Opening again (a restart, or another process) does not migrate twice.
        again = SQLiteStorage(path)
        assert await again.get("Tom") == b"new"
        again.close()

    run(main())
    conn = sqlite3.connect(path)
    cols = [row[1] for row in conn.execute("PRAGMA table_info(kv)")]
    conn.close()
    assert cols == ["key", "value", "version", "expire_at", "deleted"]


@pytest.mark.procs
def test_sqlite_migration_by_several_processes_at_once(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(OLD_SCHEMA)
    conn.execute("INSERT INTO kv VALUES ('k', x'31')")
    conn.close()
    go_r, go_w = os.pipe()
    pids = set()
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if select.select([go_r], [], [], 20)[0]:
                    s = SQLiteStorage(path)
                    code = 0 if asyncio.run(s.set(f"c{n}", b"x", version=v(n + 1))) else 1
            finally:
                os._exit(code)
        pids.add(pid)
    os.write(go_w, b"x" * 4)  # all four open the old table together
    try:
        status = reap(pids, timeout=60)
    finally:
        os.close(go_r)
        os.close(go_w)
    assert [os.waitstatus_to_exitcode(st) for st in status.values()] == [0] * 4
    s = SQLiteStorage(path)
    assert run(s.get("k")) == b"1"
    assert [run(s.get(f"c{n}")) for n in range(4)] == [b"x"] * 4
    s.close()


@pytest.mark.procs
def test_versioned_writers_in_several_processes_keep_the_newest(tmp_path):
    """Processes write and delete the same keys with interleaved versions in
    shuffled order; each key ends with its highest-versioned write, whatever
    order they reached SQLite in, and every refusal was of an older one."""
    import random

    path = tmp_path / "db.sqlite"
    SQLiteStorage(path).close()
    writers, keys, rounds = 4, 8, 30
    # Operation (writer, round, key): version unique per op; one in five a delete.
    ops = {
        w: [(pack(int(T0 * 1e6) + (r * writers + w) * 10), f"k{k}", None if (r + k + w) % 5 == 0
             else f"{w}:{r}".encode()) for r in range(rounds) for k in range(keys)]
        for w in range(writers)
    }
    out_r, out_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = set()
    for w in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                mine = list(ops[w])
                random.Random(w).shuffle(mine)
                s = SQLiteStorage(path)

                async def child():
                    refused_wrongly = 0
                    for version, key, value in mine:
                        result = await s.write(key, value, version=version)
                        if not result.applied and result.version <= version:
                            refused_wrongly += 1
                    return refused_wrongly

                select.select([go_r], [], [], 20)
                bad = asyncio.run(child())
                os.write(out_w, b"%d\n" % bad)
                code = 0
            finally:
                os._exit(code)
        pids.add(pid)
    os.write(go_w, b"x" * writers)
    try:
        status = reap(pids, timeout=120)
    except BaseException:
        for fd in (out_r, out_w, go_r, go_w):
            os.close(fd)
        raise
    got = b""
    while select.select([out_r], [], [], 0)[0]:
        chunk = os.read(out_r, 4096)
        if not chunk:
            break
        got += chunk
    for fd in (out_r, out_w, go_r, go_w):
        os.close(fd)
    assert [os.waitstatus_to_exitcode(st) for st in status.values()] == [0] * writers
    assert got.split() == [b"0"] * writers
    s = SQLiteStorage(path)
    for k in range(keys):
        newest = max((op for w in ops for op in ops[w] if op[1] == f"k{k}"), key=lambda op: op[0])
        assert run(s.get(f"k{k}")) == newest[2], f"k{k}"
        if newest[2] is not None:
            assert run(s.read(f"k{k}")).version == newest[0]
    s.close()


def test_a_legacy_storage_subclass_still_works():
    class Legacy(Storage):
        def __init__(self):
            self.data = {}

        async def get(self, key):
            return self.data.get(key)

        async def set(self, key, value):
            self.data[key] = value

        async def delete(self, key):
            return self.data.pop(key, None) is not None

    class Nothing(Storage):
        pass

    async def main():
        s = Legacy()
        assert not s.versioned
        assert await s.write("k", b"v", version=5) == WriteResult(True, False, 0)
        assert await s.read("k") == Row(b"v", 0, 0.0)
        assert await s.write("k", None) == WriteResult(True, True, 0)
        assert (await s.write("k", b"v", deadline=1.0)).late
        with pytest.raises(NotImplementedError):
            await Nothing().write("k", b"v")

    run(main())


def test_row_reader_keeps_a_subclass_that_wraps_get():
    from geecache.storage.base import row_reader

    class Counting(MemoryStorage):
        def __init__(self, data):
            super().__init__(data)
            self.calls = 0

        async def get(self, key):
            self.calls += 1
            return await super().get(key)

    async def main():
        plain = MemoryStorage({})
        later = time.time() + 3600
        await plain.set("k", b"v", version=v(1), expire_at=later)
        assert await row_reader(plain)("k") == Row(b"v", v(1), later)  # its own read
        counting = Counting({"k": b"v"})
        assert await row_reader(counting)("k") == Row(b"v", 0, 0.0)  # through its get
        assert counting.calls == 1
        assert await row_reader(FunctionSource(lambda k: b"f"))("k") == Row(b"f", 0, 0.0)

    run(main())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_stored_version_past_the_clocks_ceiling_refuses_no_write(tmp_path, kind):
    from geecache.hlc import HLC, LIMIT

    clock = HLC(max_drift=60.0)
    store = MemoryStorage(versions=clock) if kind == "memory" else SQLiteStorage(tmp_path / "c.db", versions=clock)

    async def go():
        assert (await store.write("k", b"poisoned", version=LIMIT - 2)).applied  # as stored before the check
        ours = clock.now()
        result = await store.write("k", b"new", version=ours)
        assert result.applied and result.version == ours
        assert (await store.read("k")).value == b"new"
        assert not (await store.write("k", b"older", version=ours - 1)).applied  # ordering as ever
        assert (await store.write("k", b"unversioned")).applied  # and no overflow above the poison
        assert (await store.read("k")).version < clock.ceiling()

    try:
        asyncio.run(go())
    finally:
        store.close()
