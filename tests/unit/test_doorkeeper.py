"""The doorkeeper that decides when a peer's value is kept as a hot copy (geecache.doorkeeper)."""

from __future__ import annotations

import itertools

import pytest

from geecache.doorkeeper import Doorkeeper


def test_a_key_is_admitted_from_its_nth_fetch():
    door = Doorkeeper(after=3, size=100)
    assert [door.admits("k") for _ in range(5)] == [False, False, True, True, True]
    assert door.admits("other") is False


def test_after_one_admits_every_fetch_and_remembers_nothing():
    door = Doorkeeper(after=1, size=4)
    assert all(door.admits(f"k{i}") for i in range(100))
    assert len(door) == 0


def test_the_window_is_bounded_and_forgets_what_is_two_generations_old():
    door = Doorkeeper(after=2, size=8)
    keys = (f"k{i}" for i in itertools.count())
    first = next(keys)
    assert door.admits(first) is False
    for key in itertools.islice(keys, 7):  # fills the first generation
        assert door.admits(key) is False
    assert len(door) == 8
    for key in itertools.islice(keys, 8):  # a second generation: the first one is still seen
        assert door.admits(key) is False
    assert len(door) == 16
    assert door.admits(first) is True  # seen one generation back
    for key in itertools.islice(keys, 16):  # two more generations: the first is forgotten
        door.admits(key)
    assert len(door) <= 16
    assert door.admits(first) is False


@pytest.mark.parametrize("after, size", [(0, 10), (2, 0)])
def test_a_bad_setting_is_refused(after, size):
    with pytest.raises(ValueError):
        Doorkeeper(after=after, size=size)
