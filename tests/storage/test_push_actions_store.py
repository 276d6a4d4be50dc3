"""PushActionStore contract: the same behaviour on SQLite and PostgreSQL. Counts are
running sums (two look-ups per room), so every test checks them against what a plain
count of the rows after the read position would say."""

from __future__ import annotations

import asyncio
import itertools
import random
from itertools import pairwise

from peyvand.storage.database import Database
from peyvand.storage.push_actions import (
    PushActionStore,
    ReadUpTo,
    RoomNotification,
    UnreadCount,
    UserException,
    forget_events,
)
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
CAROL = UserID("@carol:elsewhere")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")
QUIET_ROOM = RoomID("!quiet:localhost")


async def write(
    database: Database,
    notifications: list[RoomNotification],
    exceptions: list[UserException] | None = None,
    read: list[ReadUpTo] | None = None,
) -> None:
    """One write in its own transaction, as a group commit would run it."""
    async with database.transaction() as txn:
        await PushActionStore(database).write(txn, notifications, exceptions or [], read or [])


def event(ordering: int) -> EventID:
    return EventID(f"$e{ordering}")


def room_row(
    room_id: RoomID,
    ordering: int,
    *,
    highlight: bool = False,
    sender: UserID = CAROL,
    thread_id: str = "main",
) -> RoomNotification:
    return RoomNotification(room_id, ordering, event(ordering), sender, thread_id, highlight)


def exception(
    user_id: UserID, room_id: RoomID, ordering: int, notify: int, highlight: int
) -> UserException:
    return UserException(
        user_id, room_id, ordering, event(ordering), CAROL, "main", notify, highlight
    )


async def test_room_counts_after_each_read_position(database: Database) -> None:
    store = PushActionStore(database)
    await write(
        database,
        [
            room_row(ROOM, 1),
            room_row(ROOM, 2, highlight=True),
            room_row(ROOM, 3),
            room_row(OTHER_ROOM, 4, highlight=True),
            room_row(ROOM, 5),
        ],
    )
    counts = await store.get_unread_counts(ALICE, {ROOM: 0, OTHER_ROOM: 0, QUIET_ROOM: 0})
    assert counts == {ROOM: UnreadCount(4, 1), OTHER_ROOM: UnreadCount(1, 1)}
    # Positions between rows, on a row, and past everything (absent).
    for upto, expected in ((1, UnreadCount(3, 1)), (2, UnreadCount(2, 0)), (4, UnreadCount(1, 0))):
        counts = await store.get_unread_counts(ALICE, {ROOM: upto, OTHER_ROOM: 4})
        assert counts == {ROOM: expected}, upto
    assert await store.get_unread_counts(ALICE, {ROOM: 5}) == {}
    assert await store.get_unread_counts(ALICE, {}) == {}


async def test_exceptions_add_to_the_room_counts_of_their_user_only(database: Database) -> None:
    store = PushActionStore(database)
    await write(
        database,
        [room_row(ROOM, 1), room_row(ROOM, 2), room_row(ROOM, 4)],
        [
            # Alice is mentioned in 2 (highlight), muted the room from 4 on; 3 is a
            # reaction only she is notified of.
            exception(ALICE, ROOM, 2, 0, 1),
            exception(ALICE, ROOM, 3, 1, 0),
            exception(ALICE, ROOM, 4, -1, 0),
        ],
    )
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(3, 1)}
    assert await store.get_unread_counts(ALICE, {ROOM: 2}) == {ROOM: UnreadCount(1, 0)}
    assert await store.get_unread_counts(ALICE, {ROOM: 3}) == {}
    assert await store.get_unread_counts(BOB, {ROOM: 0}) == {ROOM: UnreadCount(3, 0)}


async def test_read_marks_count_when_later_than_the_receipt(database: Database) -> None:
    store = PushActionStore(database)
    await write(database, [room_row(ROOM, n) for n in (1, 2, 3, 4)])
    await write(database, [], [exception(ALICE, ROOM, 3, 0, 1)], [ReadUpTo(ALICE, ROOM, 2)])
    # A mark never moves back.
    await write(database, [], [], [ReadUpTo(ALICE, ROOM, 1)])
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(2, 1)}
    assert await store.get_unread_counts(ALICE, {ROOM: 3}) == {ROOM: UnreadCount(1, 0)}
    assert await store.get_unread_counts(BOB, {ROOM: 0}) == {ROOM: UnreadCount(4, 0)}
    # The mark keeps the exceptions it covers (GET /notifications lists them), and counts
    # start after it.
    await write(database, [], [], [ReadUpTo(ALICE, ROOM, 3)])
    rows = await database.fetch("SELECT stream_ordering FROM push_user_exceptions")
    assert [int(r["stream_ordering"]) for r in rows] == [3]
    assert await store.get_unread_counts(ALICE, {ROOM: 0}) == {ROOM: UnreadCount(1, 0)}


async def test_events_of_ignored_senders_do_not_count(database: Database) -> None:
    store = PushActionStore(database)
    await write(
        database,
        [
            room_row(ROOM, 1, sender=BOB),
            room_row(ROOM, 2, highlight=True, sender=BOB),
            room_row(ROOM, 3),
            room_row(OTHER_ROOM, 4, sender=BOB),
        ],
        [
            UserException(ALICE, ROOM, 5, event(5), BOB, "main", 1, 1),
            UserException(ALICE, ROOM, 6, event(6), CAROL, "main", 1, 1),
        ],
    )
    counts = await store.get_unread_counts(ALICE, {ROOM: 0, OTHER_ROOM: 0}, ignored=[BOB])
    assert counts == {ROOM: UnreadCount(2, 1)}
    counts = await store.get_unread_counts(ALICE, {ROOM: 1, OTHER_ROOM: 0}, ignored=[ALICE])
    assert counts == {ROOM: UnreadCount(4, 3), OTHER_ROOM: UnreadCount(1, 0)}


async def test_many_rooms_are_counted_in_chunks(database: Database) -> None:
    store = PushActionStore(database)
    rooms = [RoomID(f"!r{i}:localhost") for i in range(1_201)]
    await write(database, [room_row(room, i + 1) for i, room in enumerate(rooms)])
    counts = await store.get_unread_counts(ALICE, dict.fromkeys(rooms, 0), ignored=[BOB])
    assert len(counts) == len(rooms)
    assert set(counts.values()) == {UnreadCount(1, 0)}


async def test_running_counts_per_thread_and_idempotent_writes(database: Database) -> None:
    rows = [
        room_row(ROOM, 1),
        room_row(ROOM, 2, thread_id="$root", highlight=True),
        room_row(ROOM, 3),
        room_row(ROOM, 4, thread_id="$root"),
    ]
    await write(database, rows)
    await write(database, rows)
    stored = await database.fetch(
        "SELECT stream_ordering, notify_seq, highlight_seq, thread_notify_seq,"
        " thread_highlight_seq FROM push_room_notifications ORDER BY stream_ordering"
    )
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in stored] == [
        (1, 1, 0, 1, 0),
        (2, 2, 1, 1, 1),
        (3, 3, 1, 2, 0),
        (4, 4, 1, 2, 1),
    ]


async def test_forgotten_events_leave_every_count_exact(database: Database) -> None:
    """Purging from the middle and from the start of a room: each count equals that of
    the remaining rows after the read position."""
    store = PushActionStore(database)
    highlights = {3, 6, 8}
    await write(
        database,
        [
            room_row(ROOM, n, highlight=n in highlights, thread_id="$t" if n % 2 else "main")
            for n in range(1, 11)
        ],
        [exception(ALICE, ROOM, n, 1, 1) for n in (11, 12, 13)]
        + [exception(BOB, ROOM, n, -1, 0) for n in (4, 14)],
    )
    async with database.transaction() as txn:
        await forget_events(txn, database.dialect, [event(3), event(5), event(1), event(12)])
    async with database.transaction() as txn:
        await forget_events(txn, database.dialect, [event(2)])
    remaining = [n for n in range(1, 11) if n not in (1, 2, 3, 5)]
    for upto in range(0, 13):
        after = [n for n in remaining if n > upto]
        own = [n for n in (11, 13) if n > upto]
        expected = UnreadCount(
            len(after) + len(own), len([n for n in after if n in highlights]) + len(own)
        )
        counts = await store.get_unread_counts(ALICE, {ROOM: upto})
        assert counts.get(ROOM, UnreadCount(0, 0)) == expected, upto
    # Bob's own exceptions (muted at 4 and 14) are untouched by alice's purged one.
    bob = await store.get_unread_counts(BOB, {ROOM: 0})
    assert bob == {ROOM: UnreadCount(len(remaining) - 2, 2)}
    assert (
        await database.fetch("SELECT 1 FROM push_room_notifications WHERE event_id = $1", event(5))
        == []
    )
    # Between consecutive remaining rows, each running count grows by the later row's own.
    rows = await database.fetch(
        "SELECT thread_id, highlight, notify_seq, highlight_seq, thread_notify_seq,"
        " thread_highlight_seq FROM push_room_notifications ORDER BY stream_ordering"
    )
    for prev, row in pairwise(rows):
        assert row[2] - prev[2] == 1
        assert row[3] - prev[3] == row[1]
    for thread in ("main", "$t"):
        in_thread = [r for r in rows if r[0] == thread]
        for prev, row in pairwise(in_thread):
            assert row[4] - prev[4] == 1
            assert row[5] - prev[5] == row[1]


async def assert_counts_from_scratch(database: Database, users: list[UserID]) -> None:
    """Every user's unread count in ``ROOM`` after each stored position is what a plain
    count of the rows after it says (the running counts hold no stale sum)."""
    store = PushActionStore(database)
    rooms = await database.fetch(
        "SELECT stream_ordering, highlight FROM push_room_notifications WHERE room_id = $1",
        ROOM,
    )
    own = await database.fetch(
        "SELECT user_id, stream_ordering, notify, highlight FROM push_user_exceptions"
        " WHERE room_id = $1",
        ROOM,
    )
    positions = sorted({0, *(int(r[0]) for r in rooms), *(int(r[1]) for r in own)})
    for user in users:
        for upto in positions:
            mine = [r for r in own if r[0] == user and r[1] > upto]
            expected = UnreadCount(
                len([r for r in rooms if r[0] > upto]) + sum(int(r[2]) for r in mine),
                sum(int(r[1]) for r in rooms if r[0] > upto) + sum(int(r[3]) for r in mine),
            )
            counts = await store.get_unread_counts(user, {ROOM: upto})
            assert counts.get(ROOM, UnreadCount(0, 0)) == expected, (user, upto)


async def test_a_write_waits_for_a_purge_of_its_room_to_commit(database: Database) -> None:
    """A purge from the middle of a room, still open while a write into the room starts
    (issue 15): the write waits for it, so its running counts go on from the purged
    ones. Had it read the room's last row before the purge committed (PostgreSQL, READ
    COMMITTED), its counts and every later one would still include the purged rows."""
    await write(
        database,
        [room_row(ROOM, n, highlight=n % 3 == 0) for n in range(1, 11)],
        [exception(ALICE, ROOM, n, 1, 1) for n in (3, 6, 9)],
    )
    async with database.transaction() as txn:
        await forget_events(txn, database.dialect, [event(n) for n in (5, 6, 7)])
        writing = asyncio.create_task(
            write(
                database,
                [room_row(ROOM, 11, highlight=True), room_row(OTHER_ROOM, 12)],
                [exception(ALICE, ROOM, 13, 1, 0)],
            )
        )
        await asyncio.sleep(0.3)
        assert not writing.done()
    await writing
    await assert_counts_from_scratch(database, [ALICE, BOB])
    assert await PushActionStore(database).get_unread_counts(ALICE, {ROOM: 0}) == {
        ROOM: UnreadCount(7 + 1 + 2 + 1, 2 + 1 + 2)
    }


async def test_purges_from_the_middle_during_concurrent_writes_keep_every_count(
    database: Database,
) -> None:
    """Rounds of group commits into a room (room rows and two users' exceptions) while
    events from the middle of it are purged: afterwards every count is exact."""
    rng = random.Random(15)
    positions = itertools.count(1)
    stored: list[int] = []

    def batch() -> tuple[list[RoomNotification], list[UserException]]:
        rows, own = [], []
        for _ in range(3):
            n = next(positions)
            stored.append(n)
            rows.append(
                room_row(ROOM, n, highlight=n % 4 == 0, thread_id="$t" if n % 3 else "main")
            )
            own.append(exception(ALICE if n % 2 else BOB, ROOM, n, rng.choice((-1, 1)), n % 2))
        return rows, own

    async def purge(event_ids: list[EventID]) -> None:
        async with database.transaction() as txn:
            await forget_events(txn, database.dialect, event_ids)

    async def writer() -> None:
        """Three group commits, one after the other as the one event writer makes them."""
        for _ in range(3):
            await write(database, *batch())

    await write(database, *batch())
    for _ in range(20):
        # Two of the rows after the room's first remaining one: never the oldest.
        doomed = rng.sample(stored[1:], 2)
        for n in doomed:
            stored.remove(n)
        await asyncio.gather(purge([event(n) for n in doomed]), writer())
    await assert_counts_from_scratch(database, [ALICE, BOB])
