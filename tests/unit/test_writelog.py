"""The host's log of recent writes: what it answers, and when it cannot cover a window."""

import os

import pytest

from geecache.writelog import WriteLog

S = 1_000_000_000  # ns


class Clock:
    def __init__(self) -> None:
        self.t = 1000 * S

    def __call__(self) -> int:
        return self.t


def test_the_keys_of_the_window_are_answered_and_covered():
    clock = Clock()
    log = WriteLog(records=8, clock=clock)
    clock.t += 10 * S
    log.append("g", ["old"])
    clock.t += 5 * S
    log.append("g", ["k1", "k2"])
    log.append("h", ["k1"])
    clock.t += 1 * S
    assert log.since(2.0) == (True, {"g": {"k1", "k2"}, "h": {"k1"}})
    assert log.since(0.5) == (True, {})


def test_a_log_younger_than_the_window_does_not_cover_it():
    clock = Clock()
    log = WriteLog(records=8, clock=clock)
    clock.t += 3 * S
    log.append("g", ["k"])
    assert log.since(5.0) == (False, {"g": {"k"}})
    assert log.since(2.0)[0] is True


def test_a_ring_that_wrapped_within_the_window_does_not_cover_it():
    clock = Clock()
    log = WriteLog(records=4, clock=clock)
    clock.t += 10 * S
    for i in range(6):  # two more than it keeps
        clock.t += S
        log.append("g", [f"k{i}"])
    covered, keys = log.since(10.0)
    assert not covered and keys == {"g": {"k2", "k3", "k4", "k5"}}
    assert log.since(3.5) == (True, {"g": {"k2", "k3", "k4", "k5"}})  # k1 (overwritten) is older


@pytest.mark.procs
def test_every_process_of_the_host_writes_one_log():
    log = WriteLog(records=64)
    pid = os.fork()
    if pid == 0:  # a worker: appends to the same mapping
        try:
            log.append("g", ["from-child"])
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    log.append("g", ["from-parent"])
    assert log.since(60.0)[1] == {"g": {"from-child", "from-parent"}}


def test_an_absence_is_noted_and_settled_once():
    log = WriteLog(records=4)
    assert log.unsure_since() == 0
    log.mark_unsure(123)
    log.settle_unsure(122)  # an older absence's settling leaves a newer one
    assert log.unsure_since() == 123
    log.settle_unsure(123)
    assert log.unsure_since() == 0
