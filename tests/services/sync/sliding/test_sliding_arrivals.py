"""BumpStamps' arrivals: a room's events after a position are told only when every one
of them is known (the room's newest position before each was held), so a count or page
kept at that position can be brought up to date from them alone (issue 18)."""

from __future__ import annotations

from collections.abc import Sequence

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.sliding.bump_stamps import Arrival, BumpStamps
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID

A, B = RoomID("!a:example.org"), RoomID("!b:example.org")


def event(room_id: RoomID, position: int) -> EventToPersist:
    data = {"type": "m.room.message", "sender": "@bob:example.org", "room_id": room_id}
    pdu = Pdu(data, EventID(f"$e{position}"), ROOM_V12)
    return EventToPersist(pdu, position, 1, None, None, None, None, ())


async def load(
    rooms: Sequence[RoomID], types: Sequence[str] | None, upto: int
) -> dict[RoomID, int]:
    return {A: 10, B: 11}


def positions(found: list[Arrival] | None) -> list[int] | None:
    return None if found is None else [a.position for a in found]


async def test_arrivals_are_told_only_above_a_known_newest_position() -> None:
    stamps = BumpStamps(load, lambda: 100)
    stamps.on_persisted([event(A, 12)])  # A's newest before it was not held: unknown
    assert stamps.arrivals(A, 10, 12) is None
    assert stamps.latest(A, 12, 1) is None
    await stamps.stamps([A, B])  # now held: A at 12, B at 11
    stamps.on_persisted([event(A, 13), event(B, 14), event(A, 15)])
    stamps.on_persisted([event(A, 16)])
    assert positions(stamps.arrivals(A, 12, 16)) == [13, 15, 16]
    assert positions(stamps.arrivals(A, 13, 15)) == [15]
    assert positions(stamps.arrivals(A, 16, 16)) == []
    assert stamps.arrivals(A, 11, 16) is None  # an event of A before 13 is not known
    assert positions(stamps.latest(A, 16, 2)) == [15, 16]
    assert positions(stamps.latest(A, 15, 2)) == [13, 15]
    assert stamps.latest(A, 16, 4) is None
    assert positions(stamps.arrivals(B, 11, 14)) == [14]


async def test_a_late_event_forgets_the_rooms_arrivals() -> None:
    stamps = BumpStamps(load, lambda: 100)
    await stamps.stamps([A])
    stamps.on_persisted([event(A, 20)])
    stamps.on_persisted([event(A, 19)])  # below the newest: not in order
    assert stamps.arrivals(A, 10, 20) is None
    stamps.on_persisted([event(A, 21)])
    assert positions(stamps.arrivals(A, 20, 21)) == [21]
    assert stamps.arrivals(A, 19, 21) is None


async def test_arrivals_kept_per_room_are_bounded_and_say_so() -> None:
    stamps = BumpStamps(load, lambda: 100)
    await stamps.stamps([A])
    stamps.on_persisted([event(A, p) for p in range(20, 60)])
    assert stamps.arrivals(A, 10, 59) is None
    found = positions(stamps.arrivals(A, 50, 59))
    assert found == list(range(51, 60))


async def test_positions_are_as_held_once_a_load_returns() -> None:
    # A room held before a load that another room needed may move during it: the answer
    # is what is held when the load returns, so that the stream position a caller reads
    # right after (the unread counts' ``at``) covers no event of the room beyond it.
    loads: list[Sequence[RoomID]] = []

    async def slow_load(
        rooms: Sequence[RoomID], types: Sequence[str] | None, upto: int
    ) -> dict[RoomID, int]:
        loads.append(rooms)
        if B in rooms:
            stamps.on_persisted([event(A, 12)])  # announced while B loads
        return {A: 10, B: 11}

    stamps = BumpStamps(slow_load, lambda: 100)
    await stamps.stamps([A])  # A held at 10; B not held
    assert await stamps.stamps([A, B]) == {A: 12, B: 11}
    assert loads == [[A], [B]]
