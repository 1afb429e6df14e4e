"""SQLiteStorage: the embedded default source of truth (stdlib sqlite3).

Several processes (the workers of a host, even several hosts on one disk)
use one database file at once: WAL mode lets readers run beside the one
writer.  Writes are group-committed: those that arrive while a commit runs
share the next transaction (``_Committer``), and the processes of a host take
the write lock in turn through an ``flock`` on a sidecar file
(``<database>-writer``), so they queue in the kernel instead of sleeping in
SQLite's busy handler; busy_timeout remains for writers that do not take the
turn (another host on the same disk, a tool).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import math
import os
import re
import sqlite3
import threading
import time
from typing import Callable

from .. import hlc
from ..defaults import DEFAULT_TOMBSTONE_TTL, PURGE_BATCH
from ..errors import ConfigError, LoadError, SourceBusyError, SourceGoneError
from ..limits import as_bytes
from .base import Row, Storage, WriteOp, WriteResult, check_write

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

#: A transaction holds at most this many rows and value bytes; the rest of the
#: queue waits for the next one.  Bounded so one commit (and the answers held
#: behind it) stays a few milliseconds; 100-row commits already reach ~40x the
#: one-row rate of SQLite on an SSD, 256 leaves room for a slower disk.
MAX_BATCH_ROWS = 256
MAX_BATCH_BYTES = 4 << 20
#: Rows of one process waiting for a commit past which a write is refused at
#: once with SourceBusyError (503): a source that cannot keep up says so
#: instead of letting every answer's latency grow without bound.
MAX_QUEUED_ROWS = 16384
#: How long past its give-up time a write still waits for the commit that may
#: hold it (one started just before): a commit takes milliseconds.
COMMIT_GRACE = 1.0
#: How often a running committer looks for writes past that bound.
WATCH_PERIOD = 0.25
#: How far (seconds) under busy_timeout a batch's wait for SQLite's lock may be and still
#: keep the connection's default busy_timeout (see ``_begin``).
BUSY_SLACK = 0.1
#: ``synchronous`` values: FULL fsyncs the WAL at every commit (an ack survives
#: a power loss); NORMAL fsyncs only at checkpoints (an ack survives a process
#: crash, not a power loss).
SYNCHRONOUS = ("full", "normal")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

log = logging.getLogger(__name__)

# Connections opened by a parent process and inherited through fork.  SQLite
# must not be used across fork, and closing one in the child is worse: the
# child holds none of the parent's POSIX locks, so its close can believe it is
# the last connection and checkpoint and delete the -wal/-shm files under the
# parent.  So the child keeps them referenced, unused and unclosed, forever.
_orphans: list[sqlite3.Connection] = []
# Forks this process has seen (one cell, bumped in each child): a committer made before a fork
# is not the child's.  And this process's pid, kept at fork: cheaper per write and per commit
# than os.getpid(), a system call.
_forks = [0]
_pid = [os.getpid()]


def _forked() -> None:
    _forks[0] += 1
    _pid[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


class SQLiteStorage(Storage):
    """A ``key TEXT PRIMARY KEY`` table of versioned, expiring rows in one SQLite file.

    Columns: ``value BLOB``, ``version INTEGER`` (the newest write's HLC
    version), ``expire_at REAL`` (Unix seconds, 0 = never) and ``deleted``
    (a tombstone).  A table made before versions existed (``key, value``
    only) gains the other three in place (``ALTER TABLE ADD COLUMN``, with
    defaults that mean "unversioned, never expires, live"), so existing
    databases keep working; a tool that writes ``INSERT INTO t (key, value)``
    still can.

    Writes are group-committed.  A process's writes queue in its
    ``_Committer``; one commit at a time runs in a thread, and every write
    that arrived meanwhile goes into the next transaction (up to
    MAX_BATCH_ROWS rows and MAX_BATCH_BYTES bytes).  Each write is answered
    only once the transaction holding it has committed.  A transaction first
    takes this host's turn (an ``flock`` of ``<database>-writer``: the kernel
    queues the processes and wakes the next one at release, and a process
    that dies drops it), then ``BEGIN IMMEDIATE``, whose busy wait is bounded
    by the latest deadline in the batch.  Inside it each row is judged alone,
    as a one-row write was: its deadline is checked *after* the wait for the
    lock (a wait of seconds is one of the pauses that used to let a late
    write land), and its version check is one conditional upsert (``INSERT
    ... ON CONFLICT(key) DO UPDATE ... WHERE excluded.version > version``), so
    no other writer, process or host, can slip in between check and write.
    A row refused for its version or deadline is answered so and the others
    commit.  Tombstones refuse older writes for *tombstone_ttl* seconds, then
    expire like any row; each transaction drops a few expired rows (through a
    partial index on ``expire_at``), so deleted and expired keys do not pile
    up.  A write that waits for its commit longer than *busy_timeout* (the
    turn held by a stopped process, say), or that finds MAX_QUEUED_ROWS
    already waiting, gets SourceBusyError; past that bound the committer will
    not apply it.  *synchronous* is SQLite's ``PRAGMA synchronous``: ``full``
    (every commit fsyncs the WAL) or ``normal`` (survives a process crash, not
    a power loss).

    Reads run on the event loop: a one-row primary-key SELECT measured 9 us,
    less than the hop to a thread (measured 84 us) would cost.  Commits go to
    a thread: a commit fsyncs the WAL (measured 117 us on an SSD,
    milliseconds on slower disks), which must not stall every request on the
    worker.  *executor* is that thread pool (None: asyncio's default); a
    worker gives writes a bounded pool of their own (``write_threads``), so
    slow loaders in another pool never delay a write.  *clock* (Unix seconds)
    is injectable for tests.
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
        synchronous: str = "full",
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ConfigError("synchronous", f"must be one of {', '.join(SYNCHRONOUS)}")
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
        self._synchronous = synchronous
        # This process's write queue and host turn; made on first write, again after a fork.
        self._committer: _Committer | None = None
        self._stats = None
        t = f'"{table}"'
        live = "deleted = 0 AND (expire_at = 0 OR expire_at > ?)"
        self._get_sql = f"SELECT value FROM {t} WHERE key = ? AND {live}"
        self._read_sql = f"SELECT value, version, expire_at FROM {t} WHERE key = ? AND {live}"
        self._old_sql = f"SELECT deleted, version, expire_at FROM {t} WHERE key = ?"
        # The write of a batch: each key's final row, in one multi-row statement (one
        # step, so the committing thread gives up the GIL once, not once per row).  The
        # version was judged in Python against the stored row under the write lock
        # (see _apply); the WHERE says the same again, so a row is never put below a
        # newer stored version: above it, or over an expired row, or over a version past
        # the clock's ceiling (from a clock or a forger beyond max_clock_drift): neither
        # refuses anything.
        self._upsert_head = f"INSERT INTO {t} (key, value, version, expire_at, deleted) VALUES "
        self._upsert_tail = (
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, deleted = excluded.deleted, "
            "expire_at = excluded.expire_at, version = excluded.version "
            f"WHERE excluded.version > {t}.version OR ({t}.expire_at > 0 AND {t}.expire_at <= ?) "
            f"OR {t}.version > ?"
        )
        # The stored state of a batch's keys, read once per transaction (see _apply).
        self._olds_sql = f"SELECT key, deleted, version, expire_at FROM {t} WHERE key IN "
        self._purge_sql = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} "
            "WHERE expire_at > 0 AND expire_at <= ? LIMIT ?)"
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
        # The host's write turn (see _turn): one fd per process; the lock keeps a
        # process's own threads apart (flock does not, on one open file).
        self._turn_lock = threading.Lock()
        self._turn_fd = -1
        self._turn_pid = 0
        # Open once now so a bad path or a read-only file fails at startup
        # with a named error, create or migrate the table, then close: nothing
        # is held across a later fork.
        try:
            self._prepare_file()
            # The file every write must still reach: a write to a file unlinked (or replaced)
            # under the running host would be acknowledged and lost at the next start.
            self._file = _identity(self._path)
        except sqlite3.Error as exc:
            raise ConfigError("storage", f"cannot open SQLite database {self._path!r}: {exc}") from exc
        except OSError as exc:
            raise ConfigError("storage", f"cannot stat SQLite database {self._path!r}: {exc}") from exc
        self._gone_logged = False

    def _prepare_file(self) -> None:
        """Open the file once, set WAL mode, create or migrate the table; waits out a busy file.

        Hosts that share one database and start together meet here.  SQLite answers "database
        is locked" at once, without its busy handler, when a connection changes a new file's
        journal mode while another holds its write lock (waiting could deadlock), so the whole
        step is retried for up to ``busy_timeout``, the bound every other wait for the file has.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.005
        while True:
            try:
                conn = self._open()
                try:
                    self._ensure_schema(conn)
                finally:
                    conn.close()
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

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
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
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
        pid = _pid[0]
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

    def attach_stats(self, sink) -> None:
        """Count ``source_commits`` (transactions) and ``source_writes`` (rows in them) in *sink*."""
        self._stats = sink

    async def write(
        self,
        key: str,
        value: bytes | None,
        *,
        version: int = 0,
        expire_at: float = 0.0,
        deadline: float = 0.0,
    ) -> WriteResult:
        result = (await self.write_many([WriteOp(key, value, version, expire_at, deadline)]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def write_many(self, ops: list[WriteOp]) -> list[WriteResult | Exception]:
        """Every op queued at once, so they share a transaction (see the class doc)."""
        return await self._queue().submit([self._pending(*op) for op in ops])

    def queue_write(self, key: str, value: bytes | None, version: int,
                    done: Callable[["_Pending"], None]) -> "_Pending":
        """One write of *version* (an HLC timestamp > 0; no expiry, no deadline; *value* None: a
        delete) queued for the next commit, without a coroutine or a Future: *done(row)* is
        called once, on the loop thread, when the transaction holding it has committed
        (``row.answer``: its WriteResult) or the write failed (``row.answer``: the exception).
        The data plane's PUT and DELETE use it (no Task, no Future per write: measured, a
        Future, its callback's handle and the turn it waited for cost the loop ~3 us a PUT);
        SourceBusyError at once, and *done* never called, when MAX_QUEUED_ROWS already wait."""
        if value is not None and type(value) is not bytes:  # (the data plane's already are)
            value = as_bytes(value)
        row = _Pending(key, value, version, False, 0.0, 0.0, self._versions.ceiling())
        row.callback = done
        self._queue().enqueue((row,))
        return row

    def _pending(self, key: str, value, version: int, expire_at: float, deadline: float) -> "_Pending":
        check_write(version, expire_at, deadline)
        if value is not None:
            value = as_bytes(value)
        # An unversioned write's version is taken here, on the loop thread:
        # the HLC is not thread-safe.  The statement lifts it above the stored one.
        unversioned = not version
        if unversioned:
            version = self._versions.now()
        return _Pending(key, value, version, unversioned, float(expire_at), float(deadline),
                        self._versions.ceiling())

    def _queue(self) -> "_Committer":
        committer = self._committer
        if committer is None or not committer.usable():
            committer = self._committer = _Committer(self)
        return committer

    def _commit(self, batch: list["_Pending"], began: list | None = None, top_up=None
                ) -> tuple[list[WriteResult | Exception], int]:
        """In a thread: *batch* in one transaction under the host's turn; (answers, commits made).

        *top_up(batch)*, called once the turn is held, adds to *batch* the rows queued while
        this thread waited for it, so they share this commit instead of waiting for the next.

        *began* (one cell) tells the loop how far the commit got: None until the lock is
        held, inf while the judging clock is read, then that clock (Unix seconds): a row
        whose limit is not above it was refused, so the committer can tell a write given up
        on whether it may still be applied (see ``_Committer._watch``)."""
        if self._closed:
            raise LoadError(f"{self!r} is closed")
        self._check_file()  # before a new connection could create an empty file at the path
        with self._turn():
            if top_up is not None:
                top_up(batch)
            conn = self._conn()
            try:
                return self._transaction(conn, batch, began)
            except sqlite3.Error as exc:
                error = LoadError(f"sqlite write to {self._path}: {exc}")
                error.__cause__ = exc
                return [error] * len(batch), 0

    def _transaction(self, conn: sqlite3.Connection, batch: list["_Pending"], began: list | None = None):
        if not self._begin(conn, max(row.limit for row in batch)):
            return [self._refused(conn, row) for row in batch], 0
        answers: list[WriteResult | Exception] = []
        try:
            if began is not None:
                began[0] = math.inf  # (set before the clock is read: see _commit)
            now = self._clock()  # after the wait for the lock, not before
            if began is not None:
                began[0] = now
            try:
                answers = self._apply(conn, batch, now)
            except sqlite3.Error:
                if len(batch) == 1:
                    raise
                # One row the database refuses (not the lock: that failed BEGIN) must
                # not fail the others: each in a transaction of its own.
                conn.execute("ROLLBACK")
                answers, commits = [], 0
                for row in batch:
                    try:
                        one, n = self._transaction(conn, [row])
                    except sqlite3.Error as exc:
                        one, n = [LoadError(f"sqlite write {row.key!r} to {self._path}: {exc}")], 0
                    answers += one
                    commits += n
                return answers, commits
            # Each row may leave one row to purge later (a tombstone, an expiry): dropping
            # more than that per transaction keeps the table from growing under group commit.
            conn.execute(self._purge_sql, (now - PURGE_GRACE, PURGE_BATCH + 2 * len(batch)))
            self._check_file()  # under the write lock, just before the commit that acks
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return answers, 1

    def _apply(self, conn: sqlite3.Connection, batch: list["_Pending"], now: float
               ) -> list[WriteResult | Exception]:
        """Judge and write every row of *batch*, in order, inside the open transaction.

        The keys' stored rows are read in one SELECT and each row is judged
        against them in Python (updated as the batch goes, so a key written
        twice is judged the second time against the first); each key's final
        row goes to SQLite in one multi-row conditional upsert, whose WHERE says
        the same as the judgement (under the write lock nothing else can change
        a row in between).  Measured: 2 statements per row made a 64-row commit
        take 2.8 ms, against 1.4 ms for 100 rows of raw upserts; one SELECT and
        one statement, 1.1 ms.
        """
        state: dict[str, tuple[int, int, float]] = {}  # key -> (deleted, version, expire_at)
        keys = list(dict.fromkeys(row.key for row in batch))
        for i in range(0, len(keys), 500):  # under SQLite's bound on variables
            chunk = keys[i:i + 500]
            sql = self._olds_sql + "(" + ",".join("?" * len(chunk)) + ")"
            for key, deleted, version, expire_at in conn.execute(sql, chunk):
                state[key] = (deleted, version, expire_at)
        answers: list[WriteResult | Exception] = []
        final: dict[str, tuple] = {}  # key -> the row it ends the batch with
        for row in batch:
            old = state.get(row.key)
            expired = old is not None and bool(old[2]) and old[2] <= now
            existed = old is not None and not old[0] and not expired
            if now >= row.limit:
                answers.append(self._refused_with(row, old, existed))
                continue
            # A stored version past the clock's ceiling (a clock or a forger beyond
            # max_clock_drift) refuses nothing, and an unversioned write is not lifted above it.
            stored = old[1] if old is not None else 0
            sane = old is not None and stored <= row.ceiling
            if sane and not row.unversioned and row.version <= stored and not expired:
                answers.append(WriteResult(False, existed, stored))
                continue
            version = max(stored + 1, row.version) if sane and row.unversioned else row.version
            deleted = row.value is None
            value, expire_at = (b"", now + self._tombstone_ttl) if deleted else (row.value, row.expire_at)
            final[row.key] = (row.key, value, version, expire_at, int(deleted))
            state[row.key] = (int(deleted), version, expire_at)
            answers.append(WriteResult(True, existed, version))
        rows = list(final.values())
        # The most permissive WHERE the batch's rows allow (the lowest ceiling): it lets
        # through every row judged applied above, and the count below checks it did.
        ceiling = min(row.ceiling for row in batch)
        changes = conn.total_changes
        for i in range(0, len(rows), 1000):  # under SQLite's bound on variables (5 a row)
            upserts = rows[i:i + 1000]
            sql = self._upsert_head + ",".join(["(?,?,?,?,?)"] * len(upserts)) + self._upsert_tail
            conn.execute(sql, [v for row in upserts for v in row] + [now, ceiling])
        if conn.total_changes - changes < len(rows):  # (more: the table has triggers)
            # The statement's WHERE refused a row judged applied: something wrote between
            # the SELECT and here after all.  Answer nothing from this judgement: the rows
            # are judged again one per transaction.
            raise sqlite3.IntegrityError("a row changed under the batch's write lock")
        return answers

    def _begin(self, conn: sqlite3.Connection, limit: float) -> bool:
        """Take SQLite's write lock; False when *limit* (Unix seconds) passed waiting for it."""
        budget = limit - self._clock()
        if budget <= 0:
            return False
        # Wait for another writer (another host on this file, a tool) no longer than the
        # batch's latest limit allows; rounded up (and 1 ms more) so that giving up means
        # it has passed.  A budget within BUSY_SLACK of the default keeps the default: the
        # rows are judged against their limits after the wait anyway, so that only lets a
        # give-up come up to BUSY_SLACK late (well inside COMMIT_GRACE), and it spares two
        # PRAGMA statements a commit (a budget is always a little under the default: the
        # give-up time is the enqueue's clock plus busy_timeout).
        default_ms = int(self._busy_timeout * 1000)
        wait_ms = min(math.ceil(budget * 1000) + 1, default_ms)
        if wait_ms >= default_ms - BUSY_SLACK * 1000:
            wait_ms = default_ms
        if wait_ms != default_ms:
            conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            if self._clock() >= limit:
                return False
            raise
        finally:
            if wait_ms != default_ms:
                conn.execute(f"PRAGMA busy_timeout = {default_ms}")
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

    def _refused(self, conn: sqlite3.Connection, row: "_Pending") -> WriteResult | Exception:
        """The answer of a row not applied because its limit passed waiting for the lock."""
        old = conn.execute(self._old_sql, (row.key,)).fetchone()  # not under the lock: for information
        now = self._clock()
        existed = old is not None and not old[0] and not (old[2] and old[2] <= now)
        return self._refused_with(row, old, existed)

    def _refused_with(self, row: "_Pending", old, existed: bool) -> WriteResult | Exception:
        # Its own deadline passed: late, as a one-row write was; only the committer's
        # give-up time: the source could not keep up.
        if not row.deadline or row.deadline > row.give_up:
            return SourceBusyError(f"the source did not commit the write within {self._busy_timeout:g}s; "
                                   "it was not applied")
        return WriteResult(False, existed, old[1] if old else 0, late=True)

    @contextlib.contextmanager
    def _turn(self):
        """This host's write turn on the file: an flock of the sidecar ``<database>-writer``.

        A blocking flock sleeps in the kernel until the holder releases (or dies),
        then wakes at once: no polling, unlike SQLite's busy handler.  Opened per
        process (the flock belongs to the open file), guarded by ``_turn_lock``
        between the threads of one process.
        """
        with self._turn_lock:
            pid = _pid[0]
            if self._turn_pid != pid:  # a forked child opens its own (the parent's holds the parent's)
                if self._turn_pid:
                    # Inherited: it shares the parent's open file, so while the child kept it
                    # a lock the parent held would outlive the parent.  Closing it is safe.
                    os.close(self._turn_fd)
                self._turn_fd = os.open(self._path + "-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                        0o644)
                self._turn_pid = pid
            fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the connections this process opened; later calls raise LoadError."""
        self._closed = True
        with self._lock:
            conns = self._conns if self._owner_pid == os.getpid() else []
            self._conns = []
        for conn in conns:
            conn.close()
        with self._turn_lock:
            if self._turn_pid == os.getpid():
                os.close(self._turn_fd)
                self._turn_pid, self._turn_fd = 0, -1

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r}, table={self._table!r})"


def _identity(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of the file at *path*: which file it is, whatever its name."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class _Pending:
    """One row waiting for a commit, and how its writer hears of it: a Future it awaits
    (``submit``), or a callback (``queue_write``)."""

    __slots__ = ("key", "value", "version", "unversioned", "expire_at", "deadline", "ceiling", "give_up",
                 "limit", "size", "future", "callback", "answer")
    #: What a ``submit`` writer awaits: its WriteResult or exception once a commit answers it.
    future: asyncio.Future | None
    #: What a ``queue_write`` writer is called with (this row) once it is answered.
    callback: Callable[["_Pending"], None] | None
    #: The row's WriteResult or exception, once answered (None before).
    answer: WriteResult | Exception | None

    def __init__(self, key: str, value: bytes | None, version: int, unversioned: bool, expire_at: float,
                 deadline: float, ceiling: int) -> None:
        self.key, self.value, self.version, self.unversioned = key, value, version, unversioned
        self.expire_at, self.deadline = expire_at, deadline
        self.ceiling = ceiling  # HLC.ceiling() when it was written: above it a stored version is bogus
        self.size = len(key) + (len(value) if value is not None else 0)
        self.give_up = 0.0  # set by the committer: past it the row is never applied
        self.limit = 0.0    # the earlier of deadline and give_up
        self.future = self.callback = self.answer = None  # (the future: set by _Committer.enqueue)

    def settled(self) -> bool:
        """Answered already, or given up by its writer (a cancelled await): never applied after."""
        return self.answer is not None or (self.future is not None and self.future.done())

    def settle(self, answer: WriteResult | Exception, call: bool = True) -> None:
        """Answer the row's writer (on the loop thread), unless it was answered already;
        *call* False: record the answer without calling a ``queue_write`` writer back (its
        loop has stopped: nothing it would do can reach its client)."""
        if self.settled():
            return
        self.answer = answer
        callback = self.callback
        if callback is not None:
            self.callback = None
            if not call:
                return
            try:
                callback(self)
            except Exception:  # a bug in the writer's callback must not stop the committer
                log.exception("the callback of a committed write failed")
        elif isinstance(answer, Exception):
            self.future.set_exception(answer)  # type: ignore[union-attr]
        else:
            self.future.set_result(answer)  # type: ignore[union-attr]


class _Committer:
    """One process's queue of writes to one SQLiteStorage: group commit.

    ``enqueue`` (from ``submit`` or ``queue_write``) queues rows and, when no
    commit is running, starts one; the drain task takes what is queued
    (bounded), commits it in a thread, answers each row (its Future or its
    callback: ``_Pending.settle``) once the next commit is in the thread, and
    goes on while rows are queued, so every write that arrives during a commit
    waits only for the next one.  While it runs, a
    timer (one per WATCH_PERIOD, not one per write: measured, a timeout per
    write cost a third of the loop's time) answers SourceBusyError to rows
    still unanswered COMMIT_GRACE after their give-up time; such a row, still
    queued, is then dropped, and the thread refuses one it already holds.
    The task is guarded by the event loop's single thread, and so are the
    queue and the batch, but for the commit thread's top-up (see ``_take``);
    the Futures and the callbacks belong to that loop.
    """

    def __init__(self, storage: SQLiteStorage) -> None:
        self._storage = storage
        self._forks = _forks[0]
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._batch: list[_Pending] = []  # the rows of the commit running now
        self._began: list = [None]        # how far that commit got (see SQLiteStorage._commit)
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None

    def usable(self) -> bool:
        """False after a fork, or from another event loop (a test's next ``asyncio.run``).

        Called on the loop thread by every write.  Not ``asyncio.get_running_loop()``, which
        costs a ``getpid`` system call in CPython 3.11: a thread runs one loop at a time, so
        this committer's loop running and this being its thread say the same."""
        return self._forks == _forks[0] and self._thread == threading.get_ident() and self._loop.is_running()

    async def submit(self, rows: list[_Pending]) -> list[WriteResult | Exception]:
        """Queue *rows*; their answers once the transaction holding them commits."""
        self.enqueue(rows)
        out: list[WriteResult | Exception] = []
        for row in rows:
            try:
                out.append(await row.future)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - answered per row (write raises it)
                out.append(exc)
        return out

    def enqueue(self, rows) -> None:
        """Queue *rows* (each gets its Future) and start a drain when none runs;
        SourceBusyError, queueing none, past MAX_QUEUED_ROWS."""
        storage = self._storage
        queue = self._queue
        if len(queue) + len(rows) > MAX_QUEUED_ROWS:
            raise SourceBusyError(f"the source cannot keep up: {len(queue)} writes already wait for "
                                  "a commit; retry")
        give_up = storage._clock() + storage._busy_timeout  # the clock deadlines are judged by
        create_future = self._loop.create_future
        for row in rows:
            row.give_up = give_up
            row.limit = min(row.deadline, give_up) if row.deadline else give_up
            if row.callback is None:
                row.future = create_future()
            queue.append(row)
        if self._task is None:
            self._task = self._loop.create_task(self._drain())

    def _take(self, batch: list[_Pending] | None = None) -> list[_Pending]:
        """Move queued rows to *batch* (a new one: None) up to the bounds of a transaction.

        Also called by the commit thread, as ``_commit``'s *top_up*: the deque's ``popleft``
        and ``append`` are atomic, the loop thread takes rows only between commits and the
        timer reads a copy of the queue, so the two threads never take the same row.
        """
        queue = self._queue
        if batch is None:
            batch, size = [], 0
        else:
            size = sum(row.size for row in batch)
        while queue and len(batch) < MAX_BATCH_ROWS:
            try:
                row = queue[0]
            except IndexError:  # emptied by the drain's end (the loop closing)
                break
            if batch and size + row.size > MAX_BATCH_BYTES:
                break
            queue.popleft()
            if row.settled():  # given up (or its writer cancelled): never applied
                continue
            batch.append(row)
            size += row.size
        return batch

    def _watch(self) -> None:
        limit = self._storage._clock() - COMMIT_GRACE
        began = self._began[0]
        # Copies: the commit thread may move rows from the queue to the batch meanwhile (a
        # row between the two is seen at the next tick).
        for running, rows in ((True, list(self._batch)), (False, list(self._queue))):
            for row in rows:
                if row.give_up < limit and not row.settled():
                    # A queued row is dropped, and a row of the running commit is refused when
                    # the commit's judging clock (see _commit) was not below its limit, or will
                    # be read only now: neither is applied.  Else it may have been.
                    maybe = running and began is not None and began < row.limit
                    row.settle(SourceBusyError(
                        f"the source did not commit the write within "
                        f"{self._storage._busy_timeout + COMMIT_GRACE:g}s; "
                        + ("it may have been applied" if maybe else "it was not applied"), maybe_applied=maybe))
        self._timer = self._loop.call_later(WATCH_PERIOD, self._watch)

    def _answer(self, rows: list[_Pending], answers: list, commits: int, call: bool = True) -> None:
        for row, answer in zip(rows, answers):
            row.settle(answer, call)  # (nothing when given up meanwhile)
        stats = self._storage._stats
        if commits and stats is not None:
            stats.add("source_commits", commits)
            stats.add("source_writes", len(rows))

    def _start(self, batch: list[_Pending]) -> asyncio.Future:
        """*batch*'s commit in a thread: the Future of its (answers, commits made)."""
        began = self._began = [None]
        try:
            return self._loop.run_in_executor(self._storage._executor, self._storage._commit,
                                              batch, began, self._take)
        except Exception as exc:  # e.g. the thread pool shut down: the drain answers it
            failed = self._loop.create_future()
            failed.set_exception(exc)
            return failed

    async def _drain(self) -> None:
        storage = self._storage
        self._timer = self._loop.call_later(WATCH_PERIOD, self._watch)
        done = None  # (rows, answers, commits made) of the commit that just ended, not yet answered
        try:
            while True:
                commit = None
                if self._queue:
                    batch = self._batch = self._take()
                    if batch:
                        commit = self._start(batch)
                if done is not None:
                    # Answered once the next commit is in the thread: the writers' callbacks
                    # run on the loop while it commits, as a Future's did, not before it starts.
                    self._answer(*done)
                    done = None
                if commit is None:
                    if self._queue:  # queued by those callbacks (a pipelined request)
                        continue
                    break
                try:
                    answers, commits = await commit
                except Exception as exc:  # noqa: BLE001 - e.g. closed, or the thread pool shut down
                    answers, commits = [exc] * len(batch), 0
                done = (batch, answers, commits)
        finally:
            self._task = None
            self._timer.cancel()
            # Cancelled (the loop is closing: writers are called back while it still runs) or
            # closed unfinished (a loop closed with the task pending: nobody is called back).
            call = self._loop.is_running()
            if done is not None:  # (an error between a commit's end and its answers)
                self._answer(*done, call)
            for row in self._batch:  # the commit may be running
                if not row.settled():  # (a drain that ran dry ends here too, every row answered)
                    row.settle(SourceBusyError(
                        f"{storage!r}: the event loop closed before the commit was answered; it may "
                        "have been applied", maybe_applied=True), call)
            for row in self._queue:
                if not row.settled():
                    row.settle(LoadError(f"{storage!r}: the event loop closed before the commit was answered"),
                               call)
            self._batch = []
            self._queue.clear()


def _bytes(value) -> bytes:
    # A row written by another tool may hold TEXT rather than BLOB.
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
