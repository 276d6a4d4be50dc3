"""The notifications listing's statements (``storage.notifications``) read by index on
both backends: every statement it runs is explained, and none scans a whole table."""

from __future__ import annotations

from typing import Any

from peyvand.storage.database import Database, Row
from peyvand.storage.notifications import NotificationStore
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:test")
BOB = UserID("@bob:test")
ROOMS = [RoomID(f"!room{i}:test") for i in range(3)]


class Recording:
    """A database that records the statements it is given."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self.statements.append((sql, args))
        return await self._db.fetch(sql, *args)


async def add_member_events(db: Database) -> None:
    """Alice joined room 0 and left, and joined rooms 1 and 2."""
    rows = [
        (1, "$j0", ROOMS[0], "join"),
        (5, "$l0", ROOMS[0], "leave"),
        (6, "$j1", ROOMS[1], "join"),
        (7, "$j2", ROOMS[2], "join"),
    ]
    for position, event_id, room_id, membership in rows:
        await db.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, state_group, pdu)"
            " VALUES ($1, $2, $3, 'm.room.member', $4, $4, 1, 0, 0, $5)",
            position,
            EventID(event_id),
            room_id,
            ALICE,
            f'{{"content": {{"membership": "{membership}"}}}}',
        )


async def plan(db: Database, sql: str, args: tuple[Any, ...]) -> str:
    if db.dialect == "postgres":
        async with db.transaction() as txn:
            # Tables this small are always scanned when allowed: ask whether an index
            # plan exists at all.
            await txn.execute("SET LOCAL enable_seqscan = off")
            rows = await txn.fetch(f"EXPLAIN {sql}", *args)
        return "\n".join(str(r[0]) for r in rows)
    rows = await db.fetch(f"EXPLAIN QUERY PLAN {sql}", *args)
    return "\n".join(str(r["detail"]) for r in rows)


async def test_listing_reads_by_index(database: Database) -> None:
    await add_member_events(database)
    store = NotificationStore(database, lambda: 7)
    recording = Recording(database)
    store._db = recording  # type: ignore[assignment]

    ranges = await store.joined_ranges(ALICE, before=100)
    assert [(r.room_id, r.joined_at, r.left_at) for r in ranges] == [
        (ROOMS[0], 1, 5),
        (ROOMS[1], 6, 100),
        (ROOMS[2], 7, 100),
    ]
    assert await store.notifications_for_user(ALICE, limit=10, ignored=[BOB]) == []
    assert await store.notifications_for_user(ALICE, after=3, limit=10, oldest_first=True) == []
    assert await store.read_positions(ALICE, ROOMS) == {}

    assert len(recording.statements) >= 6
    for sql, args in recording.statements:
        explained = await plan(database, sql, args)
        if database.dialect == "postgres":
            assert "Seq Scan" not in explained, (sql, explained)
        else:
            scans = [line for line in explained.splitlines() if line.startswith("SCAN ")]
            # Only the subqueries' own results (SCAN r0, SCAN n ...) are scanned.
            assert all(
                not any(t in line for t in ("events", "push_", "receipts")) for line in scans
            ), (sql, explained)
