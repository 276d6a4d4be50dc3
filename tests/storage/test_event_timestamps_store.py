"""EventTimestampStore on both backends: a room's events from a timestamp, inclusive,
either way, the closest first with ties by depth then stream position; other rooms' events
never answer."""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.storage.event_timestamps import EventTimestampStore
from peyvand.types import RoomID

ROOM = RoomID("!room:test")


async def _event(
    db: Database, stream: int, event_id: str, ts: int, depth: int, room: str = ROOM
) -> None:
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
        " origin_server_ts, state_group, pdu) VALUES ($1, $2, $3, 'm.room.message', '@a:test',"
        " $4, $5, 0, '{}')",
        stream,
        event_id,
        room,
        depth,
        ts,
    )


async def test_closest_events_either_way(database: Database) -> None:
    store = EventTimestampStore(database)
    await _event(database, 1, "$a", ts=100, depth=1)
    await _event(database, 2, "$b", ts=200, depth=2)
    # Same timestamp: the deeper one is later; at equal depth, the later stream position.
    await _event(database, 3, "$c", ts=200, depth=3)
    await _event(database, 4, "$d", ts=200, depth=3)
    await _event(database, 5, "$e", ts=300, depth=4)
    await _event(database, 6, "$elsewhere", ts=250, depth=1, room="!other:test")

    forwards = await store.closest_event_ids(ROOM, 200, forwards=True, limit=10)
    assert forwards == ["$b", "$c", "$d", "$e"]
    backwards = await store.closest_event_ids(ROOM, 200, forwards=False, limit=10)
    assert backwards == ["$d", "$c", "$b", "$a"]
    assert await store.closest_event_ids(ROOM, 201, forwards=True, limit=1) == ["$e"]
    assert await store.closest_event_ids(ROOM, 299, forwards=False, limit=1) == ["$d"]
    assert await store.closest_event_ids(ROOM, 301, forwards=True, limit=5) == []
    assert await store.closest_event_ids(ROOM, 99, forwards=False, limit=5) == []
