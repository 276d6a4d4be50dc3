"""ReceiptService and AccountDataService over a real SQLite store and a fake room state
(Client-Server API, "Receipts", "Read and unread markers", "Client Config", "Room
Tagging")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from harness.service_fakes import FakeRoom, RecordingNotifier
from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.events.relations import relation_in
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.sync.receipts import ReceiptService, receipt_event
from peyvand.services.sync.streams import Stream
from peyvand.storage.account_data import AccountDataStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import StoredEvent
from peyvand.storage.receipts import ReceiptRow, ReceiptStore
from peyvand.storage.relations import StoredRelation
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.storage.threads import ThreadStore
from peyvand.types import EventID, JsonDict, RoomID, UserID

ROOM = RoomID("!room:localhost")
OTHER_ROOM = RoomID("!other:localhost")
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
CAROL = UserID("@carol:localhost")
NOW_MS = 1_700_000_000_000


@dataclass
class FakeState:
    rooms: dict[RoomID, FakeRoom] = field(default_factory=dict)
    events: dict[EventID, StoredEvent] = field(default_factory=dict)

    async def get_room(self, room_id: RoomID) -> FakeRoom | None:
        return self.rooms.get(room_id)

    async def get_event(self, event_id: EventID) -> StoredEvent | None:
        return self.events.get(event_id)

    async def relations_of(self, event_ids: Collection[EventID]) -> dict[EventID, StoredRelation]:
        """What ``RelationStore.relations_of`` reads of the events stored here."""
        found = {}
        for event_id in event_ids:
            event = self.events.get(event_id)
            if event is not None:
                relation = relation_in(event.pdu.content)
                pdu = event.pdu
                found[event_id] = (
                    StoredRelation(pdu.room_id, relation.rel_type, relation.parent_id)
                    if relation is not None
                    else StoredRelation(pdu.room_id)
                )
        return found

    def add_event(
        self,
        event_id: str,
        ordering: int,
        room_id: RoomID = ROOM,
        relates_to: JsonDict | None = None,
    ) -> EventID:
        content: JsonDict = {"body": event_id}
        if relates_to is not None:
            content["m.relates_to"] = relates_to
        data = {"type": "m.room.message", "room_id": room_id, "sender": ALICE, "content": content}
        pdu = Pdu(data, EventID(event_id), KNOWN_ROOM_VERSIONS["11"])
        self.events[EventID(event_id)] = StoredEvent(pdu, ordering, state_group=1)
        return EventID(event_id)


@dataclass
class World:
    db: SqliteDatabase
    state: FakeState
    notifier: RecordingNotifier
    account_data: AccountDataService
    receipts: ReceiptService

    async def read_positions(self, user_id: UserID, room_ids: list[RoomID]) -> dict[RoomID, int]:
        """The unthreaded read positions the unread counts start from."""
        return await ThreadStore(self.db).read_positions(user_id, room_ids)

    @classmethod
    async def build(cls, db: SqliteDatabase, state: FakeState) -> World:
        notifier = RecordingNotifier()
        account_data = AccountDataService(
            AccountDataStore(db), cast(Any, state), cast(Any, notifier)
        )
        receipts = ReceiptService(
            ReceiptStore(db),
            account_data,
            cast(Any, state),
            cast(Any, notifier),
            relations=state.relations_of,
            wall_clock_ms=lambda: NOW_MS,
        )
        await account_data.start()
        await receipts.start()
        notifier.woken.clear()
        return cls(db, state, notifier, account_data, receipts)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await SqliteDatabase.open(str(tmp_path / "services.db"))
    try:
        await run_migrations(db)
        state = FakeState(
            {
                ROOM: FakeRoom({ALICE: "join", BOB: "join", CAROL: "leave"}),
                OTHER_ROOM: FakeRoom({BOB: "join"}),
            }
        )
        yield await World.build(db, state)
    finally:
        await db.close()


def assert_error(info: pytest.ExceptionInfo[MatrixError], status: int, errcode: Errcode) -> None:
    assert (info.value.status, info.value.errcode) == (status, errcode), info.value.message


# m.receipt JSON ---------------------------------------------------------------------------


def test_receipt_event_groups_by_event_type_and_user_and_marks_threads() -> None:
    rows = [
        ReceiptRow(ROOM, "m.read", ALICE, "", EventID("$D"), 1),
        ReceiptRow(ROOM, "m.read", BOB, "", EventID("$D"), 2),
        ReceiptRow(ROOM, "m.read", ALICE, "main", EventID("$I"), 3),
        ReceiptRow(ROOM, "m.read", ALICE, "$A", EventID("$E"), 4),
        ReceiptRow(ROOM, "m.read.private", ALICE, "", EventID("$D"), 5),
    ]
    # The shape of the spec's threaded read receipt example ("Threaded read receipts").
    assert receipt_event(rows) == {
        "type": "m.receipt",
        "content": {
            "$D": {
                "m.read": {ALICE: {"ts": 1}, BOB: {"ts": 2}},
                "m.read.private": {ALICE: {"ts": 5}},
            },
            "$I": {"m.read": {ALICE: {"ts": 3, "thread_id": "main"}}},
            "$E": {"m.read": {ALICE: {"ts": 4, "thread_id": "$A"}}},
        },
    }


# Receipts -----------------------------------------------------------------------------


async def test_public_receipts_reach_all_members_and_private_ones_only_their_owner(
    world: World,
) -> None:
    first = world.state.add_event("$first", 10)
    await world.receipts.send_receipt(ALICE, ROOM, "m.read", first)
    assert world.receipts.current_position == 1
    assert world.notifier.woken == [(Stream.RECEIPTS, 1, {ALICE, BOB})]
    await world.receipts.send_receipt(ALICE, ROOM, "m.read.private", first)
    assert world.notifier.woken[-1] == (Stream.RECEIPTS, 2, {ALICE})

    expected_public = {"m.read": {ALICE: {"ts": NOW_MS}}}
    for_alice = await world.receipts.receipts_for_rooms(ALICE, [ROOM, OTHER_ROOM], 0, 2)
    assert for_alice == {
        ROOM: {
            "type": "m.receipt",
            "content": {first: {**expected_public, "m.read.private": {ALICE: {"ts": NOW_MS}}}},
        }
    }
    for_bob = await world.receipts.receipts_for_rooms(BOB, [ROOM], 0, 2)
    assert for_bob == {ROOM: {"type": "m.receipt", "content": {first: expected_public}}}
    assert await world.receipts.receipts_for_rooms(BOB, [ROOM], 1, 2) == {}


async def test_receipts_never_move_back(world: World) -> None:
    old, new = world.state.add_event("$old", 10), world.state.add_event("$new", 20)
    await world.receipts.send_receipt(ALICE, ROOM, "m.read", new)
    await world.receipts.send_receipt(ALICE, ROOM, "m.read", old)
    assert world.receipts.current_position == 1
    assert len(world.notifier.woken) == 1
    assert await world.read_positions(ALICE, [ROOM]) == {ROOM: 20}


async def test_read_position_is_the_further_of_public_and_private_receipts(world: World) -> None:
    a, b = world.state.add_event("$a", 10), world.state.add_event("$b", 20)
    assert await world.read_positions(ALICE, [ROOM]) == {}
    await world.receipts.send_receipt(ALICE, ROOM, "m.read.private", b)
    await world.receipts.send_receipt(ALICE, ROOM, "m.read", a)
    assert await world.read_positions(ALICE, [ROOM]) == {ROOM: 20}
    assert await world.read_positions(ALICE, [ROOM, OTHER_ROOM]) == {ROOM: 20}


async def test_receipt_errors(world: World) -> None:
    event = world.state.add_event("$event", 10)
    elsewhere = world.state.add_event("$elsewhere", 11, room_id=OTHER_ROOM)
    with pytest.raises(MatrixError) as info:
        await world.receipts.send_receipt(ALICE, ROOM, "m.seen", event)
    assert_error(info, 400, Errcode.INVALID_PARAM)
    with pytest.raises(MatrixError) as info:
        await world.receipts.send_receipt(ALICE, ROOM, "m.fully_read", event, "main")
    assert_error(info, 400, Errcode.INVALID_PARAM)
    with pytest.raises(MatrixError) as info:
        await world.receipts.send_receipt(CAROL, ROOM, "m.read", event)
    assert_error(info, 403, Errcode.FORBIDDEN)
    with pytest.raises(MatrixError) as info:
        await world.receipts.send_receipt(ALICE, RoomID("!nowhere:localhost"), "m.read", event)
    assert_error(info, 403, Errcode.FORBIDDEN)
    for missing in (EventID("$missing"), elsewhere):
        with pytest.raises(MatrixError) as info:
            await world.receipts.send_receipt(ALICE, ROOM, "m.read", missing)
        assert_error(info, 404, Errcode.NOT_FOUND)
    assert world.receipts.current_position == 0


async def test_threaded_receipts_must_match_the_events_thread(world: World) -> None:
    # The spec's example: A <-m.thread- B <-m.annotation- C; A <-m.reference- D.
    a = world.state.add_event("$A", 1)
    b = world.state.add_event("$B", 2, relates_to={"rel_type": "m.thread", "event_id": a})
    c = world.state.add_event("$C", 3, relates_to={"rel_type": "m.annotation", "event_id": b})
    d = world.state.add_event("$D", 4, relates_to={"rel_type": "m.reference", "event_id": a})
    for event_id in (a, b, c, d):
        await world.receipts.send_receipt(ALICE, ROOM, "m.read", event_id, a)
    for event_id in (a, d):
        await world.receipts.send_receipt(BOB, ROOM, "m.read", event_id, "main")
    for event_id, thread in ((b, "main"), (c, "main"), (a, "$other"), (d, b)):
        with pytest.raises(MatrixError) as info:
            await world.receipts.send_receipt(ALICE, ROOM, "m.read", event_id, thread)
        assert_error(info, 400, Errcode.INVALID_PARAM)

    # One receipt per user and thread: the furthest of each.
    receipts = await world.receipts.receipts_for_rooms(ALICE, [ROOM], 0, 100)
    assert receipts[ROOM]["content"] == {
        d: {
            "m.read": {
                ALICE: {"ts": NOW_MS, "thread_id": a},
                BOB: {"ts": NOW_MS, "thread_id": "main"},
            }
        }
    }


# Fully read markers -----------------------------------------------------------------------


async def test_fully_read_is_room_account_data_that_only_moves_forward(world: World) -> None:
    old, new = world.state.add_event("$old", 10), world.state.add_event("$new", 20)
    await world.receipts.send_receipt(ALICE, ROOM, "m.fully_read", new)
    await world.receipts.set_read_markers(ALICE, ROOM, fully_read=old, read=None, read_private=None)
    assert await world.account_data.get_for_room(ALICE, ALICE, ROOM, "m.fully_read") == {
        "event_id": new
    }
    assert world.notifier.woken == [(Stream.ACCOUNT_DATA, 1, {ALICE})]
    # No receipt was sent: m.fully_read never appears under m.receipt.
    assert world.receipts.current_position == 0
    assert await world.account_data.room_account_data_since(ALICE, 0, 1) == {
        ROOM: [{"type": "m.fully_read", "content": {"event_id": new}}]
    }


async def test_read_markers_also_move_receipts(world: World) -> None:
    a, b, c = (world.state.add_event(e, n) for e, n in (("$a", 1), ("$b", 2), ("$c", 3)))
    await world.receipts.set_read_markers(ALICE, ROOM, fully_read=a, read=b, read_private=c)
    assert await world.account_data.get_for_room(ALICE, ALICE, ROOM, "m.fully_read") == {
        "event_id": a
    }
    receipts = await world.receipts.receipts_for_rooms(ALICE, [ROOM], 0, 2)
    assert receipts[ROOM]["content"] == {
        b: {"m.read": {ALICE: {"ts": NOW_MS}}},
        c: {"m.read.private": {ALICE: {"ts": NOW_MS}}},
    }
    assert await world.read_positions(ALICE, [ROOM]) == {ROOM: 3}


# Account data -----------------------------------------------------------------------------


async def test_account_data_round_trip_and_sync_ranges(world: World) -> None:
    data = world.account_data
    await data.set_global(ALICE, ALICE, "org.example.a", {"n": 1})
    await data.set_for_room(ALICE, ALICE, ROOM, "org.example.b", {"room": True})
    await data.set_global(ALICE, ALICE, "org.example.a", {"n": 2})
    assert data.current_position == 3
    assert [w[:2] for w in world.notifier.woken] == [(Stream.ACCOUNT_DATA, p) for p in (1, 2, 3)]
    assert all(w[2] == {ALICE} for w in world.notifier.woken)

    assert await data.get_global(ALICE, ALICE, "org.example.a") == {"n": 2}
    assert await data.get_for_room(ALICE, ALICE, ROOM, "org.example.b") == {"room": True}
    assert await data.global_account_data_since(ALICE, 0, 3) == [
        {"type": "org.example.a", "content": {"n": 2}}
    ]
    assert await data.global_account_data_since(ALICE, 3, 3) == []
    assert await data.room_account_data_since(ALICE, 1, 3) == {
        ROOM: [{"type": "org.example.b", "content": {"room": True}}]
    }
    assert await data.global_account_data_since(BOB, 0, 3) == []


async def test_account_data_errors(world: World) -> None:
    data = world.account_data
    with pytest.raises(MatrixError) as info:
        await data.set_global(BOB, ALICE, "org.example", {})
    assert_error(info, 403, Errcode.FORBIDDEN)
    with pytest.raises(MatrixError) as info:
        await data.get_for_room(BOB, ALICE, ROOM, "org.example")
    assert_error(info, 403, Errcode.FORBIDDEN)
    with pytest.raises(MatrixError) as info:
        await data.get_global(ALICE, ALICE, "org.example")
    assert_error(info, 404, Errcode.NOT_FOUND)
    with pytest.raises(MatrixError) as info:
        await data.get_for_room(ALICE, ALICE, ROOM, "org.example")
    assert_error(info, 404, Errcode.NOT_FOUND)
    with pytest.raises(MatrixError) as info:
        await data.set_for_room(ALICE, ALICE, RoomID("@notaroom:localhost"), "org.example", {})
    assert_error(info, 400, Errcode.INVALID_PARAM)
    # "Client Config", "Server Behaviour": server-managed types, global or per room.
    for data_type in ("m.fully_read", "m.push_rules"):
        with pytest.raises(MatrixError) as info:
            await data.set_global(ALICE, ALICE, data_type, {})
        assert_error(info, 405, Errcode.BAD_JSON)
        with pytest.raises(MatrixError) as info:
            await data.set_for_room(ALICE, ALICE, ROOM, data_type, {})
        assert_error(info, 405, Errcode.BAD_JSON)
    assert data.current_position == 0


async def test_positions_resume_from_the_database(world: World) -> None:
    event = world.state.add_event("$event", 10)
    await world.account_data.set_global(ALICE, ALICE, "org.example", {})
    await world.account_data.set_global(ALICE, ALICE, "org.example", {"again": True})
    await world.receipts.send_receipt(ALICE, ROOM, "m.read", event)
    restarted = await World.build(world.db, world.state)
    assert restarted.account_data.current_position == 2
    assert restarted.receipts.current_position == 1


# Tags ---------------------------------------------------------------------------------------


async def test_tags_are_the_m_tag_room_account_data(world: World) -> None:
    data = world.account_data
    assert await data.get_tags(ALICE, ALICE, ROOM) == {"tags": {}}
    await data.add_tag(ALICE, ALICE, ROOM, "m.favourite", {"order": 0.25})
    await data.add_tag(ALICE, ALICE, ROOM, "u.work", {})
    await data.add_tag(ALICE, ALICE, ROOM, "u.edge", {"order": 1})
    # A user who left can still tag the room (Synapse: any membership).
    await data.add_tag(CAROL, CAROL, ROOM, "m.lowpriority", {})
    tags = {"m.favourite": {"order": 0.25}, "u.work": {}, "u.edge": {"order": 1}}
    assert await data.get_tags(ALICE, ALICE, ROOM) == {"tags": tags}
    await data.remove_tag(ALICE, ALICE, ROOM, "u.edge")
    position = data.current_position
    await data.remove_tag(ALICE, ALICE, ROOM, "u.never-set")
    assert data.current_position == position
    del tags["u.edge"]
    assert await data.room_account_data_since(ALICE, 0, position) == {
        ROOM: [{"type": "m.tag", "content": {"tags": tags}}]
    }
    assert await data.get_for_room(ALICE, ALICE, ROOM, "m.tag") == {"tags": tags}


@pytest.mark.parametrize(
    ("user", "room_id", "tag", "content", "status", "errcode"),
    [
        pytest.param(BOB, ROOM, "u.x", {}, 403, Errcode.FORBIDDEN, id="other-user"),
        pytest.param(ALICE, OTHER_ROOM, "u.x", {}, 403, Errcode.FORBIDDEN, id="no-membership"),
        pytest.param(ALICE, ROOM, "u." + "x" * 254, {}, 400, Errcode.INVALID_PARAM, id="long"),
        pytest.param(ALICE, ROOM, "u.x", {"order": 1.5}, 400, Errcode.INVALID_PARAM, id="big"),
        pytest.param(ALICE, ROOM, "u.x", {"order": -0.1}, 400, Errcode.INVALID_PARAM, id="neg"),
        pytest.param(ALICE, ROOM, "u.x", {"order": "0.5"}, 400, Errcode.INVALID_PARAM, id="str"),
        pytest.param(ALICE, ROOM, "u.x", {"order": True}, 400, Errcode.INVALID_PARAM, id="bool"),
    ],
)
async def test_tag_errors(
    world: World,
    user: UserID,
    room_id: RoomID,
    tag: str,
    content: JsonDict,
    status: int,
    errcode: Errcode,
) -> None:
    with pytest.raises(MatrixError) as info:
        await world.account_data.add_tag(user, ALICE, room_id, tag, content)
    assert_error(info, status, errcode)
