"""The hybrid logical clock: monotonic through clock steps, ahead of what it has seen."""

import os
import select
import time
from multiprocessing import shared_memory

import pytest

from geecache import hlc
from geecache.hlc import HLC, LIMIT, BufferFloor, ClockDriftError, pack, to_unix, unpack
from tests.support.proc import reap

T0 = 1_750_000_000_000_000  # µs: mid-2025


class Wall:
    """An injectable wall clock in µs that a test moves by hand."""

    def __init__(self, us: int = T0) -> None:
        self.us = us

    def __call__(self) -> int:
        return self.us


def test_layout_fits_a_signed_64_bit_integer():
    assert LIMIT == 1 << 63
    ts = pack(T0, 5)
    assert unpack(ts) == (T0, 5)
    assert to_unix(ts) == pytest.approx(T0 / 1e6)
    # Year 2112 still fits; the order of timestamps is the order of (physical, logical).
    assert pack((1 << 52) - 1, 2047) == LIMIT - 1
    assert pack(T0, 2047) < pack(T0 + 1, 0)
    for bad in [(-1, 0), (1 << 52, 0), (T0, -1), (T0, 2048)]:
        with pytest.raises(ValueError):
            pack(*bad)
    with pytest.raises(ValueError):
        unpack(LIMIT)
    with pytest.raises(ValueError):
        unpack(-1)


def test_now_follows_the_wall_clock_and_counts_within_a_microsecond():
    wall = Wall()
    clock = HLC(wall)
    assert clock.last() == 0
    assert clock.now() == pack(T0, 0)
    assert clock.now() == pack(T0, 1)  # same µs: the logical counter orders them
    wall.us += 3
    assert clock.now() == pack(T0 + 3, 0)
    assert clock.last() == pack(T0 + 3, 0)


def test_monotonic_when_the_wall_clock_steps_back():
    wall = Wall()
    clock = HLC(wall)
    seen = [clock.now()]
    wall.us -= 5_000_000  # NTP steps the clock back 5 s
    for _ in range(100):
        seen.append(clock.now())
        wall.us += 1000
    assert seen == sorted(set(seen)), "went backwards or repeated"
    # The physical part held at the old time while the wall clock was behind it ...
    assert unpack(seen[50])[0] == T0
    # ... and follows the wall clock again once it has caught up.
    wall.us = T0 + 10
    assert clock.now() == pack(T0 + 10, 0)


def test_logical_overflow_borrows_the_next_microsecond():
    wall = Wall()
    clock = HLC(wall)
    stamps = [clock.now() for _ in range(2048 + 3)]
    assert stamps == sorted(set(stamps))
    assert unpack(stamps[2047]) == (T0, 2047)
    assert unpack(stamps[2048]) == (T0 + 1, 0)
    wall.us = T0 + 100  # real time passes the borrowed µs: back to wall time
    assert clock.now() == pack(T0 + 100, 0)


def test_update_from_a_remote_clock_ahead_then_behind():
    wall = Wall()
    clock = HLC(wall)
    local = clock.now()
    remote = pack(T0 + 2_000_000, 7)  # a host whose clock is 2 s ahead
    got = clock.update(remote)
    assert got > remote and got == pack(T0 + 2_000_000, 8)
    # Local events now stay above what was received, though our wall clock is behind.
    wall.us += 10
    after = clock.now()
    assert after > got and unpack(after)[0] == T0 + 2_000_000
    # A remote timestamp behind us changes nothing but the counter.
    behind = clock.update(local)
    assert behind > after and unpack(behind)[0] == T0 + 2_000_000
    # Our wall clock overtakes: physical again, counter reset.
    wall.us = T0 + 3_000_000
    assert clock.update(remote) == pack(T0 + 3_000_000, 0)


def test_update_with_equal_physical_parts_takes_the_larger_counter():
    wall = Wall()
    clock = HLC(wall)
    clock.now()
    clock.now()  # (T0, 1)
    assert clock.update(pack(T0, 40)) == pack(T0, 41)
    assert clock.update(pack(T0, 3)) == pack(T0, 42)


def test_max_drift_refuses_a_remote_timestamp_far_in_the_future():
    wall = Wall()
    clock = HLC(wall, max_drift=1.0)
    before = clock.now()
    with pytest.raises(ClockDriftError, match="ahead"):
        clock.update(pack(T0 + 5_000_000))
    assert clock.last() == before  # not dragged forward
    assert clock.update(pack(T0 + 900_000)) > pack(T0 + 900_000)  # within the limit


def test_the_ceiling_is_the_largest_timestamp_update_takes():
    wall = Wall()
    clock = HLC(wall, max_drift=1.0)
    ceiling = clock.ceiling()
    assert clock.update(ceiling) > ceiling  # taken
    with pytest.raises(ClockDriftError):
        clock.update(ceiling + 1)
    assert HLC(wall).ceiling() == LIMIT - 1  # no drift limit: the whole range
    clock.max_drift = None
    assert clock.max_drift is None and clock.ceiling() == LIMIT - 1


def test_the_end_of_the_range_is_an_error_not_a_wrapped_timestamp():
    last_us = (1 << 52) - 1
    clock = HLC(lambda: last_us, max_drift=1.0)
    assert clock.ceiling() == LIMIT - 1  # now + drift is past the range: its last timestamp
    issued = [clock.now() for _ in range(2048)]  # every counter of the last µs
    assert issued == sorted(issued) and issued[-1] == LIMIT - 1
    with pytest.raises(ValueError, match="outside"):
        clock.now()  # the borrow would leave the range


def test_a_bad_wall_clock_is_an_error_not_a_wrapped_timestamp():
    clock = HLC(lambda: -1)
    with pytest.raises(ValueError, match="wall clock"):
        clock.now()


def test_the_process_clock_reads_the_system_clock():
    a = hlc.clock.now()
    b = hlc.clock.now()
    assert b > a
    assert abs(to_unix(b) - time.time()) < 60


@pytest.mark.procs
def test_a_shared_floor_keeps_the_workers_of_a_host_in_order():
    """Two processes over one shared 8-byte floor: their timestamps interleave in
    order even though one of them reads a wall clock 1 s behind the other's."""
    shm = shared_memory.SharedMemory(create=True, size=8)
    try:
        shm.buf[:8] = bytes(8)
        turn_a = os.pipe()
        turn_b = os.pipe()
        out_r, out_w = os.pipe()
        rounds = 50

        def child(offset_us, my_turn, next_turn, first):
            code = 1
            try:
                seg = shared_memory.SharedMemory(name=shm.name)
                wall = Wall(T0 + offset_us)
                clock = HLC(wall, floor=BufferFloor(seg.buf))
                for i in range(rounds):
                    if not (first and i == 0):
                        if not select.select([my_turn[0]], [], [], 20)[0]:
                            os._exit(2)
                        os.read(my_turn[0], 1)
                    ts = clock.now()
                    wall.us += 1
                    os.write(out_w, ts.to_bytes(8, "big"))
                    os.write(next_turn[1], b"x")
                del clock
                seg.close()
                code = 0
            finally:
                os._exit(code)

        pids = []
        for args in [(0, turn_a, turn_b, True), (-1_000_000, turn_b, turn_a, False)]:
            pid = os.fork()
            if pid == 0:
                child(*args)
            pids.append(pid)
        data = b""
        deadline = time.monotonic() + 30
        while len(data) < 16 * rounds and time.monotonic() < deadline:
            if select.select([out_r], [], [], 1)[0]:
                data += os.read(out_r, 4096)
        try:
            status = reap(pids, timeout=30)
        finally:
            for fd in (*turn_a, *turn_b, out_r, out_w):
                os.close(fd)
        assert [os.waitstatus_to_exitcode(st) for st in status.values()] == [0, 0]
        stamps = [int.from_bytes(data[i:i + 8], "big") for i in range(0, len(data), 8)]
        assert len(stamps) == 2 * rounds
        assert stamps == sorted(set(stamps)), "a worker issued a timestamp below another's"
    finally:
        shm.close()
        shm.unlink()


def test_buffer_floor_only_rises():
    buf = bytearray(16)
    floor = BufferFloor(buf)
    assert floor.read() == 0
    floor.raise_to(10)
    floor.raise_to(5)
    assert floor.read() == 10
    with pytest.raises(ValueError):
        BufferFloor(bytearray(4))
