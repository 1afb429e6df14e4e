"""Floors for the write bench: the least a Python server on this box can do for a PUT.

    python tests/perf/put_floor.py PORT WORKERS MODE [DATABASE]

A bare ``asyncio.Protocol`` over httptools on uvloop, *WORKERS* processes forked on one
listening socket (as ``bench_http``'s floor for reads), answering ``PUT /api?key=K`` with
``204`` and ``GET /api?key=...`` with the bench value (the readiness probe):

- ``http``: the 204 at once, nothing stored: the HTTP floor, what the loop and the kernel
  cost a PUT with no write path at all;
- ``commit``: the 204 once the row has committed: per process a queue and one commit thread
  taking everything queued (group commit), an ``flock`` turn per commit between the
  processes, one multi-row versioned upsert per transaction in *DATABASE* (WAL,
  ``synchronous=FULL``).  The write path's design with nothing else: no versions judged in
  Python, no deadlines, no cache, no metrics, no limits.

Not a server anyone should run: it trusts every byte (a benchmark on loopback only).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sqlite3
import sys

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.bench_http import VALUE, _prefork, serve_until_sigterm  # noqa: E402

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
HIT = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%b" % (
    len(VALUE), VALUE)
#: Rows a commit takes at most (the write path's MAX_BATCH_ROWS).
MAX_ROWS = 256
UPSERT_HEAD = "INSERT INTO kv (key, value, version) VALUES "
UPSERT_TAIL = (" ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version "
               "WHERE excluded.version > kv.version")


class Committer:
    """One process's group commit: rows queued on the loop, committed by one thread in turn."""

    def __init__(self, loop, path: str) -> None:
        self.loop, self.path = loop, path
        self.queue: list = []      # (key, value, transport), guarded by the loop's thread
        self.running = False       # a commit is in the thread (loop's thread)
        self.version = 0
        self.conn = None           # the commit thread's own
        self.turn = os.open(path + "-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def add(self, key: str, value: bytes, transport) -> None:
        self.queue.append((key, value, transport))
        if not self.running:
            self._start()

    def _start(self) -> None:
        batch, self.queue = self.queue[:MAX_ROWS], self.queue[MAX_ROWS:]
        self.running = True
        self.loop.run_in_executor(None, self._commit, batch).add_done_callback(
            lambda f, batch=batch: self._done(batch, f))

    def _done(self, batch, future) -> None:
        if future.exception() is not None:  # a benchmark, not a server: a failed commit ends it
            os._exit(1)
        for _, _, transport in batch:
            if not transport.is_closing():
                transport.write(NO_CONTENT)
        self.running = False
        if self.queue:
            self._start()

    def _commit(self, batch) -> None:
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA synchronous = FULL")
        params = []
        for key, value, _ in batch:
            self.version += 1
            params += (key, value, self.version)
        fcntl.flock(self.turn, fcntl.LOCK_EX)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(UPSERT_HEAD + ",".join(["(?,?,?)"] * len(batch)) + UPSERT_TAIL, params)
            self.conn.execute("COMMIT")
        finally:
            fcntl.flock(self.turn, fcntl.LOCK_UN)


def main(port: int, workers: int, mode: str, path: str | None) -> None:
    import httptools

    from workers.worker import new_event_loop

    if mode not in ("http", "commit") or (mode == "commit" and not path):
        raise SystemExit("usage: put_floor.py PORT WORKERS http|commit [DATABASE]")
    if mode == "commit":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
                     "version INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID")
        conn.close()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)

    def serve() -> None:
        loop = new_event_loop()
        committer = Committer(loop, path) if mode == "commit" else None

        class Floor(asyncio.Protocol):
            def connection_made(self, transport):
                self.t = transport
                self.p = httptools.HttpRequestParser(self)
                self.url, self.body = b"", b""

            def data_received(self, data):
                self.p.feed_data(data)

            def on_url(self, url):
                self.url = url

            def on_body(self, body):
                self.body += body

            def on_message_complete(self):
                if self.p.get_method() != b"PUT":
                    self.t.write(HIT)
                elif committer is None:
                    self.t.write(NO_CONTENT)
                else:
                    committer.add(self.url.partition(b"key=")[2].decode(), self.body, self.t)
                self.body = b""

        serve_until_sigterm(loop, Floor, sock)

    _prefork(serve, workers)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
