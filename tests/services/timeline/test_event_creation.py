"""EventCreationService over a real SQLite database with a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest

from peyvand.errors import MatrixError, ProcessUnreachable
from peyvand.events.room_versions import ROOM_V10, ROOM_V12
from peyvand.events.signing import generate_signing_key
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.forwarding import ForwardedWrites
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_owners import RoomOwners, shard_characters
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import (
    SOLE_WRITER,
    EventPositions,
    Lane,
    StreamTracker,
)
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import RoomID, ServerName, UserID

ALICE = UserID("@alice:example.org")
FROZEN = 1_800_000_000.0


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[tuple[EventCreationService, EventStore]]:
    async with _events(tmp_path, SOLE_WRITER) as built:
        yield built


@asynccontextmanager
async def _events(
    tmp_path: Path, lane: Lane
) -> AsyncIterator[tuple[EventCreationService, EventStore]]:
    db = await SqliteDatabase.open(str(tmp_path / "events.db"))
    await run_migrations(db)
    store = EventStore(db)
    state = StateService(store, lane=lane)
    await state.start()
    index = RoomIndex(store)
    await index.start()
    positions: EventPositions = StreamTracker(lane=lane)
    dispatcher = EventDispatcher(
        ServerName("example.org"), state, index, Notifier(StreamToken()), positions
    )
    writer = EventWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
    service = EventCreationService(
        ServerName("example.org"),
        generate_signing_key("a_test"),
        store,
        state,
        writer,
        positions=positions,
        clock=lambda: FROZEN,
    )
    await service.start()
    writer.start()
    try:
        yield service, store
    finally:
        await writer.stop()
        await db.close()


async def test_identical_v12_rooms_in_one_millisecond_get_distinct_ids(
    events: tuple[EventCreationService, EventStore],
) -> None:
    service, store = events
    join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
    created = [
        await service.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        for _ in range(3)
    ]
    room_ids = [room_id for room_id, _ in created]
    assert len(set(room_ids)) == 3
    for room_id in room_ids:
        assert await store.get_room(room_id) is not None
    stamps = sorted(events_[0].pdu.origin_server_ts for _, events_ in created)
    assert stamps == [int(FROZEN * 1000) + i for i in range(3)]


async def test_an_event_writer_numbers_in_its_lane(tmp_path: Path) -> None:
    """The second of three event writers (issue 21): its events, backfill positions and
    state groups all fall in its residue."""
    async with _events(tmp_path, Lane(1, 3)) as (service, store):
        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
        _, created = await service.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        positions = [event.stream_ordering for event in created]
        assert len(positions) == 2
        assert all(p % 3 == 1 for p in positions)
        assert positions == sorted(positions)
        stored = await store.get_events([e.pdu.event_id for e in created])
        assert all(e.state_group is not None and e.state_group % 3 == 1 for e in stored.values())
        backfill = [service.allocate_backfill_stream() for _ in range(3)]
        assert backfill == [-2, -5, -8]


class _Forwarded:
    """ForwardedWrites stand-in: records which writer was asked to create a room."""

    def __init__(self) -> None:
        self.created: list[tuple[str, RoomID | None]] = []

    async def create_room(
        self, writer: str, *_args: object, room_id: RoomID | None, is_public: bool
    ) -> tuple[RoomID, list[object]]:
        self.created.append((writer, room_id))
        return RoomID("!elsewhere:example.org"), []


async def test_a_writer_creates_only_rooms_it_owns(tmp_path: Path) -> None:
    """Two event writers (issue 21): rooms to be named by their create event's hash are
    created by each writer in turn, each making an ID of its own shard; a room whose ID
    is chosen first is created by its owner; a creation forwarded here for another's
    room is refused rather than made or sent on."""
    owners = RoomOwners(("w1", "w2"))
    async with _events(tmp_path, Lane(1, 2)) as (service, store):
        forwarded = _Forwarded()
        service.share_rooms(cast(ForwardedWrites, forwarded), owners, "w2")
        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)

        async def create(room_id: RoomID | None, *, here: bool = False) -> RoomID:
            created, _ = await service.create_room(
                ROOM_V12 if room_id is None else ROOM_V10, ALICE,
                {"room_version": "12"} if room_id is None else {"creator": ALICE}, [join],
                room_id=room_id, is_public=False, forwarded=here,
            )  # fmt: skip
            return created

        assert await create(None) == RoomID("!elsewhere:example.org")  # w1's turn
        made = [await create(None) for _ in range(2)]  # w2, then w1 again
        assert owners.owner(made[0]) == "w2" and await store.get_room(made[0]) is not None
        assert forwarded.created == [("w1", None), ("w1", None)]
        mine = next(RoomID(f"!{c}x:example.org") for c in shard_characters(1, 2))
        theirs = next(RoomID(f"!{c}x:example.org") for c in shard_characters(0, 2))
        assert await create(mine) == mine
        assert await create(theirs) == RoomID("!elsewhere:example.org")
        assert forwarded.created[-1] == ("w1", theirs)
        with pytest.raises(MatrixError) as refused:
            await create(theirs, here=True)
        assert refused.value.status == 503
        here = await create(None, here=True)  # forwarded to this writer: made here
        assert owners.owner(here) == "w2"


class _Down(_Forwarded):
    """The other writer is down: nothing reaches it."""

    async def create_room(
        self, writer: str, *_args: object, room_id: RoomID | None, is_public: bool
    ) -> tuple[RoomID, list[object]]:
        self.created.append((writer, room_id))
        raise ProcessUnreachable


async def test_a_room_to_be_named_is_made_here_when_the_other_writer_is_down(
    tmp_path: Path,
) -> None:
    owners = RoomOwners(("w1", "w2"))
    async with _events(tmp_path, Lane(1, 2)) as (service, store):
        down = _Down()
        service.share_rooms(cast(ForwardedWrites, down), owners, "w2")
        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
        created, _ = await service.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        assert down.created == [("w1", None)]  # asked first, in turn, and down
        assert owners.owner(created) == "w2" and await store.get_room(created) is not None
        theirs = next(RoomID(f"!{c}x:example.org") for c in shard_characters(0, 2))
        with pytest.raises(ProcessUnreachable):  # a chosen ID is its owner's alone
            await service.create_room(
                ROOM_V10, ALICE, {"creator": ALICE}, [join], room_id=theirs, is_public=False
            )
        # An upgrade's new room is drawn beside the old one: one writer takes both.
        assert {owners.owner(service.new_room_id(beside=theirs)) for _ in range(20)} == {"w1"}
