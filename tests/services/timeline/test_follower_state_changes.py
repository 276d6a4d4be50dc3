"""A process following the event writer's commits (a client reader, issue 21) moves its
room index by what each commit changed of current state, as the writer does, not by the
events themselves: a membership event that did not become current (it lost state
resolution at a fork) changes nobody's membership there, and an event that moved other
members (a merge of forks, over federation) moves them there too. Both backends, the
writer's storage and the follower over one database."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest

from peyvand.events.room_versions import ROOM_V12
from peyvand.events.signing import generate_signing_key
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_follower import EventStreamFollower
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions, StreamTracker
from peyvand.storage.bus import LocalBus
from peyvand.storage.database import Database
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, StateChange
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.storage.stream_positions import StreamPositionStore
from peyvand.types import RoomID, ServerName, UserID

HERE = ServerName("example.org")
ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
WAIT_SECONDS = 10.0


@dataclasses.dataclass
class Writer:
    db: Database
    store: EventStore
    events: EventCreationService
    notifier: Notifier
    # What the next enqueued batch's last event changes of current state, as a commit
    # received over federation may (None: as the event itself).
    changes: tuple[StateChange, ...] | None = None


@pytest.fixture
async def writer(database: Database) -> AsyncIterator[Writer]:
    db = database
    store = EventStore(db)
    state = StateService(store)
    await state.start()
    index = RoomIndex(store, RemoteInviteStore(db))
    await index.start()
    notifier = Notifier(StreamToken(events=await store.get_max_stream_ordering()))
    positions: EventPositions = StreamTracker()
    dispatcher = EventDispatcher(HERE, state, index, notifier, positions)
    event_writer = EventWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
    events = EventCreationService(
        HERE, generate_signing_key("here"), store, state, event_writer, positions=positions
    )
    world = Writer(db, store, events, notifier)
    enqueue = event_writer.enqueue

    def changing(batch: Sequence[EventToPersist]) -> asyncio.Future[None]:
        if world.changes is not None:
            last = dataclasses.replace(batch[-1], current_state_changes=world.changes)
            batch = [*batch[:-1], last]
            world.changes = None
        return enqueue(batch)

    cast(Any, event_writer).enqueue = changing
    await events.start()
    event_writer.start()
    try:
        yield world
    finally:
        await event_writer.stop()


async def _public_room(writer: Writer) -> RoomID:
    """A public room of alice's (version 12)."""
    room_id, _ = await writer.events.create_room(
        ROOM_V12,
        ALICE,
        {"room_version": "12"},
        [
            EventSpec("m.room.member", {"membership": "join"}, ALICE),
            EventSpec("m.room.join_rules", {"join_rule": "public"}, ""),
        ],
        room_id=None,
        is_public=True,
    )
    return RoomID(room_id)


@dataclasses.dataclass
class Reader:
    """A process following the writer from ``starts_at``: its state, index and
    dispatcher."""

    state: StateService
    index: RoomIndex
    notifier: Notifier
    dispatcher: EventDispatcher

    @classmethod
    async def start(cls, writer: Writer, starts_at: int) -> Reader:
        state = StateService(writer.store)
        await state.start()
        index = RoomIndex(writer.store, RemoteInviteStore(writer.db), starts_at=starts_at)
        await index.start()
        notifier = Notifier(StreamToken(events=starts_at))
        return cls(
            state, index, notifier, EventDispatcher(HERE, state, index, notifier, StreamTracker())
        )

    async def follow(
        self, writer: Writer, room_id: RoomID, target: int | None = None
    ) -> str | None:
        """Follow the writer's commits up to ``target`` (by default its position); bob's
        membership of the room in the index then (None: none)."""
        if target is None:
            target = writer.notifier.current_token.events
        positions = StreamPositionStore(writer.db)
        await positions.advance("events", "writer", target)
        follower = EventStreamFollower(
            LocalBus("reader"),
            positions,
            writer.store,
            RemoteInviteStore(writer.db),
            self.state,
            self.dispatcher,
            self.notifier.current_token.events,
            writers=["writer"],
        )
        caught_up = asyncio.Event()

        def announced(_: Sequence[EventToPersist]) -> None:
            if self.notifier.current_token.events >= target:
                caught_up.set()

        self.dispatcher.listeners.append(announced)
        await follower.start()
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await caught_up.wait()
        finally:
            await follower.stop()
            self.dispatcher.listeners.remove(announced)
        membership = (await self.index.memberships(BOB)).get(room_id)
        return membership[0] if membership is not None else None


async def test_a_follower_moves_memberships_as_current_state_moved(writer: Writer) -> None:
    room_id = await _public_room(writer)
    await writer.events.send(room_id, BOB, EventSpec("m.room.member", {"membership": "join"}, BOB))

    # The reader, started now, keeps bob's memberships.
    reader = await Reader.start(writer, writer.notifier.current_token.events)
    assert (await reader.index.memberships(BOB))[room_id][0] == "join"

    # Bob's leave that does not become current; then a message whose commit moves bob
    # out (citing the leave), as a merge of forks would.
    writer.changes = ()
    leave = await writer.events.send(
        room_id, BOB, EventSpec("m.room.member", {"membership": "leave"}, BOB)
    )
    assert await reader.follow(writer, room_id) == "join"
    writer.changes = ((("m.room.member", BOB), leave.pdu.event_id, "leave"),)
    await writer.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "merged"}))
    assert await reader.follow(writer, room_id) == "leave"


async def test_a_follower_removes_what_a_state_reset_removed(writer: Writer) -> None:
    """A commit that removes bob's member key from current state (state resolution left
    no event for it): gone from storage, and from the follower's snapshot and index."""
    room_id = await _public_room(writer)
    await writer.events.send(room_id, BOB, EventSpec("m.room.member", {"membership": "join"}, BOB))
    reader = await Reader.start(writer, writer.notifier.current_token.events)
    assert (await reader.index.memberships(BOB))[room_id][0] == "join"
    snapshot = await reader.state.get_room(room_id)
    assert snapshot is not None and snapshot.memberships.get(BOB) == "join"

    bob_key = ("m.room.member", BOB)
    writer.changes = ((bob_key, None, None),)
    await writer.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "reset"}))
    assert await reader.follow(writer, room_id) is None
    followed = await reader.state.get_room(room_id)
    assert followed is not None
    assert bob_key not in followed.state
    assert BOB not in followed.memberships
    assert bob_key not in await writer.store.get_current_state_ids(room_id)
    assert room_id not in await writer.store.get_memberships_for_user(BOB)
    end = writer.notifier.current_token.events
    assert await writer.store.current_state_removed_between(0, end) == [(bob_key, end)]

    # Set again, the key is no longer logged as removed.
    await writer.events.send(room_id, BOB, EventSpec("m.room.member", {"membership": "join"}, BOB))
    assert await reader.follow(writer, room_id) == "join"
    end = writer.notifier.current_token.events
    assert await writer.store.current_state_removed_between(0, end) == []


async def test_a_join_removed_later_was_current_in_between(writer: Writer) -> None:
    """Bob's join, whose key a later commit removed before the follower read it: followed
    up to the join, bob is joined there (it was current in between), then not."""
    room_id = await _public_room(writer)
    starts_at = writer.notifier.current_token.events
    join = await writer.events.send(
        room_id, BOB, EventSpec("m.room.member", {"membership": "join"}, BOB)
    )
    writer.changes = ((("m.room.member", BOB), None, None),)
    await writer.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "reset"}))
    reader = await Reader.start(writer, starts_at)
    assert room_id not in await reader.index.memberships(BOB)
    assert await reader.follow(writer, room_id, join.stream_ordering) == "join"
    assert await reader.follow(writer, room_id) is None
