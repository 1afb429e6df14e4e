"""Error answers of a real host: no echo of the request or the host's insides, the right statuses.

An error body never carries the key asked for, a group name (asked or
configured) or the SQLite path; a batch value over ``item_limit`` is a 413;
a batch body's ``group`` field is honoured (or refused when it disagrees
with the query); a request with two ``Authorization`` headers is a 400.
"""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest

from geecache.geecachepb import BatchItem, BatchRequest
from tests.support.h11client import read_answers
from tests.support.proc import start_supervisor

pytestmark = pytest.mark.procs

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET_KEY = "secret-key-4711"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errbodies")
    db = tmp / "private-store.db"
    cfg = tmp / "g.toml"
    cfg.write_text(f'[[groups]]\nname = "private_grp"\nsqlite = "{db}"\nitem_limit = "1KiB"\n'
                   f'max_bytes = "1MiB"\n\n'
                   f'[[groups]]\nname = "other_grp"\nsqlite = "{tmp / "other.db"}"\n')
    h = start_supervisor(tmp, "--config", str(cfg), "--auth-token", TOKEN, workers=1)
    h.db = str(db)
    yield h
    h.stop()


def _assert_no_echo(body: bytes, *secrets: str) -> str:
    reason = json.loads(body)["error"]
    for secret in (SECRET_KEY, "private_grp", "other_grp", "private-store", *secrets):
        assert secret not in reason, (secret, reason)
    return reason


def test_a_missing_key_or_an_unknown_group_is_not_echoed(host):
    status, _, body = host.request("GET", f"/api?group=private_grp&key={SECRET_KEY}")
    assert status == 404
    _assert_no_echo(body)
    status, _, body = host.request("GET", f"/api?group=nosuch_grp&key={SECRET_KEY}")
    assert status == 400
    _assert_no_echo(body, "nosuch_grp")
    status, _, body = host.request("GET", f"/_geecache/nosuch_grp/{SECRET_KEY}", headers=AUTH)
    assert status == 400
    _assert_no_echo(body, "nosuch_grp")


def test_a_failing_source_does_not_reveal_its_path(host):
    assert host.request("PUT", "/api?group=other_grp&key=k", b"v", headers=AUTH)[0] == 204
    with sqlite3.connect(host.db) as conn:  # the group's table gone under the running host
        conn.execute("DROP TABLE kv")
    status, _, body = host.request("GET", f"/api?group=private_grp&key={SECRET_KEY}")
    assert status == 502
    _assert_no_echo(body)
    status, _, body = host.request("PUT", f"/api?group=private_grp&key={SECRET_KEY}", b"v", headers=AUTH)
    assert status == 502
    _assert_no_echo(body)
    assert "Traceback" not in host.log()


def _batch(keys, values=None, group: str = "") -> bytes:
    items = [BatchItem(key=k, value=(values or {}).get(k, b"")) for k in keys]
    return BatchRequest(group=group, items=items).SerializeToString()


def test_a_batch_value_over_the_item_limit_is_413(host):
    status, _, body = host.request("POST", "/api/batch?op=set&group=private_grp",
                                   _batch(["big"], {"big": b"x" * 2048}), headers=AUTH)
    assert status == 413, body
    _assert_no_echo(body)


def test_a_batch_body_names_its_group(host):
    # The query names no group: the body's group is the one written, not the default group.
    status, _, body = host.request("POST", "/api/batch?op=set", _batch(["bk"], {"bk": b"in other"}, "other_grp"),
                                   headers=AUTH)
    assert status == 204, body
    assert host.get("/api?group=other_grp&key=bk") == (200, b"in other")
    assert host.get("/api?group=private_grp&key=bk")[0] in (404, 502)  # not written there
    # Body and query disagree: refused, nothing written.
    status, _, body = host.request("POST", "/api/batch?op=set&group=other_grp",
                                   _batch(["bk2"], {"bk2": b"v"}, "private_grp"), headers=AUTH)
    assert status == 400, body
    _assert_no_echo(body)
    assert host.get("/api?group=other_grp&key=bk2")[0] == 404


def test_two_authorization_headers_are_a_400(host):
    request = (f"PUT /api?group=other_grp&key=two HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
               f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1\r\n\r\nv").encode()
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as s:
        s.sendall(request)
        answer = read_answers(s, ["PUT"]).answers[0]
    assert answer.status == 400
    assert host.get("/api?group=other_grp&key=two")[0] == 404
