"""A source file deleted under a running host: every write is refused loudly, none acknowledged.

Before, 20 of 20 PUTs got 204 and were served, then lost at the next start
(they went to the unlinked file), with nothing logged.
"""

from __future__ import annotations

import json
import os

import pytest

from geecache.errors import SourceGoneError
from geecache.storage import SQLiteStorage
from tests.support.proc import start_supervisor, wait_until

TOKEN = "gone-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.procs
def test_writes_to_a_deleted_source_file_are_refused_and_logged(tmp_path):
    db = tmp_path / "kv.db"
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[[groups]]\nname = "kv"\nsqlite = "{db}"\n')
    h = start_supervisor(tmp_path, "--config", str(cfg), "--auth-token", TOKEN, workers=2)
    try:
        # Both workers serving, so neither is still opening the file when it is deleted
        # (a worker booting then fails to boot, which is right, but not what this tests).
        def serving() -> int:
            return sum(p["kind"] == "worker" and p["ready"] for p in h.admin_json("/dashboard.json")["processes"])
        wait_until(lambda: serving() == 2, 30, what="both workers serving")
        for i in range(5):
            assert h.request("PUT", f"/api?group=kv&key=before{i}", b"v", AUTH)[0] == 204
        for suffix in ("", "-wal", "-shm"):  # as `rm kv.db*` would
            try:
                os.unlink(f"{db}{suffix}")
            except FileNotFoundError:
                pass
        answers = [h.request("PUT", f"/api?group=kv&key=after{i}", b"lost?", AUTH) for i in range(20)]
        statuses = [status for status, _, _ in answers]
        assert statuses == [503] * 20, statuses
        reason = json.loads(answers[0][2])["error"]
        assert "deleted or replaced" in reason and str(db) not in reason
        assert h.request("DELETE", "/api?group=kv&key=before0", None, AUTH)[0] == 503
        assert f"SQLite database {db} was deleted while this host runs" in h.log()
        assert "Traceback" not in h.log()
    finally:
        assert h.stop() == 0


def test_a_replaced_source_file_refuses_writes(tmp_path):
    import asyncio

    db = tmp_path / "kv.db"
    store = SQLiteStorage(db)

    async def main():
        assert (await store.write("k", b"v", version=10)).applied
        os.rename(db, tmp_path / "moved.db")  # an operator "restoring" another file in its place
        SQLiteStorage(db).close()
        with pytest.raises(SourceGoneError):
            await store.write("k", b"w", version=20)

    try:
        asyncio.run(main())
    finally:
        store.close()
