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
        # A row another tool wrote as TEXT still reads as bytes.
        conn.execute("INSERT INTO users VALUES ('t', 'plain text')")
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
