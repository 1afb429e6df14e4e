"""Single flight: one call per key, every waiter gets its outcome."""

import asyncio
import gc

import pytest

from geecache.singleflight import Group


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_concurrent_callers_share_one_call():
    async def main():
        g = Group()
        calls = 0
        release = asyncio.Event()

        async def load():
            nonlocal calls
            calls += 1
            await release.wait()
            return b"v"

        waiters = [asyncio.create_task(g.do_ex("k", load)) for _ in range(10)]
        await asyncio.sleep(0)
        assert g.in_flight("k") and len(g) == 1
        release.set()
        results = await asyncio.gather(*waiters)
        assert calls == 1
        assert [v for v, _ in results] == [b"v"] * 10
        assert sorted(s for _, s in results) == [False] + [True] * 9
        assert not g.in_flight("k") and len(g) == 0

    run(main())


def test_every_waiter_gets_the_exception():
    async def main():
        g = Group()
        release = asyncio.Event()

        async def load():
            await release.wait()
            raise LookupError("boom")

        waiters = [asyncio.create_task(g.do("k", load)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, LookupError) and str(r) == "boom" for r in results)
        assert len(g) == 0

    run(main())


def test_key_is_forgotten_when_the_call_ends():
    async def main():
        g = Group()
        calls = 0

        async def load():
            nonlocal calls
            calls += 1
            return calls

        assert await g.do("k", load) == 1
        assert await g.do("k", load) == 2
        with pytest.raises(ZeroDivisionError):
            await g.do("k", _raise)
        assert await g.do("k", load) == 3

    async def _raise():
        raise ZeroDivisionError

    run(main())


def test_distinct_keys_run_independently():
    async def main():
        g = Group()
        started = []
        release = asyncio.Event()

        async def load(k):
            started.append(k)
            await release.wait()
            return k

        tasks = [asyncio.create_task(g.do(k, lambda k=k: load(k))) for k in "abc"]
        for _ in range(100):
            if len(started) == 3:
                break
            await asyncio.sleep(0)
        assert sorted(started) == ["a", "b", "c"]
        release.set()
        assert await asyncio.gather(*tasks) == ["a", "b", "c"]

    run(main())


def test_cancelling_one_waiter_does_not_cancel_the_call():
    async def main():
        g = Group()
        release = asyncio.Event()
        finished = []

        async def load():
            await release.wait()
            finished.append(True)
            return b"v"

        first = asyncio.create_task(g.do("k", load))  # the one that started it
        second = asyncio.create_task(g.do("k", load))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        assert first.cancelled()
        assert g.in_flight("k")
        release.set()
        assert await second == b"v"
        assert finished == [True]

    run(main())


def test_failure_with_no_waiters_left_is_not_logged():
    async def main():
        g = Group()
        reported = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        release = asyncio.Event()

        async def load():
            await release.wait()
            raise RuntimeError("nobody listens")

        waiter = asyncio.create_task(g.do("k", load))
        await asyncio.sleep(0)
        waiter.cancel()
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(g) == 0
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []

    run(main())
