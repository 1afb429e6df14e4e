"""The per-peer circuit breaker, on an injected monotonic clock."""

import pytest

from geecache.cluster.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw):
    clock = Clock()
    trips = []
    return Breaker(clock=clock, on_trip=trips.append, **kw), clock, trips


def test_one_failure_opens_for_a_cooldown_then_one_probe_at_a_time():
    b, clock, trips = make(cooldown=1.0)
    assert b.allow("A") and b.state("A") == CLOSED
    assert b.failure("A") is True
    assert b.state("A") == OPEN and trips == ["A"] and b.trips == 1
    assert [b.allow("A") for _ in range(5)] == [False] * 5
    assert b.allow("B")  # other peers are not affected
    clock.t += 0.999
    assert not b.allow("A")
    clock.t += 0.001
    assert b.state("A") == HALF_OPEN
    assert b.allow("A")  # the probe
    assert [b.allow("A") for _ in range(5)] == [False] * 5  # only one
    b.success("A")
    assert b.state("A") == CLOSED and b.allow("A") and b.allow("A")
    assert (b.rejected, b.probes) == (11, 1)


def test_a_failed_probe_reopens_with_a_growing_capped_cooldown():
    b, clock, trips = make(cooldown=1.0, backoff=2.0, max_cooldown=5.0)
    b.failure("A")
    cooldowns = []
    for _ in range(5):
        start = clock.t
        # Find when it lets a probe through, in 0.25 s steps of the injected clock.
        while not b.allow("A"):
            clock.t += 0.25
        cooldowns.append(clock.t - start)
        b.failure("A")
    assert cooldowns == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(trips) == 6
    # Success resets the cooldown to the base one.
    clock.t += 5
    assert b.allow("A")
    b.success("A")
    b.failure("A")
    clock.t += 1.0
    assert b.allow("A")


def test_failures_while_open_do_not_extend_it():
    b, clock, trips = make(cooldown=1.0)
    b.failure("A")
    clock.t += 0.5
    assert b.failure("A") is False  # a call that started before the trip
    b.failure("A")
    clock.t += 0.5
    assert b.allow("A")
    assert trips == ["A"]


def test_n_consecutive_failures_when_configured():
    b, clock, trips = make(failures=3)
    assert b.failure("A") is False
    b.failure("A")
    assert b.state("A") == CLOSED and b.allow("A")
    b.success("A")  # a success in between starts the count again
    b.failure("A")
    b.failure("A")
    assert b.state("A") == CLOSED
    b.failure("A")
    assert b.state("A") == OPEN and trips == ["A"]


def test_a_probe_that_never_reports_is_given_up():
    b, clock, _ = make(cooldown=1.0, probe_timeout=3.0)
    b.failure("A")
    clock.t += 1
    assert b.allow("A")  # the probe's task is then cancelled: no report
    clock.t += 2.9
    assert not b.allow("A")
    clock.t += 0.1
    assert b.allow("A")  # another caller probes
    assert b.probes == 2


def test_any_success_closes_and_forget_drops_state():
    b, clock, _ = make()
    b.failure("A")
    b.success("A")  # a call that was in flight came back with an answer
    assert b.state("A") == CLOSED
    b.failure("A")
    assert b.snapshot() == {"peers": {"A": OPEN}, "trips": 2, "rejected": 0, "probes": 0}
    b.forget("A")
    assert b.state("A") == CLOSED and b.snapshot()["peers"] == {}


def test_a_closed_peer_does_not_read_the_clock():
    reads = []

    def clock():
        reads.append(1)
        return 0.0

    b = Breaker(clock=clock)
    for _ in range(100):
        assert b.allow("A")
        b.success("A")
    assert reads == []


@pytest.mark.parametrize("kw", [{"failures": 0}, {"failures": 1.5}, {"cooldown": 0},
                                {"cooldown": 5, "max_cooldown": 1}, {"max_cooldown": float("inf")},
                                {"backoff": 0.5}, {"probe_timeout": 0}, {"cooldown": float("nan")}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        Breaker(**kw)
