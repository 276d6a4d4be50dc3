"""StreamTracker (issue 21): positions finished in any order are announced in position
order, only up to the lowest position still in flight."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.services.timeline.stream_tracker import Lane, StreamTracker


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


@given(st.data(), st.integers(min_value=1, max_value=40), st.integers(1, 4))
def test_releases_follow_positions_whatever_the_finishing_order(
    data: st.DataObject, count: int, writers: int
) -> None:
    tracker: StreamTracker[int] = StreamTracker(
        5, Lane(data.draw(st.integers(0, writers - 1)), writers)
    )
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


@given(st.integers(min_value=1, max_value=7), st.data(), st.integers(-1000, 1000))
def test_a_lane_holds_one_residue_and_skips_none_of_it(
    count: int, data: st.DataObject, position: int
) -> None:
    lane = Lane(data.draw(st.integers(0, count - 1)), count)
    above, below = lane.first_above(position), lane.first_below(position)
    assert lane.owns(above) and lane.owns(below)
    assert position < above <= position + count
    assert position - count <= below < position


def test_a_lane_outside_its_writers_is_refused() -> None:
    with pytest.raises(ValueError, match="lane"):
        Lane(2, 2)


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=60))
def test_writers_in_lanes_never_share_a_position(steps: list[tuple[int, bool]]) -> None:
    """Three writers allocating in any interleaving, each hearing the others' positions or
    not: every position is handed out once, each writer's in increasing order and above
    everything it heard."""
    trackers: list[StreamTracker[None]] = [StreamTracker(7, Lane(i, 3)) for i in range(3)]
    handed: list[int] = []
    heard = [7, 7, 7]
    for writer, hears in steps:
        tracker = trackers[writer]
        if hears and handed:
            tracker.heard(max(handed))
            heard[writer] = max(handed)
        position = tracker.allocate()
        assert position % 3 == writer
        assert position > heard[writer]
        assert not handed or position not in handed
        handed.append(position)
        tracker.finished(position)
        assert tracker.persisted_upto == position
    for writer in range(3):
        own = [p for p in handed if p % 3 == writer]
        assert own == sorted(own)


def test_an_idle_writer_is_past_what_it_heard_a_busy_one_is_not() -> None:
    tracker: StreamTracker[str] = StreamTracker(10, Lane(1, 2))
    first = tracker.allocate()
    assert first == 11
    tracker.heard(40)
    assert tracker.persisted_upto == 10  # 11 is still in flight
    second = tracker.allocate()
    assert second == 41
    assert tracker.finished(second, "b") == []
    assert tracker.finished(first, "a") == ["a", "b"]
    assert tracker.persisted_upto == 41
    tracker.heard(50)
    assert tracker.persisted_upto == 50
    assert tracker.allocate() == 51


def test_clear_below_a_position_means_nothing_in_flight_up_to_it() -> None:
    tracker: StreamTracker[str] = StreamTracker(10, Lane(1, 2))
    assert tracker.clear_below(100)
    busy = tracker.allocate()
    assert busy == 11
    assert tracker.clear_below(10) and not tracker.clear_below(11)
    tracker.finished(busy)
    assert tracker.clear_below(100)
