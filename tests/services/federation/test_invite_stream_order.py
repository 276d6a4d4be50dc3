"""Stream positions are announced in order (issue 21): a remote invite, stored in its own
transaction at the next events position, must not move /sync's token past an event
still queued in the EventWriter at a lower position. A sync whose ``next_batch`` were
taken in that window would never see the queued event: its next read starts above it.

The InviteInbox, EventCreationService, EventWriter and EventDispatcher run over the
real storage of both backends; a pre-commit hook holds the writer's commit so the window
is open for as long as the test wants. Stand-ins take the place of what the invite
checks ask of the keyring and the policies (all of which admit it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from harness.postgres import PostgresCluster
from peyvand.config import InterconnectConfig
from peyvand.errors import MatrixError
from peyvand.events.builder import build_pdu
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V12
from peyvand.events.signing import generate_signing_key
from peyvand.federation.keyring import Keyring
from peyvand.services.federation.invite_inbox import InviteInbox
from peyvand.services.federation.invite_policy import InvitePolicyService
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_follower import (
    EventPositionPublisher,
    EventStreamFollower,
    followed_position,
)
from peyvand.services.timeline.event_writer import EventWriter, TxnWrite
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions, StreamTracker
from peyvand.storage.bus import LocalBus
from peyvand.storage.database import Database
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.remote_invites import RemoteInvite, RemoteInviteStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.storage.stream_positions import StreamPositionStore
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

HERE = ServerName("example.org")
REMOTE = ServerName("remote.test")
ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
CAROL = UserID("@carol:remote.test")
REMOTE_KEY = generate_signing_key("remote")
ELSEWHERE = RoomID("!elsewhere:remote.test")


class _SignedByAnyone:
    """Keyring stand-in: every signature checks out."""

    async def verify_event_signatures(self, checks: Sequence[tuple[Any, Any, int]]) -> list[bool]:
        return [True] * len(checks)


class _Invites(RemoteInviteStore):
    """The remote invites' storage, whose next ``put`` may be made to fail."""

    fail_put = False

    async def put(self, invite: RemoteInvite) -> None:
        if self.fail_put:
            self.fail_put = False
            raise RuntimeError("the invite cannot be stored")
        await super().put(invite)


class _AdmitAll:
    """Invite policy and policy-list stand-in: nothing is refused or held."""

    config = InterconnectConfig()

    async def admit_remote_invite(self, user_id: UserID, room_id: RoomID) -> bool:
        return False

    async def check_invite(self, room_id: RoomID, sender: UserID, target: UserID) -> None:
        return None


@dataclass
class World:
    db: Database
    notifier: Notifier
    events: EventCreationService
    writer: EventWriter
    inbox: InviteInbox
    invites: _Invites
    index: RoomIndex
    store: EventStore
    positions: EventPositions
    dispatcher: EventDispatcher
    # Closed: the pre-commit hook holds the writer's commit.
    gate: asyncio.Event
    # Set once the hook waits at the closed gate.
    held: asyncio.Event
    fail_next: bool = False

    async def hook(self, batch: Sequence[EventToPersist]) -> TxnWrite | None:
        if not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
        if not self.fail_next:
            return None
        self.fail_next = False

        async def write(_txn: Any) -> None:
            raise RuntimeError("the commit fails")

        return write

    async def room(self) -> RoomID:
        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
        room_id, _ = await self.events.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        return room_id

    async def held_send(self, room_id: RoomID) -> asyncio.Task[Any]:
        """A message of ``room_id`` queued in the writer, its commit held at the gate."""
        self.gate.clear()
        self.held.clear()
        spec = EventSpec("m.room.message", {"msgtype": "m.text", "body": "queued"})
        task = asyncio.create_task(self.events.send(room_id, ALICE, spec))
        async with asyncio.timeout(10):
            await self.held.wait()
        return task

    async def remote_invite(self, room: RoomID) -> None:
        """PUT /invite v2 from remote.test: CAROL invites BOB to ``room`` (unknown here)."""
        invite = build_pdu(
            ROOM_V10,
            room_id=room,
            event_type="m.room.member",
            sender=CAROL,
            content={"membership": "invite"},
            state_key=BOB,
            prev_events=[EventID("$prev")],
            auth_events=[EventID("$create")],
            depth=3,
            origin_server_ts=int(time.time() * 1000),
            origin_server_name=REMOTE,
            signing_key=REMOTE_KEY,
        )
        body: JsonDict = {"room_version": "10", "event": dict(invite.data)}
        await self.inbox.on_invite(REMOTE, invite.room_id, invite.event_id, body)


async def _no_push(_pdu: Pdu, _stream: int, _state: list[JsonDict]) -> None:
    return None


async def _exists(_user: UserID) -> bool:
    return True


@pytest.fixture
async def world(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[World]:
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "order.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("invite_order"))
    await run_migrations(db)
    store = EventStore(db)
    invites = _Invites(db)
    state = StateService(store)
    await state.start()
    index = RoomIndex(store, invites)
    await index.start()
    notifier = Notifier(StreamToken(events=await store.get_max_stream_ordering()))
    positions: EventPositions = StreamTracker()
    dispatcher = EventDispatcher(HERE, state, index, notifier, positions)
    writer = EventWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
    events = EventCreationService(
        HERE, generate_signing_key("here"), store, state, writer, positions=positions
    )
    admit = _AdmitAll()
    inbox = InviteInbox(
        HERE,
        cast(Keyring, _SignedByAnyone()),
        state,
        cast(FederationEventHandler, None),
        invites,
        generate_signing_key("here"),
        events.allocate_stream,
        events.abandon_stream,
        _exists,
        dispatcher.on_remote_membership,
        cast(InvitePolicyService, admit),
        cast(PolicyListService, admit),
        _no_push,
    )
    world = World(
        db,
        notifier,
        events,
        writer,
        inbox,
        invites,
        index,
        store,
        positions,
        dispatcher,
        asyncio.Event(),
        asyncio.Event(),
    )
    world.gate.set()
    writer.add_pre_commit(world.hook)
    await events.start()
    writer.start()
    try:
        yield world
    finally:
        world.gate.set()
        await writer.stop()
        await db.close()


async def test_a_remote_invite_never_moves_the_token_past_a_queued_event(world: World) -> None:
    room_id = await world.room()
    since = world.notifier.current_token.events
    send = await world.held_send(room_id)

    await world.remote_invite(ELSEWHERE)

    # The invite is stored, above the queued message's position...
    assert world.positions.persisted_upto == since
    # ...but /sync is not told of any position while the message below it is in flight:
    # a sync taking next_batch now would start its next read above the message.
    window_token = world.notifier.current_token.events
    assert window_token == since
    world.gate.set()
    async with asyncio.timeout(10):
        sent = await send
    # Both are announced once the message commits, and a read from the token handed out
    # in the window finds the message.
    assert world.notifier.current_token.events == sent.stream_ordering + 1
    found = await world.store.get_room_events(
        room_id,
        after=window_token,
        before=world.notifier.current_token.events,
        limit=10,
        newest_first=True,
    )
    assert [e.pdu.event_id for e in found] == [sent.pdu.event_id]
    assert (await world.index.memberships(BOB))[ELSEWHERE] == ("invite", sent.stream_ordering + 1)


async def test_a_failed_commit_does_not_stall_the_stream(world: World) -> None:
    """The positions of events whose commit failed are abandoned: what was held back
    behind them (here a remote invite) is announced, and later events are too."""
    room_id = await world.room()
    since = world.notifier.current_token.events
    world.fail_next = True
    send = await world.held_send(room_id)
    await world.remote_invite(ELSEWHERE)
    assert world.notifier.current_token.events == since

    world.gate.set()
    with pytest.raises(RuntimeError, match="the commit fails"):
        async with asyncio.timeout(10):
            await send

    assert world.notifier.current_token.events == since + 2
    assert world.positions.in_flight == 0
    assert (await world.index.memberships(BOB))[ELSEWHERE] == ("invite", since + 2)
    later = await world.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "on"}))
    assert world.notifier.current_token.events == later.stream_ordering


async def test_an_invite_that_cannot_be_stored_does_not_stall_the_stream(world: World) -> None:
    """A remote invite whose own transaction fails gives its position back."""
    room_id = await world.room()
    world.invites.fail_put = True
    with pytest.raises(RuntimeError, match="cannot be stored"):
        await world.remote_invite(ELSEWHERE)
    assert world.positions.in_flight == 0

    sent = await world.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "on"}))

    assert world.notifier.current_token.events == sent.stream_ordering
    assert ELSEWHERE not in await world.index.memberships(BOB)


async def test_a_room_creation_that_fails_gives_its_positions_back(world: World) -> None:
    """Room creation takes positions as it builds the room's first events; when one of
    them is refused, nothing is enqueued and the positions are abandoned, so the stream
    does not stall behind them."""
    room_id = await world.room()
    refused = EventSpec("m.room.power_levels", {"users": {ALICE: 100}}, "")  # v12: 403
    with pytest.raises(MatrixError, match="creators may not be listed"):
        await world.events.create_room(
            ROOM_V12,
            ALICE,
            {"room_version": "12"},
            [EventSpec("m.room.member", {"membership": "join"}, ALICE), refused],
            room_id=None,
            is_public=False,
        )
    assert world.positions.in_flight == 0

    sent = await world.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "on"}))

    assert world.notifier.current_token.events == sent.stream_ordering


async def test_an_abandoned_position_never_reaches_a_token(world: World) -> None:
    """No events position handed out in a token is used again after a restart. When the
    highest position allocated is abandoned (a remote invite that could not be stored)
    while a lower event commits, the token must not name the abandoned position: a
    restart continues after the highest stored position, and the next event would take
    the token's own position, never seen by a sync holding that token."""
    room_id = await world.room()
    send = await world.held_send(room_id)
    world.invites.fail_put = True
    with pytest.raises(RuntimeError, match="cannot be stored"):
        await world.remote_invite(ELSEWHERE)  # takes the position above the queued event
    world.gate.set()
    async with asyncio.timeout(10):
        sent = await send
    token = world.notifier.current_token.events
    assert token == sent.stream_ordering
    assert world.positions.persisted_upto == sent.stream_ordering + 1

    # A restart: event creation continues after the highest stored position.
    world.positions.start_after(await world.store.get_max_stream_ordering())
    later = await world.events.send(room_id, ALICE, EventSpec("m.room.message", {"body": "on"}))

    assert later.stream_ordering > token
    found = await world.store.get_room_events(
        room_id, after=token, before=later.stream_ordering, limit=10, newest_first=True
    )
    assert [e.pdu.event_id for e in found] == [later.pdu.event_id]


async def test_a_reader_started_in_the_window_announces_the_queued_event(world: World) -> None:
    """A process following the writer's commits (a client reader, issue 21) that starts
    while the remote invite is stored above the queued event starts from the writer's
    recorded position, not from the highest stored one: it announces the event once it
    commits. Started above it, its notifier, room index and follower would skip it for
    good."""
    bus = LocalBus("writer")
    positions = StreamPositionStore(world.db)
    publisher = EventPositionPublisher(
        bus,
        positions,
        "writer",
        lambda: world.notifier.current_token.events,
        world.positions,
        world.store,
        ["writer"],
    )
    world.dispatcher.advanced.append(publisher.advanced)
    await publisher.start()
    # Recorded before the writer writes: a reader finding none may start from what is stored.
    assert await positions.positions("events") == {"writer": world.notifier.current_token.events}
    room_id = await world.room()
    send = await world.held_send(room_id)
    await world.remote_invite(ELSEWHERE)
    invited_at = await world.store.get_max_stream_ordering()

    # The reader (re)starts now, as wiring.local and wiring.workers start it.
    starts_at = await followed_position(positions, world.store, ["writer"])
    state = StateService(world.store)
    await state.start()
    index = RoomIndex(world.store, world.invites, starts_at=starts_at)
    await index.start()
    notifier = Notifier(StreamToken(events=starts_at))
    dispatcher = EventDispatcher(HERE, state, index, notifier, StreamTracker())
    seen: list[EventID] = []
    caught_up = asyncio.Event()

    def announced(batch: Sequence[EventToPersist]) -> None:
        seen.extend(e.pdu.event_id for e in batch)
        if notifier.current_token.events >= invited_at:
            caught_up.set()

    dispatcher.listeners.append(announced)
    follower = EventStreamFollower(
        bus, positions, world.store, world.invites, state, dispatcher, starts_at, writers=["writer"]
    )
    await follower.start()
    try:
        world.gate.set()
        async with asyncio.timeout(10):
            sent = await send
            if notifier.current_token.events < invited_at:
                await caught_up.wait()
        assert sent.stream_ordering < invited_at
        assert sent.pdu.event_id in seen
        assert notifier.current_token.events == invited_at == world.notifier.current_token.events
    finally:
        await follower.stop()
        await publisher.stop()
