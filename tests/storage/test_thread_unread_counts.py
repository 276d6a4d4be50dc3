"""Unread counts per thread (storage/unread_counts.py, "Threaded read receipts") on
SQLite and PostgreSQL, checked against a plain count of the rows each receipt leaves
unread: an unthreaded receipt or read mark reads every thread, a ``main`` receipt the
main timeline, a receipt in a thread that thread. Rows, receipts, exceptions, purges
from the middle and ignored senders are drawn at random, and counts taken up to a
stream position leave out every row after it."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from peyvand.storage.database import Database
from peyvand.storage.push_actions import (
    PushActionStore,
    ReadUpTo,
    RoomNotification,
    UnreadCount,
    UserException,
    forget_events,
)
from peyvand.storage.receipts import ReceiptRow, ReceiptStore
from peyvand.storage.threads import ThreadEvent, ThreadStore
from peyvand.storage.unread_counts import ThreadedUnread
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
CAROL = UserID("@carol:elsewhere")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")
THREADS = ("main", "$t1", "$t2", "$t3")


def event(ordering: int) -> EventID:
    return EventID(f"$e{ordering}")


@dataclass(frozen=True)
class Row:
    """A stored event's push outcome for alice: the room's and her exception's."""

    room_id: RoomID
    ordering: int
    thread: str
    sender: UserID
    room_highlight: bool | None  # None: no room row
    notify: int  # alice's exception (0 and 0: none)
    highlight: int

    def for_alice(self) -> UnreadCount:
        room = self.room_highlight is not None
        return UnreadCount(int(room) + self.notify, int(bool(self.room_highlight)) + self.highlight)


@dataclass
class World:
    database: Database
    rows: list[Row]
    receipts: dict[tuple[RoomID, str], int]  # (room, '' / 'main' / root) -> position
    marks: dict[RoomID, int]
    stream_id: itertools.count[int]

    async def store(self, rows: list[Row]) -> None:
        notifications = [
            RoomNotification(r.room_id, r.ordering, event(r.ordering), r.sender, r.thread, h)
            for r in rows
            if (h := r.room_highlight) is not None
        ]
        exceptions = [
            UserException(
                ALICE,
                r.room_id,
                r.ordering,
                event(r.ordering),
                r.sender,
                r.thread,
                r.notify,
                r.highlight,
            )
            for r in rows
            if r.notify or r.highlight
        ]
        threads = [
            ThreadEvent(r.room_id, EventID(r.thread), event(r.ordering), r.ordering, r.sender)
            for r in rows
            if r.thread != "main"
        ]
        async with self.database.transaction() as txn:
            await PushActionStore(self.database).write(txn, notifications, exceptions, [])
            await ThreadStore(self.database).write(txn, threads)
        self.rows += rows

    async def receipt(self, room_id: RoomID, thread: str, ordering: int) -> None:
        row = ReceiptRow(room_id, "m.read", ALICE, thread, event(ordering), 0)
        await ReceiptStore(self.database).upsert_receipt(row, ordering, next(self.stream_id))
        key = (room_id, thread)
        self.receipts[key] = max(self.receipts.get(key, 0), ordering)

    async def mark(self, room_id: RoomID, ordering: int) -> None:
        async with self.database.transaction() as txn:
            await PushActionStore(self.database).write(
                txn, [], [], [ReadUpTo(ALICE, room_id, ordering)]
            )
        self.marks[room_id] = max(self.marks.get(room_id, 0), ordering)

    def expected(self, ignored: set[UserID], at: int | None) -> dict[RoomID, ThreadedUnread]:
        """What a plain count of the rows (up to ``at``) says."""
        found: dict[RoomID, ThreadedUnread] = {}
        for row in self.rows:
            if row.sender in ignored or (at is not None and row.ordering > at):
                continue
            upto = max(self.receipts.get((row.room_id, ""), 0), self.marks.get(row.room_id, 0))
            read = max(upto, self.receipts.get((row.room_id, row.thread), 0))
            if row.ordering <= read:
                continue
            room = found.setdefault(row.room_id, ThreadedUnread())
            if row.thread == "main":
                room.main += row.for_alice()
            else:
                room.threads[row.thread] = (
                    room.threads.get(row.thread, UnreadCount(0, 0)) + row.for_alice()
                )
        for room in found.values():
            room.threads = {t: c for t, c in room.threads.items() if c}
        return {r: room for r, room in found.items() if room.main or room.threads}


def total(room: ThreadedUnread) -> UnreadCount:
    counted = room.main
    for count in room.threads.values():
        counted += count
    return counted


async def check(world: World, ignored: set[UserID], at: int | None = None) -> None:
    store = PushActionStore(world.database)
    rooms = {ROOM: world.receipts.get((ROOM, ""), 0), OTHER_ROOM: 0}
    expected = world.expected(ignored, at)
    split = await store.get_unread_counts_by_thread(ALICE, rooms, ignored, at)
    assert {r: (c.main, c.threads) for r, c in split.items()} == {
        r: (c.main, c.threads) for r, c in expected.items()
    }
    totals = await store.get_unread_counts(ALICE, rooms, ignored, at)
    assert totals == {r: t for r, c in expected.items() if (t := total(c))}


async def test_counts_per_thread_match_a_plain_count(database: Database) -> None:
    rng = random.Random(16)
    world = World(database, [], {}, {}, itertools.count(1))
    positions = itertools.count(1)
    for round_ in range(12):
        batch = []
        for _ in range(6):
            ordering = next(positions)
            batch.append(
                Row(
                    ROOM if ordering % 5 else OTHER_ROOM,
                    ordering,
                    rng.choice(THREADS),
                    rng.choice((BOB, CAROL)),
                    rng.choice((None, False, False, True)),
                    rng.choice((0, 0, 1, -1)),
                    rng.choice((0, 0, 1)),
                )
            )
        # An exception only takes away what the room row gives.
        batch = [
            Row(
                r.room_id,
                r.ordering,
                r.thread,
                r.sender,
                r.room_highlight,
                min(r.notify, 0) if r.room_highlight is not None else max(r.notify, 0),
                r.highlight if not r.room_highlight else 0,
            )
            for r in batch
        ]
        await world.store(batch)
        latest = batch[-1].ordering
        for _ in range(2):
            thread = rng.choice(("", *THREADS))
            await world.receipt(ROOM, thread, rng.randint(1, latest))
        if round_ % 4 == 3:
            await world.mark(ROOM, rng.randint(1, latest))
        if round_ % 3 == 2:
            # Purge two rows from the middle: later running counts are fixed up.
            doomed = rng.sample([r.ordering for r in world.rows[1:]], 2)
            async with database.transaction() as txn:
                await forget_events(txn, database.dialect, [event(n) for n in doomed])
            world.rows = [r for r in world.rows if r.ordering not in doomed]
        await check(world, set())
        await check(world, {CAROL})
        at = rng.randint(1, latest)
        await check(world, set(), at)
        await check(world, {CAROL}, at)
