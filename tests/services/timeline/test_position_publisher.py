"""EventPositionPublisher with several event writers (issue 21): a writer publishes the
highest position it heard of the others once nothing of its own is in flight at or below
it, even while it is busy above it, so the others are not held back by it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from peyvand.services.timeline.event_follower import CHANNEL, EventPositionPublisher
from peyvand.services.timeline.stream_tracker import Lane, StreamTracker
from peyvand.storage.bus import LocalBus


async def test_a_busy_writer_is_past_what_it_heard_below_its_flight() -> None:
    bus = LocalBus("w2")
    published: list[int] = []
    bus.subscribe(CHANNEL, lambda payload, _sender: published.append(payload["p"]))
    tracker: StreamTracker[Any] = StreamTracker(10, Lane(1, 2))
    publisher = EventPositionPublisher(
        bus, cast(Any, None), "w2", lambda: 10, tracker, cast(Any, None), ["w1", "w2"]
    )
    in_flight = tracker.allocate()  # 11, a message of w2's waiting in its group commit
    publisher._on_message({"p": 8}, "w1")  # below 11: w2 is past it, and past 10
    tracker.heard(20)  # heard, but 11 is still in flight below it
    publisher._on_message({"p": 20}, "w1")
    await asyncio.sleep(0)
    assert published == [10]  # where it started: nothing higher while 11 is in flight
    later = tracker.allocate()
    assert later == 21
    tracker.finished(in_flight)
    publisher.advanced(in_flight)  # 21 still in flight, above 20: w2 is at 20
    await asyncio.sleep(0)
    assert published == [10, 20]
