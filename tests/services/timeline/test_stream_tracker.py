"""StreamTracker (issue 21): positions finished in any order are announced in position
order, only up to the lowest position still in flight."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.services.timeline.stream_tracker import StreamTracker


def test_in_order_each_position_releases_its_own_wake() -> None:
    tracker: StreamTracker[str] = StreamTracker(10)
    first, second = tracker.allocate(), tracker.allocate()
    assert (first, second) == (11, 12)
    assert tracker.finished(first, "a") == ["a"]
    assert tracker.persisted_upto == 11
    assert tracker.finished(second, "b") == ["b"]
    assert tracker.persisted_upto == 12
    assert tracker.in_flight == 0


def test_a_higher_position_waits_for_a_lower_one() -> None:
    tracker: StreamTracker[str] = StreamTracker()
    low, high, higher = tracker.allocate(), tracker.allocate(), tracker.allocate()
    assert tracker.finished(higher, "c") == []
    assert tracker.finished(high, "b") == []
    assert tracker.persisted_upto == 0
    assert tracker.in_flight == 1
    assert tracker.finished(low, "a") == ["a", "b", "c"]
    assert tracker.persisted_upto == 3


def test_an_abandoned_position_releases_what_waited_behind_it() -> None:
    tracker: StreamTracker[str] = StreamTracker()
    abandoned, committed = tracker.allocate(), tracker.allocate()
    assert tracker.finished(committed, "b") == []
    assert tracker.finished(abandoned) == ["b"]
    assert tracker.persisted_upto == committed


def test_a_position_finishes_once() -> None:
    tracker: StreamTracker[str] = StreamTracker()
    low, high = tracker.allocate(), tracker.allocate()
    tracker.finished(high)
    with pytest.raises(ValueError, match="not in flight"):
        tracker.finished(high)
    tracker.finished(low)
    with pytest.raises(ValueError, match="not in flight"):
        tracker.finished(low)
    with pytest.raises(ValueError, match="not in flight"):
        tracker.finished(high + 1)  # never allocated


def test_start_after_only_before_allocating() -> None:
    tracker: StreamTracker[str] = StreamTracker()
    tracker.start_after(41)
    assert tracker.persisted_upto == 41
    assert tracker.allocate() == 42
    with pytest.raises(RuntimeError):
        tracker.start_after(100)


@given(st.data(), st.integers(min_value=1, max_value=40))
def test_releases_follow_positions_whatever_the_finishing_order(
    data: st.DataObject, count: int
) -> None:
    tracker: StreamTracker[int] = StreamTracker(5)
    positions = [tracker.allocate() for _ in range(count)]
    order = data.draw(st.permutations(positions))
    with_wake = data.draw(st.sets(st.sampled_from(positions)))
    released: list[int] = []
    unfinished = set(positions)
    for position in order:
        released += tracker.finished(position, position if position in with_wake else None)
        unfinished.discard(position)
        upto = min(unfinished, default=positions[-1] + 1) - 1
        assert tracker.persisted_upto == upto
        # Exactly the wakes at or below the bound are out, in position order.
        assert released == sorted(p for p in with_wake if p <= upto)
        assert tracker.in_flight == len(unfinished)
