"""PushActionStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.storage.push_actions import PushActionRow, PushActionStore, ReadUpTo, UnreadCount
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")
QUIET_ROOM = RoomID("!quiet:localhost")


async def write(database: Database, added: list[PushActionRow], read: list[ReadUpTo]) -> None:
    """One write in its own transaction, as a group commit would run it."""
    async with database.transaction() as txn:
        await PushActionStore(database).write(txn, added, read)


def action(
    user_id: UserID, room_id: RoomID, ordering: int, *, highlight: bool = False
) -> PushActionRow:
    return PushActionRow(user_id, room_id, ordering, EventID(f"$e{ordering}"), highlight, "main")


async def test_counts_are_per_room_after_each_read_position(database: Database) -> None:
    store = PushActionStore(database)
    await write(
        database,
        [
            action(ALICE, ROOM, 1),
            action(ALICE, ROOM, 2, highlight=True),
            action(ALICE, ROOM, 3),
            action(ALICE, OTHER_ROOM, 4, highlight=True),
            action(BOB, ROOM, 3),
        ],
        [],
    )
    counts = await store.get_unread_counts(ALICE, {ROOM: 0, OTHER_ROOM: 0, QUIET_ROOM: 0})
    assert counts == {ROOM: UnreadCount(3, 1), OTHER_ROOM: UnreadCount(1, 1)}
    # Read up to 2 in ROOM, and past everything in OTHER_ROOM: those rooms are absent.
    counts = await store.get_unread_counts(ALICE, {ROOM: 2, OTHER_ROOM: 4})
    assert counts == {ROOM: UnreadCount(1, 0)}
    assert await store.get_unread_counts(BOB, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}
    assert await store.get_unread_counts(ALICE, {}) == {}


async def test_many_rooms_are_counted_in_chunks(database: Database) -> None:
    store = PushActionStore(database)
    rooms = [RoomID(f"!r{i}:localhost") for i in range(1_201)]
    await write(database, [action(ALICE, room, i + 1) for i, room in enumerate(rooms)], [])
    counts = await store.get_unread_counts(ALICE, dict.fromkeys(rooms, 0))
    assert len(counts) == len(rooms)
    assert set(counts.values()) == {UnreadCount(1, 0)}


async def test_read_ranges_are_deleted_and_writes_are_idempotent(database: Database) -> None:
    store = PushActionStore(database)
    rows = [action(ALICE, ROOM, n) for n in (1, 2, 3)] + [action(BOB, ROOM, 2)]
    await write(database, rows, [])
    # Writing the same rows again keeps one of each; a read range in the same write
    # applies after the additions.
    await write(database, rows, [ReadUpTo(ALICE, ROOM, 1)])
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(2, 0)}
    await store.delete_read([ReadUpTo(ALICE, ROOM, 2), ReadUpTo(ALICE, OTHER_ROOM, 9)])
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}
    # Other users' rows stay.
    assert await store.get_unread_counts(BOB, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}
    await write(database, [], [])
