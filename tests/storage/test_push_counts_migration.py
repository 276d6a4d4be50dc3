"""Migration 029 converts every event_push_actions row into a push_user_exceptions row:
a database upgraded from 028 gives each user, for every receipt position, exactly the
unread counts the old rows gave (the rows after the receipt), on SQLite and PostgreSQL;
rows whose event is gone are dropped, and new events count on top of the converted ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.storage.migrations import available_migrations, run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.push_actions import (
    PushActionStore,
    RoomNotification,
    UnreadCount,
    UserException,
)
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, RoomID, UserID

_BEFORE = 28

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
DAVE = UserID("@dave:localhost")
CAROL = UserID("@carol:elsewhere")
ERIN = UserID("@erin:elsewhere")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")


@dataclass(frozen=True, slots=True)
class OldRow:
    """An event_push_actions row as the code before 029 wrote it."""

    user_id: UserID
    room_id: RoomID
    stream_ordering: int
    highlight: bool = False
    thread_id: str = "main"


def event(ordering: int) -> EventID:
    return EventID(f"$e{ordering}")


# Who sent each stored event (ordering -> room, sender); $e10 is not stored (purged).
_EVENTS: dict[int, tuple[RoomID, UserID]] = {
    1: (ROOM, CAROL),
    2: (ROOM, ERIN),
    3: (ROOM, CAROL),
    4: (OTHER_ROOM, CAROL),
    5: (ROOM, ERIN),
    6: (ROOM, CAROL),
    7: (OTHER_ROOM, ERIN),
    8: (ROOM, CAROL),
    9: (OTHER_ROOM, CAROL),
}
_MISSING = 10
_OLD_ROWS = [
    OldRow(ALICE, ROOM, 1),
    OldRow(ALICE, ROOM, 2, highlight=True),
    OldRow(ALICE, ROOM, 3, thread_id="$e1"),
    OldRow(ALICE, ROOM, 5, highlight=True),
    OldRow(ALICE, ROOM, 6),
    OldRow(ALICE, ROOM, 8, highlight=True, thread_id="$e1"),
    OldRow(ALICE, ROOM, _MISSING, highlight=True),
    OldRow(ALICE, OTHER_ROOM, 4),
    OldRow(ALICE, OTHER_ROOM, 7, highlight=True),
    OldRow(ALICE, OTHER_ROOM, 9),
    OldRow(BOB, ROOM, 3),
    OldRow(BOB, ROOM, 6, highlight=True),
    OldRow(BOB, ROOM, 8),
    OldRow(BOB, OTHER_ROOM, 9, highlight=True),
    OldRow(DAVE, OTHER_ROOM, 7),
]
_USERS = (ALICE, BOB, DAVE)
_ROOMS = (ROOM, OTHER_ROOM)


def old_count(
    user_id: UserID, room_id: RoomID, read_up_to: int, ignored: frozenset[UserID] = frozenset()
) -> UnreadCount | None:
    """What the old rows (those whose event is still stored) say: the user's rows in the
    room after the receipt, leaving out ``ignored`` senders; None if there are none."""
    rows = [
        row
        for row in _OLD_ROWS
        if row.user_id == user_id
        and row.room_id == room_id
        and row.stream_ordering > read_up_to
        and row.stream_ordering in _EVENTS
        and _EVENTS[row.stream_ordering][1] not in ignored
    ]
    if not rows:
        return None
    return UnreadCount(len(rows), sum(row.highlight for row in rows))


@pytest.fixture
async def upgraded(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteDatabase | PostgresDatabase]:
    """A database built at migration 028, holding ``_EVENTS`` and ``_OLD_ROWS``, then
    brought up to date by the migration runner."""
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "upgrade.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("upgrade"))
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
                " origin_server_ts, state_group, pdu)"
                " VALUES ($1, $2, $3, 'm.room.message', $4, $1, 0, 0, '{}')",
                [
                    (ordering, event(ordering), room_id, sender)
                    for ordering, (room_id, sender) in _EVENTS.items()
                ],
            )
            await txn.executemany(
                "INSERT INTO event_push_actions"
                " (user_id, room_id, stream_ordering, event_id, highlight, thread_id)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (
                        row.user_id,
                        row.room_id,
                        row.stream_ordering,
                        event(row.stream_ordering),
                        int(row.highlight),
                        row.thread_id,
                    )
                    for row in _OLD_ROWS
                ],
            )
        newer = [v for v, _, _ in available_migrations(db.dialect) if v > _BEFORE]
        assert await run_migrations(db) == newer
        yield db
    finally:
        await db.close()


async def test_every_user_keeps_the_old_counts_at_every_receipt(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    store = PushActionStore(upgraded)
    checked = 0
    for user_id in _USERS:
        for read_up_to in range(_MISSING + 1):
            counts = await store.get_unread_counts(
                user_id, {room_id: read_up_to for room_id in _ROOMS}
            )
            expected = {
                room_id: count
                for room_id in _ROOMS
                if (count := old_count(user_id, room_id, read_up_to)) is not None
            }
            assert counts == expected, (user_id, read_up_to)
            checked += len(expected)
    # The cases above include highlights and counts of several rows.
    assert checked > 30
    assert await store.get_unread_counts(ALICE, {ROOM: 0, OTHER_ROOM: 5}) == {
        ROOM: UnreadCount(6, 3),
        OTHER_ROOM: UnreadCount(2, 1),
    }


async def test_the_old_table_is_gone_and_rows_keep_sender_and_thread(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if upgraded.dialect == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert "event_push_actions" not in {row[0] for row in await upgraded.fetch(tables)}
    assert await upgraded.fetchval("SELECT COUNT(*) FROM push_room_notifications") == 0

    rows = await upgraded.fetch(
        "SELECT user_id, room_id, stream_ordering, event_id, sender, thread_id, notify,"
        " highlight, notify_seq, highlight_seq FROM push_user_exceptions"
        " ORDER BY user_id, room_id, stream_ordering"
    )
    kept = sorted(
        (row for row in _OLD_ROWS if row.stream_ordering in _EVENTS),
        key=lambda row: (row.user_id, row.room_id, row.stream_ordering),
    )
    columns = ("user_id", "room_id", "stream_ordering", "event_id", "sender", "thread_id")
    assert [tuple(r[column] for column in columns) for r in rows] == [
        (
            row.user_id,
            row.room_id,
            row.stream_ordering,
            event(row.stream_ordering),
            _EVENTS[row.stream_ordering][1],
            row.thread_id,
        )
        for row in kept
    ]
    assert [(r["notify"], r["highlight"]) for r in rows] == [
        (1, int(row.highlight)) for row in kept
    ]
    # The running sums are those the store's inserts would have computed.
    sums: dict[tuple[str, str], tuple[int, int]] = {}
    for r in rows:
        notify, highlight = sums.get((r["user_id"], r["room_id"]), (0, 0))
        sums[(r["user_id"], r["room_id"])] = (notify + 1, highlight + int(r["highlight"]))
        assert (r["notify_seq"], r["highlight_seq"]) == sums[(r["user_id"], r["room_id"])]


async def test_ignored_senders_are_left_out_of_converted_rows(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    store = PushActionStore(upgraded)
    ignored = frozenset({ERIN})
    for read_up_to in (0, 2, 5, 7):
        counts = await store.get_unread_counts(
            ALICE, {room_id: read_up_to for room_id in _ROOMS}, ignored
        )
        expected = {
            room_id: count
            for room_id in _ROOMS
            if (count := old_count(ALICE, room_id, read_up_to, ignored)) is not None
        }
        assert counts == expected, read_up_to
    assert await store.get_unread_counts(ALICE, {ROOM: 0, OTHER_ROOM: 0}, ignored) == {
        ROOM: UnreadCount(4, 1),
        OTHER_ROOM: UnreadCount(2, 0),
    }


async def test_new_events_count_on_top_of_converted_rows(
    upgraded: SqliteDatabase | PostgresDatabase,
) -> None:
    store = PushActionStore(upgraded)
    # After the upgrade: $e11 notifies the room, mentions alice (an exception adding a
    # highlight) and does not notify bob (an exception taking the notification away).
    async with upgraded.transaction() as txn:
        await store.write(
            txn,
            [RoomNotification(ROOM, 11, EventID("$e11"), CAROL, "main", False)],
            [
                UserException(ALICE, ROOM, 11, EventID("$e11"), CAROL, "main", 0, 1),
                UserException(BOB, ROOM, 11, EventID("$e11"), CAROL, "main", -1, 0),
            ],
            [],
        )
    for read_up_to in (0, 3, 6, 8, 10):
        for user_id, notify, highlight in ((ALICE, 1, 1), (BOB, 0, 0), (DAVE, 1, 0)):
            old = old_count(user_id, ROOM, read_up_to) or UnreadCount(0, 0)
            expected = UnreadCount(old.notifications + notify, old.highlights + highlight)
            counts = await store.get_unread_counts(user_id, {ROOM: read_up_to})
            assert counts.get(ROOM, UnreadCount(0, 0)) == expected, (user_id, read_up_to)
    assert await store.get_unread_counts(ALICE, {ROOM: 3}) == {ROOM: UnreadCount(4, 3)}
