"""UnreadCountCache: counts read once while nothing they depend on moved; a receipt
stored while a read is in flight leaves nothing kept (the HTTP tests cover what each
change does to the counts a client sees)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from peyvand.services.sync.sliding.unread_counts import UnreadCountCache
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

ALICE = UserID("@alice:example.org")
A, B = RoomID("!a"), RoomID("!b")


class Storage:
    """The counts, the rooms' newest positions and the ignored users, in memory; each
    read can be held until ``release`` is set."""

    def __init__(self) -> None:
        self.counts: dict[RoomID, int] = {A: 2, B: 0}
        self.newest: dict[RoomID, int] = {A: 10, B: 20}
        self.ignored: frozenset[UserID] = frozenset()
        self.epoch = 0
        self.reads: list[list[RoomID]] = []
        self.release: asyncio.Event | None = None

    async def read(
        self, user_id: UserID, room_ids: Sequence[RoomID], per_thread: bool
    ) -> dict[RoomID, JsonDict]:
        self.reads.append(list(room_ids))
        counts = {r: self.counts[r] for r in room_ids}
        if self.release is not None:
            await self.release.wait()
        return {
            r: {"unread_notifications": {"notification_count": n, "highlight_count": 0}}
            for r, n in counts.items()
            if n
        }

    async def positions(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        return {r: self.newest[r] for r in room_ids}

    async def ignored_by(self, user_id: UserID) -> frozenset[UserID]:
        return self.ignored


def cache(storage: Storage) -> UnreadCountCache:
    return UnreadCountCache(
        storage.read, storage.positions, storage.ignored_by, lambda: storage.epoch
    )


def notifications(sections: dict[RoomID, JsonDict], room_id: RoomID) -> int:
    section = sections.get(room_id)
    return 0 if section is None else int(section["unread_notifications"]["notification_count"])


def receipt(room_id: RoomID) -> ReceiptRow:
    return ReceiptRow(room_id, "m.read", ALICE, "", EventID("$e"), 0)


async def test_counts_are_read_again_only_for_rooms_that_moved() -> None:
    storage = Storage()
    counts = cache(storage)
    first = await counts.sections(ALICE, [A, B], False)
    assert (notifications(first, A), notifications(first, B)) == (2, 0)
    await counts.sections(ALICE, [A, B], False)
    assert storage.reads == [[A, B]]
    storage.counts[B], storage.newest[B] = 1, 21  # an event in B
    again = await counts.sections(ALICE, [A, B], False)
    assert (notifications(again, A), notifications(again, B)) == (2, 1)
    assert storage.reads[-1] == [B]
    counts.receipt_stored(receipt(A), 10)
    storage.counts[A] = 0
    assert notifications(await counts.sections(ALICE, [A, B], False), A) == 0
    assert storage.reads[-1] == [A]
    storage.ignored = frozenset({UserID("@bob:example.org")})
    await counts.sections(ALICE, [A, B], False)
    assert storage.reads[-1] == [A, B]
    storage.epoch += 1
    await counts.sections(ALICE, [A], True)  # split by thread: kept apart
    await counts.sections(ALICE, [A], False)
    assert storage.reads[-2:] == [[A], [A]]


async def test_a_receipt_stored_during_a_read_leaves_nothing_kept() -> None:
    storage = Storage()
    counts = cache(storage)
    storage.release = asyncio.Event()
    reading = asyncio.create_task(counts.sections(ALICE, [A], False))
    await asyncio.sleep(0)
    counts.receipt_stored(receipt(A), 10)  # stored after the read saw 2
    storage.counts[A] = 0
    storage.release.set()
    assert notifications(await reading, A) == 2
    storage.release = None
    assert notifications(await counts.sections(ALICE, [A], False), A) == 0
    assert len(storage.reads) == 2
