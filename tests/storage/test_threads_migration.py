"""Migration 033 on a database holding events and exceptions from before it, on SQLite
and PostgreSQL: every thread gets its row (latest unredacted reply) and its participants,
and every exception its running sums within its thread, as the inserts compute them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.migrations import available_migrations, run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.storage.threads import ThreadRow, ThreadStore
from peyvand.types import EventID, RoomID, UserID

_BEFORE = 32
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")

# position -> (room, sender, thread root or None, redacted)
_EVENTS: dict[int, tuple[RoomID, UserID, str | None, bool]] = {
    1: (ROOM, ALICE, None, False),
    2: (ROOM, BOB, "$e1", False),
    3: (OTHER_ROOM, BOB, None, False),
    4: (ROOM, ALICE, "$e1", False),
    5: (OTHER_ROOM, ALICE, "$e3", False),
    6: (ROOM, BOB, "$e1", True),
    7: (OTHER_ROOM, BOB, "$e3", True),
}
# Alice's exceptions: (position, thread, notify, highlight).
_EXCEPTIONS = [(2, "$e1", 0, 1), (3, "main", 1, 0), (4, "$e1", -1, 0), (6, "$e1", 1, 1)]


def event(ordering: int) -> EventID:
    return EventID(f"$e{ordering}")


@pytest.fixture
async def upgraded(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteDatabase | PostgresDatabase]:
    """A database built up to migration 032 holding ``_EVENTS`` and ``_EXCEPTIONS``,
    then brought up to date by the migration runner."""
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "upgrade.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("threads"))
    try:
        await db.executescript(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        for version, name, sql in available_migrations(db.dialect):
            if version <= _BEFORE:
                await db.executescript(
                    f"BEGIN;\n{sql}\nINSERT INTO schema_migrations (version, name)"
                    f" VALUES ({version}, '{name}');\nCOMMIT;"
                )
        async with db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
                " origin_server_ts, state_group, relates_to, rel_type, pdu, redacted_by)"
                " VALUES ($1, $2, $3, 'm.room.message', $4, $1, 0, 0, $5, $6, '{}', $7)",
                [
                    (
                        n,
                        event(n),
                        room,
                        sender,
                        root,
                        "m.thread" if root else None,
                        "$redaction" if redacted else None,
                    )
                    for n, (room, sender, root, redacted) in _EVENTS.items()
                ],
            )
            await txn.executemany(
                "INSERT INTO push_user_exceptions (user_id, room_id, stream_ordering, event_id,"
                " sender, thread_id, notify, highlight, notify_seq, highlight_seq)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0)",
                [
                    (ALICE, ROOM, n, event(n), BOB, thread, notify, highlight)
                    for n, thread, notify, highlight in _EXCEPTIONS
                ],
            )
        newer = [v for v, _, _ in available_migrations(db.dialect) if v > _BEFORE]
        assert await run_migrations(db) == newer
        yield db
    finally:
        await db.close()


async def test_threads_and_participants_from_stored_events(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    store = ThreadStore(upgraded)
    # The redacted replies count for nothing: $e3's only reply besides 7 is 5.
    assert await store.get_threads(ROOM, before=None, limit=10) == [
        ThreadRow(EventID("$e1"), event(4), 4)
    ]
    assert await store.get_threads(OTHER_ROOM, before=None, limit=10) == [
        ThreadRow(EventID("$e3"), event(5), 5)
    ]
    # Bob replied in $e1; alice sent its root (and a reply); bob sent $e3's root.
    assert [
        r.thread_id for r in await store.get_threads(ROOM, before=None, limit=9, participant=BOB)
    ] == ["$e1"]
    assert [
        r.thread_id
        for r in await store.get_threads(OTHER_ROOM, before=None, limit=9, participant=BOB)
    ] == ["$e3"]
    assert [
        r.thread_id
        for r in await store.get_threads(OTHER_ROOM, before=None, limit=9, participant=ALICE)
    ] == ["$e3"]
    nobody = UserID("@nobody:localhost")
    assert await store.get_threads(ROOM, before=None, limit=9, participant=nobody) == []


async def test_exceptions_get_running_sums_per_thread(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    rows = await upgraded.fetch(
        "SELECT stream_ordering, thread_notify_seq, thread_highlight_seq"
        " FROM push_user_exceptions ORDER BY stream_ordering"
    )
    assert [tuple(int(v) for v in (r[0], r[1], r[2])) for r in rows] == [
        (2, 0, 1),
        (3, 1, 0),
        (4, -1, 1),
        (6, 0, 2),
    ]
