"""Migration 039 on a database holding room-wide read marks from before it, on SQLite
and PostgreSQL: each becomes a whole-room mark (thread ''), so every count stays what
it was, and marks of one thread can be added beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.migrations import available_migrations, run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.push_actions import PushActionStore, ReadUpTo, UnreadCount
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import RoomID, UserID

_VERSION = 39
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
ROOM = RoomID("!room:localhost")


@pytest.fixture
async def upgraded(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteDatabase | PostgresDatabase]:
    """A database built up to the migration before 039 holding bob's three notifying
    main-timeline messages and alice's room-wide read mark at the second, then brought
    up to date by the migration runner."""
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "upgrade.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("read_marks"))
    try:
        await db.executescript(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        for version, name, sql in available_migrations(db.dialect):
            if version < _VERSION:
                await db.executescript(
                    f"BEGIN;\n{sql}\nINSERT INTO schema_migrations (version, name)"
                    f" VALUES ({version}, '{name}');\nCOMMIT;"
                )
        async with db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO push_room_notifications (room_id, stream_ordering, event_id,"
                " sender, thread_id, highlight, notify_seq, highlight_seq, thread_notify_seq,"
                " thread_highlight_seq) VALUES ($1, $2, $3, $4, 'main', 0, $2, 0, $2, 0)",
                [(ROOM, n, f"$e{n}", BOB) for n in (1, 2, 3)],
            )
            await txn.execute(
                "INSERT INTO push_read_marks (user_id, room_id, stream_ordering)"
                " VALUES ($1, $2, 2)",
                ALICE,
                ROOM,
            )
        newer = [v for v, _, _ in available_migrations(db.dialect) if v >= _VERSION]
        assert await run_migrations(db) == newer
        yield db
    finally:
        await db.close()


async def test_room_wide_marks_are_kept_as_whole_room_marks(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    rows = await upgraded.fetch(
        "SELECT user_id, room_id, thread_id, stream_ordering FROM push_read_marks"
    )
    assert [
        (r["user_id"], r["room_id"], r["thread_id"], int(r["stream_ordering"])) for r in rows
    ] == [(ALICE, ROOM, "", 2)]
    store = PushActionStore(upgraded)
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}
    # A mark in a thread goes beside it, and reads that thread only.
    async with upgraded.transaction() as txn:
        await store.write(txn, [], [], [ReadUpTo(ALICE, ROOM, 3, "$root")])
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}
    async with upgraded.transaction() as txn:
        await store.write(txn, [], [], [ReadUpTo(ALICE, ROOM, 3, "main")])
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {}
