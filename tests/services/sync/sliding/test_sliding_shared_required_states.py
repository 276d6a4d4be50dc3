"""SharedRequiredStates: equal ``required_state`` sets of requests become one object, so
a woken long-poll compares each room in view with what it was sent by identity."""

from __future__ import annotations

import gc

from peyvand.services.sync.sliding.ext_request import ExtensionsRequest
from peyvand.services.sync.sliding.request import (
    ListConfig,
    RoomParams,
    SharedRequiredStates,
    SlidingSyncRequest,
)
from peyvand.types import RoomID

ROOM = RoomID("!room:example.org")


def _request(pairs: set[tuple[str, str]], limit: int = 1) -> SlidingSyncRequest:
    params = RoomParams(frozenset(pairs), limit)
    return SlidingSyncRequest(
        conn_id="c",
        lists={"all": ListConfig(((0, 19),), params)},
        room_subscriptions={ROOM: RoomParams(frozenset(pairs), 5, True)},
        extensions=ExtensionsRequest(),
    )


def test_equal_sets_of_two_requests_are_one_object() -> None:
    shared = SharedRequiredStates()
    pairs = {("m.room.name", ""), ("m.room.member", "$LAZY")}
    first, second = shared.request(_request(pairs)), shared.request(_request(set(pairs)))
    held = first.lists["all"].params.required_state
    assert held == frozenset(pairs)
    assert second.lists["all"].params.required_state is held
    assert first.room_subscriptions[ROOM].required_state is held
    assert second.room_subscriptions[ROOM].required_state is held
    # Nothing else of the request changes.
    assert second.room_subscriptions[ROOM] == RoomParams(frozenset(pairs), 5, True)
    assert second.lists["all"].ranges == ((0, 19),)
    assert second.lists["all"].params.timeline_limit == 1


def test_unequal_sets_stay_apart() -> None:
    shared = SharedRequiredStates()
    one = shared.request(_request({("m.room.name", "")})).lists["all"].params.required_state
    other = shared.request(_request({("m.room.topic", "")})).lists["all"].params.required_state
    assert one == {("m.room.name", "")} and other == {("m.room.topic", "")}
    assert one is not other


def test_sets_are_held_weakly() -> None:
    shared = SharedRequiredStates()
    request = shared.request(_request({("m.room.name", "")}))
    assert len(shared) == 1
    del request
    gc.collect()
    assert len(shared) == 0
