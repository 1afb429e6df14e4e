"""SQLiteStorage: the embedded default source of truth (stdlib sqlite3).

Several processes (the workers of a host, even several hosts on one disk)
use one database file at once: WAL mode lets readers run beside the one
writer, and busy_timeout makes a writer wait its turn instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import sqlite3
import threading
import time
from typing import Callable

from .. import hlc
from ..errors import ConfigError, LoadError, SourceGoneError
from ..limits import as_bytes
from .base import Row, Storage, WriteResult, check_write

#: How long a delete's tombstone refuses older writes.  A late write is one
#: an owner was asked to apply before its deadline (the peer timeout, a few
#: seconds) and reaches the source later, which the deadline check under the
#: write lock already refuses; the tombstone is the second line, and ten
#: minutes is far past any deadline plus clock skew between hosts.  Keeping
#: tombstones forever would grow the file by every key ever deleted.
DEFAULT_TOMBSTONE_TTL = 600.0
#: At most this many expired rows are dropped per write (amortised O(1)).
PURGE_BATCH = 32
#: A row is purged only this long after it expired.  Its expiry is by the
#: clock of the host that wrote it (invariant 10), and hosts sharing one
#: database may disagree by minutes, even an hour: a host whose clock is
#: ahead must not delete rows, or tombstones, that are still live by their
#: writer's.  Reads already skip expired rows; this only delays reclaiming.
PURGE_GRACE = 2 * 3600.0
#: Columns added to a table made before versions existed; their defaults
#: make an old row "unversioned, never expires, live".
_ADDED_COLUMNS = (
    ("version", "INTEGER NOT NULL DEFAULT 0"),
    ("expire_at", "REAL NOT NULL DEFAULT 0"),
    ("deleted", "INTEGER NOT NULL DEFAULT 0"),
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

log = logging.getLogger(__name__)

# Connections opened by a parent process and inherited through fork.  SQLite
# must not be used across fork, and closing one in the child is worse: the
# child holds none of the parent's POSIX locks, so its close can believe it is
# the last connection and checkpoint and delete the -wal/-shm files under the
# parent.  So the child keeps them referenced, unused and unclosed, forever.
_orphans: list[sqlite3.Connection] = []


class SQLiteStorage(Storage):
    """A ``key TEXT PRIMARY KEY`` table of versioned, expiring rows in one SQLite file.

    Columns: ``value BLOB``, ``version INTEGER`` (the newest write's HLC
    version), ``expire_at REAL`` (Unix seconds, 0 = never) and ``deleted``
    (a tombstone).  A table made before versions existed (``key, value``
    only) gains the other three in place (``ALTER TABLE ADD COLUMN``, with
    defaults that mean "unversioned, never expires, live"), so existing
    databases keep working; a tool that writes ``INSERT INTO t (key, value)``
    still can.

    A write is one transaction: ``BEGIN IMMEDIATE`` waits for SQLite's write
    lock (bounded by the write's deadline), the deadline is checked *after*
    that wait (a busy wait of seconds is one of the pauses that used to let a
    late write land), and the version check is one conditional upsert
    (``INSERT ... ON CONFLICT(key) DO UPDATE ... WHERE excluded.version >
    version``), so no other writer, process or host, can slip in between
    check and write.  Tombstones refuse older writes for *tombstone_ttl*
    seconds, then expire like any row; each write drops a few expired rows
    (through a partial index on ``expire_at``), so deleted and expired keys
    do not pile up.

    Reads run on the event loop: a one-row primary-key SELECT measured 9 us,
    less than the hop to a thread (measured 84 us) would cost.  Writes go to a
    thread: a commit fsyncs the WAL (measured 117 us on an SSD, milliseconds
    on slower disks) and may wait up to ``busy_timeout`` for another
    process's write, which must not stall every request on the worker.
    *executor* is that thread pool (None: asyncio's default); a worker gives
    writes a bounded pool of their own (``write_threads``), so slow loaders in
    another pool never delay a write.  *clock* (Unix seconds) is injectable
    for tests.
    """

    versioned = True

    def __init__(
        self,
        path: str | os.PathLike,
        table: str = "kv",
        busy_timeout: float = 5.0,
        executor=None,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        versions: hlc.HLC | None = None,
    ) -> None:
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ConfigError("table", f"{table!r} is not an SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
        if not tombstone_ttl > 0:
            raise ConfigError("tombstone_ttl", f"must be > 0 seconds, got {tombstone_ttl!r}")
        self._path = os.fspath(path)
        self._table = table
        self._busy_timeout = busy_timeout
        self._executor = executor
        self._clock = clock
        self._tombstone_ttl = float(tombstone_ttl)
        self._versions = versions or hlc.clock
        t = f'"{table}"'
        live = "deleted = 0 AND (expire_at = 0 OR expire_at > ?)"
        self._get_sql = f"SELECT value FROM {t} WHERE key = ? AND {live}"
        self._read_sql = f"SELECT value, version, expire_at FROM {t} WHERE key = ? AND {live}"
        self._old_sql = f"SELECT deleted, version, expire_at FROM {t} WHERE key = ?"
        # The whole check-and-write: an unversioned write (:unversioned) always
        # applies above the stored version; a versioned one only above it, or
        # over an expired row, or over a version past the clock's ceiling (from a
        # clock or a forger beyond max_clock_drift): neither refuses anything.
        self._upsert_sql = (
            f"INSERT INTO {t} (key, value, version, expire_at, deleted) "
            "VALUES (:key, :value, :version, :expire_at, :deleted) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, deleted = excluded.deleted, "
            f"expire_at = excluded.expire_at, version = CASE WHEN :unversioned AND {t}.version <= :ceiling "
            f"THEN max({t}.version + 1, excluded.version) ELSE excluded.version END "
            f"WHERE :unversioned OR excluded.version > {t}.version "
            f"OR ({t}.expire_at > 0 AND {t}.expire_at <= :now) OR {t}.version > :ceiling "
            "RETURNING version"
        )
        self._purge_sql = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} "
            f"WHERE expire_at > 0 AND expire_at <= ? LIMIT {PURGE_BATCH})"
        )
        # One connection per (process, thread): the loop thread reads, executor
        # threads write.  The thread-local is the guard; the pid check makes a
        # forked child open its own.
        self._local = threading.local()
        # Every connection this process opened, so close() reaches the
        # executor threads' ones too.  Guarded by _lock.
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._owner_pid = os.getpid()
        self._closed = False
        # Open once now so a bad path or a read-only file fails at startup
        # with a named error, create or migrate the table, then close: nothing
        # is held across a later fork.
        try:
            conn = self._open()
            try:
                self._ensure_schema(conn)
            finally:
                conn.close()
            # The file every write must still reach: a write to a file unlinked (or replaced)
            # under the running host would be acknowledged and lost at the next start.
            self._file = _identity(self._path)
        except sqlite3.Error as exc:
            raise ConfigError("storage", f"cannot open SQLite database {self._path!r}: {exc}") from exc
        except OSError as exc:
            raise ConfigError("storage", f"cannot stat SQLite database {self._path!r}: {exc}") from exc
        self._gone_logged = False

    def _open(self) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): every statement is its own
        # transaction unless we BEGIN one, so no lock outlives a call.
        # check_same_thread=False only so close() may close another thread's
        # connection; each is used by the one thread whose local holds it.
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        """Create the table, or add the columns a pre-version table lacks.

        Under the write lock, so several processes starting at once on one
        old database migrate it once (the loser of the race finds the
        columns there).
        """
        t = f'"{self._table}"'
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
                + ", ".join(f"{name} {decl}" for name, decl in _ADDED_COLUMNS)
                + ") WITHOUT ROWID"
            )
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    conn.execute(f"ALTER TABLE {t} ADD COLUMN {name} {decl}")
            conn.execute(
                f'CREATE INDEX IF NOT EXISTS "{self._table}__expire_at" ON {t} (expire_at) '
                "WHERE expire_at > 0"
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise LoadError(f"{self!r} is closed")
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            with self._lock:
                if self._owner_pid != pid:  # first use after a fork
                    _orphans.extend(self._conns)
                    self._conns = []
                    self._owner_pid = pid
            local.pid = pid
            local.conn = None
        if local.conn is None:
            local.conn = self._open()
            with self._lock:
                self._conns.append(local.conn)
        return local.conn

    async def get(self, key: str) -> bytes | None:
        try:
            row = self._conn().execute(self._get_sql, (key, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise LoadError(f"sqlite get {key!r} from {self._path}: {exc}") from exc
        return None if row is None else _bytes(row[0])

    async def read(self, key: str) -> Row | None:
        try:
            row = self._conn().execute(self._read_sql, (key, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise LoadError(f"sqlite read {key!r} from {self._path}: {exc}") from exc
        return None if row is None else Row(_bytes(row[0]), row[1], row[2])

    async def write(
        self,
        key: str,
        value: bytes | None,
        *,
        version: int = 0,
        expire_at: float = 0.0,
        deadline: float = 0.0,
    ) -> WriteResult:
        check_write(version, expire_at, deadline)
        if value is not None:
            value = as_bytes(value)
        # An unversioned write's version is taken here, on the loop thread:
        # the HLC is not thread-safe.  The statement lifts it above the stored one.
        unversioned = not version
        if unversioned:
            version = self._versions.now()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._write_row, key, value, version, unversioned, float(expire_at),
            float(deadline), self._versions.ceiling())

    def _write_row(self, key: str, value: bytes | None, version: int, unversioned: bool,
                   expire_at: float, deadline: float, ceiling: int) -> WriteResult:
        self._check_file()  # before a new connection could create an empty file at the path
        try:
            conn = self._conn()
            if not self._begin(conn, deadline):
                return self._late(conn, key)
            try:
                now = self._clock()
                if deadline and now >= deadline:  # after the wait for the lock, not before
                    conn.execute("ROLLBACK")
                    return self._late(conn, key)
                old = conn.execute(self._old_sql, (key,)).fetchone()
                existed = old is not None and not old[0] and not (old[2] and old[2] <= now)
                deleted = value is None
                if deleted:
                    value, expire_at = b"", now + self._tombstone_ttl
                params = {"key": key, "value": value, "version": version, "expire_at": expire_at,
                          "deleted": int(deleted), "unversioned": int(unversioned), "now": now,
                          "ceiling": ceiling}
                stored = conn.execute(self._upsert_sql, params).fetchall()
                conn.execute(self._purge_sql, (now - PURGE_GRACE,))
                self._check_file()  # under the write lock, just before the commit that acks
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LoadError(f"sqlite write {key!r} to {self._path}: {exc}") from exc
        if stored:
            return WriteResult(True, existed, stored[0][0])
        return WriteResult(False, existed, old[1] if old else 0)

    def _begin(self, conn: sqlite3.Connection, deadline: float) -> bool:
        """Take the write lock; False when the deadline passed waiting for it."""
        if not deadline:
            conn.execute("BEGIN IMMEDIATE")
            return True
        budget = deadline - self._clock()
        if budget <= 0:
            return False
        # Wait for another process's write no longer than the deadline allows.
        # Rounded up (and 1 ms more) so that giving up means the deadline has passed.
        wait_ms = min(math.ceil(budget * 1000) + 1, int(self._busy_timeout * 1000))
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            if self._clock() >= deadline:
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return True

    def _check_file(self) -> None:
        """Raise SourceGoneError unless the path still names the file this storage opened."""
        try:
            now = _identity(self._path)
        except OSError:
            now = None
        if now == self._file:
            return
        if not self._gone_logged:  # once per process: every refused write also answers 503
            self._gone_logged = True
            log.error("SQLite database %s was %s while this host runs: refusing every write to table %s "
                      "(it would be lost); restore the file and restart the host", self._path,
                      "deleted" if now is None else "replaced", self._table)
        raise SourceGoneError("the source's database file was deleted or replaced while the host runs: "
                              "writes are refused until it is restored and the host restarted")

    def _late(self, conn: sqlite3.Connection, key: str) -> WriteResult:
        # Not under the lock: what is stored now, for the caller's information.
        now = self._clock()
        old = conn.execute(self._old_sql, (key,)).fetchone()
        existed = old is not None and not old[0] and not (old[2] and old[2] <= now)
        return WriteResult(False, existed, old[1] if old else 0, late=True)

    def close(self) -> None:
        """Close the connections this process opened; later calls raise LoadError."""
        self._closed = True
        with self._lock:
            conns = self._conns if self._owner_pid == os.getpid() else []
            self._conns = []
        for conn in conns:
            conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r}, table={self._table!r})"


def _identity(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of the file at *path*: which file it is, whatever its name."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _bytes(value) -> bytes:
    # A row written by another tool may hold TEXT rather than BLOB.
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
