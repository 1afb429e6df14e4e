"""The blocking client against a real host whose workers are SIGSTOPped: one try, one write.

``Client(url, timeout=1.0)`` with a pooled keep-alive connection to a host
that then stops (SIGSTOP: it accepts at the kernel, answers nothing): a PUT
must fail with one attempt, not be sent again on a fresh connection, and
once the host resumes (SIGCONT) it is applied once.  The host's own
``sets`` counter (``/stats``) counts the PUTs it took.  With two hosts, the
PUT is not sent to the second host either; a GET is, and is answered.  The same
for ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from geecache.client import AsyncClient, Client
from geecache.errors import UnavailableError
from tests.support.proc import start_supervisor, wait_until

pytestmark = pytest.mark.procs


def _sets(h) -> int:
    return h.admin_json("/stats")["g"]["sets"]


@pytest.fixture
def hosts(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text(f'[[groups]]\nname = "g"\nsqlite = "{tmp_path / "g.db"}"\n')
    # No watchdog: the test stops the worker on purpose.
    started = []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            started.append(start_supervisor(d, "--config", str(config), "--worker-timeout", "0", workers=1))
        yield started
    finally:
        for h in started:
            for pid in h.workers():
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            h.stop()


def _stop_workers(h) -> list[int]:
    pids = h.workers()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def _resume(h, pids) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: h.request("GET", "/healthz")[0] == 200, 20, what="the host answers again")


def test_a_put_to_a_stopped_host_is_tried_once_and_applied_once(hosts):
    a = hosts[0]
    url = f"http://127.0.0.1:{a.port}"
    with Client(url, timeout=1.0) as c:
        c.set("k", b"v0", group="g")  # leaves a keep-alive connection in the pool
        before = _sets(a)
        pids = _stop_workers(a)
        try:
            with pytest.raises(UnavailableError) as info:
                c.set("k", b"v1", group="g")
        finally:
            _resume(a, pids)
        assert [u for u, _ in info.value.attempts] == [url]  # one try: no second PUT on a fresh connection
        assert "timed out" in info.value.attempts[0][1]
        # The PUT the stopped host had in its socket is applied now, once.
        wait_until(lambda: _sets(a) >= before + 1, 20, what="the buffered PUT applied")
        c.set("k", b"v2", group="g")  # answered after anything the host read before it
        assert _sets(a) == before + 2
        assert c.get("k", group="g") == b"v2"


def test_a_write_is_not_sent_to_the_next_host_after_a_timeout_a_read_is(hosts):
    a, b = hosts
    urls = [f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"]
    with Client(urls, timeout=1.0) as c:
        c.set("w", b"v0", group="g")
        assert c.get("w", group="g") == b"v0"
        sets_b = _sets(b)
        pids = _stop_workers(a)
        try:
            with pytest.raises(UnavailableError) as info:
                c.set("w", b"v1", group="g")
            assert [u for u, _ in info.value.attempts] == [urls[0]]
            assert _sets(b) == sets_b  # the second host never saw it
            assert c.get("w", group="g") in (b"v0", b"v1")  # a read fails over: b answers
        finally:
            _resume(a, pids)


def test_the_async_client_does_not_send_a_write_twice_either(hosts):
    a, b = hosts
    urls = [f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"]

    async def go():
        async with AsyncClient(urls, timeout=1.0) as c:
            await c.set("x", b"v0", group="g")
            sets_a, sets_b = _sets(a), _sets(b)
            pids = _stop_workers(a)
            try:
                with pytest.raises(UnavailableError) as info:
                    await c.set("x", b"v1", group="g")
                assert [u for u, _ in info.value.attempts] == [urls[0]]
                assert _sets(b) == sets_b
                assert await c.get("x", group="g") in (b"v0", b"v1")  # a read fails over
            finally:
                _resume(a, pids)
            wait_until(lambda: _sets(a) >= sets_a + 1, 20, what="the buffered PUT applied")
            await c.set("x", b"v2", group="g")
            assert _sets(a) + _sets(b) == sets_a + sets_b + 2  # v1 once (on a), v2 once

    asyncio.run(go())
