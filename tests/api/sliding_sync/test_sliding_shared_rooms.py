"""What connections hold of their rooms is shared where it is equal (issue 18: memory per
held connection): equal ``SentRoom`` values of any connection are one object, and a
position that changed nothing of a mapping holds its base's."""

from __future__ import annotations

import gc

from peyvand.services.sync.sliding.connections import (
    ConnectionKey,
    ConnectionPosition,
    ConnectionStore,
    SentRoom,
)
from peyvand.types import DeviceID, EventID, RoomID, UserID

ALICE = UserID("@alice:test")
ROOMS = [RoomID(f"!r{i}:test") for i in range(20)]
NAME = ("m.room.name", "")


def key(conn_id: str) -> ConnectionKey:
    return (ALICE, DeviceID("PHONE"), conn_id)


def sent(room: RoomID, position: int) -> SentRoom:
    """As ``rooms.py`` makes them: fresh objects, equal for equal answers."""
    return SentRoom(
        position,
        "join",
        frozenset({("m.room.name", ""), ("m.room.member", "$LAZY")}),
        {NAME: EventID(f"$name-{room}"), ("m.room.member", "@bob:test"): EventID(f"$m-{room}")},
        EventID(f"$name-{room}"),
        None,
        ((2, 0), (UserID("@bob:test"),)),
        1,
    )


def position(at: int) -> ConnectionPosition:
    return ConnectionPosition({r: sent(r, at) for r in ROOMS}, {"all": b"d" * 16})


def test_connections_answered_alike_hold_one_object_per_room() -> None:
    store = ConnectionStore()
    numbers = [store.record(key(f"c{i}"), None, position(7)) for i in range(3)]
    held = [store.resume(key(f"c{i}"), n) for i, n in enumerate(numbers)]
    for room in ROOMS:
        assert held[0].rooms[room] is held[1].rooms[room] is held[2].rooms[room]
    # Another token: equal neither to them nor shared with them.
    later = store.resume(key("c3"), store.record(key("c3"), None, position(8)))
    assert later.rooms[ROOMS[0]] is not held[0].rooms[ROOMS[0]]
    assert later.rooms[ROOMS[0]].position == 8


def test_a_position_that_changed_nothing_holds_its_bases_mappings() -> None:
    store = ConnectionStore()
    first = store.record(key("c"), None, position(7))
    base = store.resume(key("c"), first)
    second = store.record(key("c"), first, position(7))
    again = store.resume(key("c"), second)
    assert again.rooms is base.rooms
    assert again.lists is base.lists
    moved = {**base.rooms, ROOMS[0]: sent(ROOMS[0], 9)}
    changed = ConnectionPosition(moved, {"all": b"d" * 16})
    newer = store.resume(key("c"), store.record(key("c"), second, changed))
    assert newer.rooms is not base.rooms
    assert newer.rooms[ROOMS[0]].position == 9
    assert newer.rooms[ROOMS[1]] is base.rooms[ROOMS[1]]
    assert newer.lists is base.lists


def test_a_room_no_position_holds_is_not_kept() -> None:
    store = ConnectionStore(max_connections=1)
    store.record(key("a"), None, position(7))
    store.record(key("b"), None, position(8))  # evicts "a" and its rooms
    gc.collect()
    assert len(store._shared) == len(ROOMS)
