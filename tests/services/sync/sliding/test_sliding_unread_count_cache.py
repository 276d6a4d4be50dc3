"""UnreadCountCache: counts read once while nothing they depend on moved; a receipt
stored while a read is in flight leaves nothing kept; counts whose room moved on are
brought up to date from the events after them when all are known with their rows, none
the user's own; a receipt at an event not announced yet keeps nothing until it is (the
HTTP tests cover what each change does to the counts a client sees)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.sync.sliding.bump_stamps import Arrival
from peyvand.services.sync.sliding.unread_counts import _AHEAD, UnreadCountCache
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

ALICE = UserID("@alice:example.org")
BOB, CAROL = UserID("@bob:example.org"), UserID("@carol:example.org")
A, B = RoomID("!a"), RoomID("!b")


@dataclass(frozen=True)
class Counts:
    notifications: int
    highlights: int
    thread: str


class Storage:
    """The counts, the rooms' newest positions and the ignored users, in memory; each
    read can be held until ``release`` is set."""

    def __init__(self) -> None:
        self.counts: dict[RoomID, int] = {A: 2, B: 0}
        # room -> thread root -> notifications (split by thread: ``counts`` is the main's).
        self.threads: dict[RoomID, dict[str, int]] = {}
        self.newest: dict[RoomID, int] = {A: 10, B: 20}
        self.ignored: frozenset[UserID] = frozenset()
        self.epoch = 0
        self.announced = 30
        self.reads: list[list[RoomID]] = []
        self.read_at: list[int] = []
        self.release: asyncio.Event | None = None
        # room -> the events known after a position (None: not known), and each event's
        # rows for alice (absent: not known).
        self.arrived: dict[RoomID, tuple[int, list[Arrival]]] = {}
        self.rows: dict[EventID, Counts] = {}

    def arrivals(self, room_id: RoomID, after: int, upto: int) -> list[Arrival] | None:
        floor, events = self.arrived.get(room_id, (upto + 1, []))
        if floor > after:
            return None
        return [a for a in events if after < a.position <= upto]

    def counted(self, user_id: UserID, event_id: EventID) -> Counts | None:
        return self.rows.get(event_id)

    def land(
        self,
        room_id: RoomID,
        sender: str,
        rows: tuple[int, int] | None,
        thread: str = "main",
        **extra: str,
    ) -> None:
        """An event by ``sender`` lands in ``room_id`` (its rows adding ``rows`` to
        ``thread``)."""
        position = self.newest[room_id] + 1
        data = {"type": "m.room.message", "sender": sender, "room_id": room_id, **extra}
        pdu = Pdu(data, EventID(f"$e{position}"), ROOM_V12)
        _, events = self.arrived.setdefault(room_id, (self.newest[room_id], []))
        events.append(Arrival(position, pdu.event_id, UserID(sender), pdu.type, pdu.state_key))
        if rows is not None:
            self.rows[pdu.event_id] = Counts(*rows, thread)
        self.newest[room_id] = position

    async def read(
        self, user_id: UserID, room_ids: Sequence[RoomID], per_thread: bool, at: int
    ) -> dict[RoomID, JsonDict]:
        self.reads.append(list(room_ids))
        self.read_at.append(at)
        counts = {r: self.counts[r] for r in room_ids}
        threads = {r: self.threads.get(r, {}) if per_thread else {} for r in room_ids}
        if self.release is not None:
            await self.release.wait()
        sections: dict[RoomID, JsonDict] = {}
        for r, n in counts.items():
            if n or threads[r]:
                sections[r] = {
                    "unread_notifications": {"notification_count": n, "highlight_count": 0}
                }
            if threads[r]:
                sections[r]["unread_thread_notifications"] = {
                    t: {"notification_count": c, "highlight_count": 0}
                    for t, c in threads[r].items()
                }
        return sections

    async def positions(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        found = {r: self.newest[r] for r in room_ids}
        await asyncio.sleep(0)
        self.announced += 1  # announced while the positions were read
        return found

    async def ignored_by(self, user_id: UserID) -> frozenset[UserID]:
        return self.ignored


def cache(storage: Storage) -> UnreadCountCache:
    return UnreadCountCache(
        storage.read,
        storage.positions,
        lambda: storage.announced,
        storage.ignored_by,
        lambda: storage.epoch,
        is_mine=lambda user_id: user_id.endswith(":example.org"),
        arrivals=storage.arrivals,
        counted=storage.counted,
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
    # Counted up to what was announced once the rooms' positions were known, no further.
    assert storage.read_at == [31]
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
    for _ in range(10):
        if storage.reads:
            break
        await asyncio.sleep(0)
    assert storage.reads == [[A]]
    counts.receipt_stored(receipt(A), 10)  # stored after the read saw 2
    storage.counts[A] = 0
    storage.release.set()
    assert notifications(await reading, A) == 2
    storage.release = None
    assert notifications(await counts.sections(ALICE, [A], False), A) == 0
    assert len(storage.reads) == 2


def highlights(sections: dict[RoomID, JsonDict], room_id: RoomID) -> int:
    section = sections.get(room_id)
    return 0 if section is None else int(section["unread_notifications"]["highlight_count"])


async def test_counts_move_on_with_the_rows_of_known_events() -> None:
    storage = Storage()
    counts = cache(storage)
    await counts.sections(ALICE, [A, B], False)
    storage.land(A, BOB, (1, 1))  # a mention
    storage.land(A, BOB, (0, 0))  # muted, or not notifying
    storage.land(B, BOB, (1, 0))
    moved = await counts.sections(ALICE, [A, B], False)
    assert (notifications(moved, A), highlights(moved, A), notifications(moved, B)) == (3, 1, 1)
    assert len(storage.reads) == 1
    storage.ignored = frozenset({CAROL})
    await counts.sections(ALICE, [A], False)  # ignored users changed: read again
    assert len(storage.reads) == 2
    storage.land(A, CAROL, (1, 0))  # an ignored sender's rows are left out
    assert notifications(await counts.sections(ALICE, [A], False), A) == 2
    assert len(storage.reads) == 2


async def test_counts_are_read_when_an_event_after_them_is_not_known() -> None:
    storage = Storage()
    counts = cache(storage)
    await counts.sections(ALICE, [A], False)
    storage.land(A, BOB, None)  # its rows are not known
    storage.counts[A] = 3
    assert notifications(await counts.sections(ALICE, [A], False), A) == 3
    storage.land(A, ALICE, (0, 0))  # the user's own event reads the room
    storage.counts[A] = 0
    assert notifications(await counts.sections(ALICE, [A], False), A) == 0
    storage.land(A, BOB, (1, 0), state_key=ALICE, type="m.room.member")
    storage.counts[A] = 7  # their membership changed: read, whatever the rows say
    assert notifications(await counts.sections(ALICE, [A], False), A) == 7
    storage.land(A, BOB, (1, 0), type="m.room.redaction")
    storage.counts[A] = 5  # a redaction may take a thread reply out of storage's threads
    assert notifications(await counts.sections(ALICE, [A], False), A) == 5
    del storage.arrived[A]  # an event whose room's newest position was not known
    storage.newest[A] += 1
    storage.counts[A] = 8
    assert notifications(await counts.sections(ALICE, [A], False), A) == 8
    assert len(storage.reads) == 6


async def test_a_receipt_ahead_of_the_announced_position_leaves_nothing_kept() -> None:
    storage = Storage()
    counts = cache(storage)
    # A receipt at an event committed but not announced yet: a read counts up to the
    # announced position, and the event would be added again when it arrives.
    counts.receipt_stored(receipt(A), storage.announced + 5)
    await counts.sections(ALICE, [A], False)
    await counts.sections(ALICE, [A], False)
    assert storage.reads == [[A], [A]]
    storage.announced += 10  # the receipt's event is announced
    await counts.sections(ALICE, [A], False)
    await counts.sections(ALICE, [A], False)
    assert storage.reads == [[A], [A], [A]]


async def test_receipts_ahead_beyond_those_remembered_hold_back_everyone() -> None:
    storage = Storage()
    counts = cache(storage)
    ahead = storage.announced + 5
    for n in range(_AHEAD):
        row = ReceiptRow(B, "m.read", UserID(f"@u{n}:example.org"), "", EventID("$e"), 0)
        counts.receipt_stored(row, ahead)
        # Another server's users have no counts here: their receipts take no place.
        row = ReceiptRow(B, "m.read", UserID(f"@u{n}:elsewhere.org"), "", EventID("$e"), 0)
        counts.receipt_stored(row, ahead)
    counts.receipt_stored(receipt(A), ahead)  # one more than remembered
    await counts.sections(CAROL, [A], False)
    await counts.sections(CAROL, [A], False)
    assert storage.reads == [[A], [A]]
    storage.announced += 10
    await counts.sections(CAROL, [A], False)
    await counts.sections(CAROL, [A], False)
    assert storage.reads == [[A], [A], [A]]


def thread_counts(sections: dict[RoomID, JsonDict], room_id: RoomID) -> dict[str, int]:
    threads = sections.get(room_id, {}).get("unread_thread_notifications", {})
    return {t: int(c["notification_count"]) for t, c in threads.items()}


async def test_counts_split_by_thread_move_on_into_their_threads() -> None:
    storage = Storage()
    storage.threads[A] = {"$root": 1}
    counts = cache(storage)
    assert thread_counts(await counts.sections(ALICE, [A], True), A) == {"$root": 1}
    storage.land(A, BOB, (1, 0), thread="$root")
    storage.land(A, BOB, (1, 1), thread="$other")
    storage.land(A, BOB, (1, 0))  # in the main timeline
    moved = await counts.sections(ALICE, [A], True)
    assert (notifications(moved, A), highlights(moved, A)) == (3, 0)
    assert thread_counts(moved, A) == {"$root": 2, "$other": 1}
    assert len(storage.reads) == 1
    # Not split by thread, kept apart: every event counts in the room's whole count.
    storage.counts[A] = 6
    assert notifications(await counts.sections(ALICE, [A], False), A) == 6
    storage.land(A, BOB, (1, 0), thread="$root")
    moved = await counts.sections(ALICE, [A], False)
    assert (notifications(moved, A), thread_counts(moved, A)) == (7, {})
    assert len(storage.reads) == 2
