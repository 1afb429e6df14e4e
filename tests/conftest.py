"""The fixtures shared by several test modules, and the `etcd`/`procs` marker checks.

Helpers that are plain code live in tests/support; this file holds what
pytest must find by name (fixtures, hooks).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from geecache.shm import Arena
from tests.support import marks
from tests.support.arena import geecache_segments
from tests.support.etcd import EtcdServer, start_etcd

#: Fixtures that start (or may start) a real etcd: a test using one is marked `etcd`.
ETCD_FIXTURES = ("etcd_server", "etcd_unstarted")


def pytest_configure(config):
    """Install the check that a test which starts a process is marked (tests/support/marks.py)."""
    marks.install()


def pytest_collection_modifyitems(items):
    """Mark `etcd` every test that uses an etcd fixture, so that no one has to remember."""
    for item in items:
        if any(name in item.fixturenames for name in ETCD_FIXTURES):
            item.add_marker(pytest.mark.etcd)


#: Under CI (``CI=true``, as .ci/run is run) nothing may be skipped: CI installs every tool
#: the suite uses, so a skip means a test that silently did not run.
SKIPS_FAIL = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, turn a skip (a missing tool, most often) into a failure that names it."""
    outcome = yield
    report = outcome.get_result()
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"CI=true runs every test, and this one was skipped: {reason}\n"
                           "Install what it names (.ci/run installs the suite's tools) or fix the test.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Tell the marker checks which test runs (its setup, call and teardown)."""
    marks.set_running(item.nodeid, (m.name for m in item.iter_markers()))
    try:
        yield
    finally:
        marks.set_running(None)


@pytest.fixture
def make_arena():
    """Factory for arenas that are closed and unlinked after the test.

    Teardown fails the test if any of them is still in /dev/shm (only our
    own names are checked: other suites may create segments concurrently).
    """
    made: list[Arena] = []

    def make(size: int = 8 << 20, **kw) -> Arena:
        a = Arena.create(size, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        try:
            a.close()
        finally:  # a close that raised must not leave the segment in /dev/shm
            a.unlink()
    left = {a.name for a in made} & geecache_segments()
    assert not left, f"segments left behind: {left}"


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A started EtcdServer, stopped and deleted after the test.

    The log tail is printed at teardown, which pytest shows only for failing tests.
    """
    yield from _closed_after(start_etcd())


@pytest.fixture
def etcd_unstarted() -> Iterator[EtcdServer]:
    """An EtcdServer with ports and data dir chosen but not started (the test starts it)."""
    yield from _closed_after(EtcdServer())


def _closed_after(server: EtcdServer) -> Iterator[EtcdServer]:
    """Yield *server*; then print its log tail (shown for failing tests) and close it."""
    try:
        yield server
    finally:
        print(server.log_tail())
        server.close()
