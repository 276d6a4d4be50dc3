"""ReceiptStore and AccountDataStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

from peyvand.storage.account_data import GLOBAL, AccountDataRow, AccountDataStore
from peyvand.storage.database import Database
from peyvand.storage.receipts import ReceiptRow, ReceiptStore
from peyvand.storage.threads import ThreadStore
from peyvand.types import EventID, RoomID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")


def receipt(
    receipt_type: str, user_id: UserID, event: str, *, room: RoomID = ROOM, thread: str = ""
) -> ReceiptRow:
    return ReceiptRow(room, receipt_type, user_id, thread, EventID(event), ts=7)


async def test_receipts_only_move_forward_per_type_user_and_thread(database: Database) -> None:
    store = ReceiptStore(database)
    assert await store.get_max_stream_id() == 0
    assert await store.upsert_receipt(receipt("m.read", ALICE, "$b"), 20, 1)
    # The same or an earlier event changes nothing.
    assert not await store.upsert_receipt(receipt("m.read", ALICE, "$a"), 10, 2)
    assert not await store.upsert_receipt(receipt("m.read", ALICE, "$b"), 20, 2)
    # Other types, threads and users are separate receipts.
    assert await store.upsert_receipt(receipt("m.read", ALICE, "$a", thread="main"), 10, 2)
    assert await store.upsert_receipt(receipt("m.read.private", ALICE, "$a"), 10, 3)
    assert await store.upsert_receipt(receipt("m.read", BOB, "$a"), 10, 4)
    assert await store.upsert_receipt(receipt("m.read", ALICE, "$c"), 30, 5)
    assert await store.get_max_stream_id() == 5

    rows = await store.get_receipts_for_rooms(ALICE, [ROOM], 0, 5)
    assert [(r.receipt_type, r.user_id, r.thread_id, r.event_id) for r in rows] == [
        ("m.read", ALICE, "main", "$a"),
        ("m.read.private", ALICE, "", "$a"),
        ("m.read", BOB, "", "$a"),
        ("m.read", ALICE, "", "$c"),
    ]
    assert rows[0].ts == 7
    # Private receipts are only read back by their owner; ranges are (since, until].
    rows = await store.get_receipts_for_rooms(BOB, [ROOM], 2, 4)
    assert [(r.receipt_type, r.user_id) for r in rows] == [("m.read", BOB)]
    assert await store.get_receipts_for_rooms(ALICE, [OTHER_ROOM], 0, 5) == []


async def test_read_positions_take_the_furthest_unthreaded_read_receipt(
    database: Database,
) -> None:
    store = ReceiptStore(database)
    await store.upsert_receipt(receipt("m.read", ALICE, "$a"), 10, 1)
    await store.upsert_receipt(receipt("m.read.private", ALICE, "$b"), 20, 2)
    await store.upsert_receipt(receipt("m.read", ALICE, "$t", thread="$root"), 90, 3)
    await store.upsert_receipt(receipt("m.read", ALICE, "$x", room=OTHER_ROOM, thread="main"), 5, 4)
    await store.upsert_receipt(receipt("m.read", BOB, "$z"), 99, 5)
    rooms = [ROOM, OTHER_ROOM, RoomID("!none:localhost")]
    # Main-timeline and thread receipts are read with the counts (storage/unread_counts).
    assert await ThreadStore(database).read_positions(ALICE, rooms) == {ROOM: 20}


async def test_account_data_is_global_or_per_room_and_read_back_by_range(
    database: Database,
) -> None:
    store = AccountDataStore(database)
    assert await store.get_max_stream_id() == 0
    await store.put(ALICE, GLOBAL, "org.example", {"a": 1}, 1)
    await store.put(ALICE, ROOM, "org.example", {"room": True}, 2)
    await store.put(BOB, GLOBAL, "org.example", {"bob": 1}, 3)
    await store.put(ALICE, GLOBAL, "org.example", {"a": 2, "nested": {"x": [1, "y"]}}, 4)
    assert await store.get_max_stream_id() == 4

    assert await store.get(ALICE, GLOBAL, "org.example") == {"a": 2, "nested": {"x": [1, "y"]}}
    assert await store.get(ALICE, ROOM, "org.example") == {"room": True}
    assert await store.get(ALICE, OTHER_ROOM, "org.example") is None
    assert await store.get(BOB, ROOM, "org.example") is None

    assert await store.get_changed(ALICE, 0, 4, rooms=False) == [
        AccountDataRow(GLOBAL, "org.example", {"a": 2, "nested": {"x": [1, "y"]}})
    ]
    assert await store.get_changed(ALICE, 0, 3, rooms=False) == []
    assert await store.get_changed(ALICE, 0, 4, rooms=True) == [
        AccountDataRow(ROOM, "org.example", {"room": True})
    ]
    assert await store.get_changed(ALICE, 2, 4, rooms=True) == []
