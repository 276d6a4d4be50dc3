"""PartialStateRooms (services/federation/partial_state.py): a request waiting for a
partial-state room's full state wakes when the resync completes it, and gives up with
503 ``M_UNKNOWN`` after the bounded wait."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from peyvand.errors import MatrixError
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.federation.partial_state_resync import PartialStateResync
from peyvand.storage.database import Database
from peyvand.storage.partial_state import PartialStateRoom, PartialStateStore
from peyvand.types import EventID, RoomID, ServerName

ROOM = PartialStateRoom(
    RoomID("!room:a.test"), EventID("$join"), ServerName("a.test"), (ServerName("a.test"),)
)


async def test_waiters_wake_when_the_state_is_complete() -> None:
    rooms = PartialStateRooms(wait_seconds=5)
    rooms.mark(ROOM)
    assert rooms.is_partial(ROOM.room_id)
    assert rooms.servers(ROOM.room_id) == {ServerName("a.test")}
    waiter = asyncio.create_task(rooms.wait_for_full_state(ROOM.room_id))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    rooms.completed(ROOM.room_id)
    async with asyncio.timeout(1):
        await waiter
    assert not rooms.is_partial(ROOM.room_id)
    assert rooms.servers(ROOM.room_id) == frozenset()
    await rooms.wait_for_full_state(ROOM.room_id)  # at once now


async def test_the_wait_is_bounded() -> None:
    rooms = PartialStateRooms(wait_seconds=0.1)
    rooms.mark(ROOM)
    with pytest.raises(MatrixError) as raised:
        await rooms.wait_for_full_state(ROOM.room_id)
    assert (raised.value.status, raised.value.errcode) == (503, "M_UNKNOWN")


async def test_several_writers_refuse_to_start_with_a_partial_room(database: Database) -> None:
    """Issue 21: several event writers join with the full state and complete no room, so
    a room still partial from one writer's time refuses their start."""
    store = PartialStateStore(database)

    class Stored:
        """The state service's events: the one join stored."""

        async def get_event(self, event_id: str) -> object | None:
            return object() if event_id == ROOM.join_event_id else None

    resync = PartialStateResync(
        ServerName("here.test"), PartialStateRooms(), store, cast(Any, None), cast(Any, Stored()),
        cast(Any, None), cast(Any, None), lambda _position, _users: None,
    )  # fmt: skip
    await resync.refuse_partial_rooms()
    # A mark whose join was never stored is dropped; a stored one refuses.
    never = PartialStateRoom(
        RoomID("!never:a.test"), EventID("$never"), ROOM.joined_via, ROOM.servers
    )
    await store.add_room(never, 0)
    await resync.refuse_partial_rooms()
    assert await store.rooms() == []
    await store.add_room(ROOM, 0)
    with pytest.raises(RuntimeError, match="1 rooms joined with partial state"):
        await resync.refuse_partial_rooms()
