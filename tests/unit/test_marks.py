"""The marker checks themselves: an unmarked test that starts a process fails, naming the marker."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import marks
from tests.support.etcd import EtcdServer


def test_an_unmarked_fork_fails_loudly():
    try:
        pid = os.fork()
    except marks.UnmarkedSpawnError as exc:
        assert "pytest.mark.procs" in str(exc) and "test_an_unmarked_fork_fails_loudly" in str(exc)
    else:
        if pid == 0:  # the check is broken: leave the child at once, never let it run pytest on
            os._exit(0)
        os.waitpid(pid, 0)
        pytest.fail("an unmarked test forked")


def test_an_unmarked_subprocess_fails_loudly():
    with pytest.raises(marks.UnmarkedSpawnError, match="subprocess.Popen"):
        subprocess.run(["true"], timeout=10)


def test_an_etcd_needs_the_etcd_mark():
    server = EtcdServer()  # chooses ports and a data dir; starts nothing
    try:
        with pytest.raises(marks.UnmarkedSpawnError, match="pytest.mark.etcd"):
            server.start()
        assert server.pid is None
    finally:
        server.close()


@pytest.mark.procs
def test_a_marked_test_may_spawn():
    assert subprocess.run(["true"], timeout=10).returncode == 0
