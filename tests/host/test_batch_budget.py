"""The batches one worker serves at once are bounded in bytes (``batch_inflight_bytes``).

A real one-worker supervisor over a slow loader: while one batch is in
flight (its loads seen starting in the loader's count file) and holds the
budget, another public or peer batch is answered 503 with ``Retry-After``
and a JSON reason, single GETs are served as ever, and once the first batch
is answered the next one is served.  A large batch body is refused from its
head while the budget is spent, before it is read; an answer its client has
not read yet holds its bytes in the budget until its connection goes.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from geecache.geecachepb import BatchItem, BatchRequest, BatchResponse
from tests.support.h11client import read_answers
from tests.support.loaders import count_loads
from tests.support.proc import start_supervisor, wait_until

pytestmark = pytest.mark.procs


def _batch(keys) -> bytes:
    return BatchRequest(items=[BatchItem(key=k) for k in keys]).SerializeToString()


def test_a_batch_past_the_workers_budget_gets_503_with_retry_after(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text('[[groups]]\nname = "c"\nloader = "tests.support.loaders:counting"\nload_timeout = 30\n')
    count_file = tmp_path / "loads.txt"
    h = start_supervisor(tmp_path, "--config", str(config), "--batch-inflight-bytes", "1MiB", workers=1,
                         env={"GEECACHE_TEST_COUNT_FILE": str(count_file), "GEECACHE_TEST_LOAD_DELAY": "8"})  # the first batch stays in flight
    try:
        first: list = []
        keys = [f"slow-{i}" for i in range(4)]
        client = threading.Thread(target=lambda: first.append(
            h.request("POST", "/api/batch?group=c", _batch(keys))))
        client.start()
        try:
            wait_until(lambda: count_loads(count_file) >= 1, 20, what="the first batch's loads started")
            for target in ("/api/batch?group=c", "/_geecache/c/_batch"):
                status, headers, body = h.request("POST", target, _batch(["other-key"]))
                assert (status, headers.get("retry-after")) == (503, "1"), (target, status, body)
                reason = json.loads(body)["error"]
                assert "batch_inflight_bytes" in reason and "other-key" not in reason
            # A large batch body is refused from its head, before a byte of it is read.
            with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
                s.sendall(b"POST /api/batch?group=c HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n")
                answer = read_answers(s, ["POST"]).answers[0]
            assert (answer.status, answer.headers.get("retry-after")) == (503, "1")
            assert "batch_inflight_bytes" in json.loads(answer.body)["error"]
            assert h.get("/api?group=c&key=single") == (200, b"value-single")  # not a batch: served
        finally:
            client.join(30)
        assert not client.is_alive()
        status, _, body = first[0]
        assert status == 200, body
        answer = BatchResponse()
        answer.ParseFromString(body)
        assert [(i.key, i.status, i.value) for i in answer.items] == [(k, 200, f"value-{k}".encode()) for k in keys]
        # The budget is free again.
        status, _, body = h.request("POST", "/api/batch?group=c", _batch(keys))
        assert status == 200, body
        assert "Traceback" not in h.log()
    finally:
        assert h.stop() == 0


def test_an_answer_a_client_has_not_read_holds_the_budget(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text(f'[[groups]]\nname = "g"\nsqlite = "{tmp_path / "g.db"}"\nitem_limit = "1MiB"\n'
                      'max_bytes = "32MiB"\n')
    h = start_supervisor(tmp_path, "--config", str(config), "--arena", "96MiB", "--batch-inflight-bytes", "4MiB",
                         workers=1)
    try:
        keys = [f"big-{i}" for i in range(12)]
        for key in keys:  # 12 MB of answer: far more than the kernel's buffers of one connection
            assert h.request("PUT", f"/api?group=g&key={key}", os.urandom(1_000_000))[0] == 204
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        slow.settimeout(10)
        try:
            slow.connect(("127.0.0.1", h.port))
            slow.sendall(b"POST /api/batch?group=g HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
                         % (len(_batch(keys)), _batch(keys)))
            assert slow.recv(12) == b"HTTP/1.1 200"  # answered: the rest waits for this reader
            status, headers, body = h.request("POST", "/api/batch?group=g", _batch(keys[:1]))
            assert (status, headers.get("retry-after")) == (503, "1"), (status, body)
        finally:
            slow.close()  # the unread answer goes with its connection, and so does its hold
        wait_until(lambda: h.request("POST", "/api/batch?group=g", _batch(keys[:1]))[0] == 200, 20,
                   what="the budget free again")
    finally:
        assert h.stop() == 0
