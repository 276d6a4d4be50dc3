"""``storage.search`` on both backends: events stored before migration 032 are indexed
by the bounded backfill (newest first, redacted ones left out, then done for good), and
an event leaves the index (FTS5 table or GIN index alike) when it is unindexed."""

from __future__ import annotations

from typing import Any

import orjson

from peyvand.storage.database import Database
from peyvand.storage.search import SearchQuery, SearchStore, unindex_events
from peyvand.types import EventID, RoomID

ROOM = RoomID("!room:here.test")
KEYS = ("content.body", "content.name", "content.topic")


async def _insert(
    db: Database, stream: int, event_type: str, content: dict[str, Any], redacted: bool = False
) -> EventID:
    event_id = EventID(f"$e{stream}")
    pdu = {"type": event_type, "room_id": ROOM, "sender": "@a:here.test", "content": content}
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
        " origin_server_ts, state_group, pdu, redacted_by)"
        " VALUES ($1, $2, $3, $4, '@a:here.test', 2, 1000, 1, $5, $6)",
        stream,
        event_id,
        ROOM,
        event_type,
        orjson.dumps(pdu).decode(),
        "$redaction" if redacted else None,
    )
    return event_id


async def _found(store: SearchStore, *terms: str) -> list[EventID]:
    query = SearchQuery(terms, (ROOM,), KEYS)
    return [hit.event_id for hit in await store.search(query, "recent", position=None, limit=50)]


async def test_earlier_events_are_indexed_in_bounded_batches(database: Database) -> None:
    store = SearchStore(database)
    # A fresh database has nothing stored before the index: nothing to do.
    assert not await store.index_earlier_events(2)

    english = await _insert(database, 1, "m.room.message", {"body": "Hello lemur"})
    persian = await _insert(database, 2, "m.room.message", {"body": "کتاب‌ها lemur"})  # noqa: RUF001
    await _insert(database, 3, "m.room.message", {"body": "redacted lemur"}, redacted=True)
    await _insert(database, 4, "m.room.member", {"membership": "join", "body": "lemur"})
    topic = await _insert(database, 5, "m.room.topic", {"topic": "lemur topic"})
    await database.execute("INSERT INTO event_search_backfill (next_position) VALUES (5)")

    assert await store.index_earlier_events(2)
    assert await _found(store, "lemur") == [topic]
    assert await store.index_earlier_events(2)
    assert not await store.index_earlier_events(2)
    assert await database.fetchval("SELECT COUNT(*) FROM event_search_backfill") == 0
    assert await _found(store, "lemur") == [topic, persian, english]
    assert await _found(store, "کتاب") == [persian]
    assert await store.count(SearchQuery(("lemur",), (ROOM,), KEYS), at_most=10) == 3
    assert await store.count(SearchQuery(("lemur",), (ROOM,), KEYS), at_most=2) == 2
    # Done for good: nothing indexed twice.
    assert not await store.index_earlier_events(2)

    async with database.transaction() as txn:
        await unindex_events(txn, [persian])
    assert await _found(store, "lemur") == [topic, english]
    assert await _found(store, "کتاب") == []
