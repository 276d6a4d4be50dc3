"""A group commit never fails for one member's bad row (issue 12): the EventWriter with
EventCreationService over the real storage of both backends. One event that cannot be
stored shares a batch with sends in other rooms; only its own room fails, the others
commit (with what the pre-commit hooks add for them) and are served. What clients read
of a room's current state waits for the commit of what it reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.postgres import PostgresCluster
from peyvand.events.room_versions import ROOM_V12
from peyvand.events.signing import generate_signing_key
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_writer import EventWriter, TxnWrite
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.stream_tracker import EventPositions, StreamTracker
from peyvand.storage.database import Connection, Database
from peyvand.storage.errors import StorageError
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist, StoredEvent
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, RoomID, ServerName, UserID

ALICE = UserID("@alice:example.org")
GOOD_ROOMS = 6


@dataclass
class World:
    db: Database
    store: EventStore
    state: StateService
    notifier: Notifier
    writer: EventWriter
    events: EventCreationService
    # Closed: the pre-commit hook waits (the writer holds the batch it is committing).
    gate: asyncio.Event
    # Set once the hook waits at the closed gate.
    held: asyncio.Event
    enqueued: list[Sequence[EventToPersist]]
    # Set at every enqueue.
    more: asyncio.Event
    # The size of each batch the hook was called for (one per transaction).
    batches: list[int] = field(default_factory=list)

    async def hook(self, batch: Sequence[EventToPersist]) -> TxnWrite:
        """A pre-commit hook writing a row per event, in the events' transaction."""
        self.batches.append(len(batch))
        if not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
        rows = [(e.pdu.event_id,) for e in batch]

        async def write(txn: Connection) -> None:
            await txn.executemany("INSERT INTO test_hook_rows (event_id) VALUES ($1)", rows)

        return write

    async def hook_rows(self) -> set[EventID]:
        return {EventID(r[0]) for r in await self.db.fetch("SELECT event_id FROM test_hook_rows")}

    async def room(self) -> RoomID:
        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
        room_id, _ = await self.events.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        return room_id

    async def until_enqueued(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.enqueued) < count:
                self.more.clear()
                await self.more.wait()


@asynccontextmanager
async def world_on(db: SqliteDatabase | PostgresDatabase) -> AsyncIterator[World]:
    await run_migrations(db)
    await db.execute("CREATE TABLE test_hook_rows (event_id TEXT PRIMARY KEY)")
    store = EventStore(db)
    state = StateService(store)
    await state.start()
    index = RoomIndex(store)
    await index.start()
    notifier = Notifier(StreamToken())
    positions: EventPositions = StreamTracker()
    dispatcher = EventDispatcher(ServerName("example.org"), state, index, notifier, positions)
    enqueued: list[Sequence[EventToPersist]] = []
    more = asyncio.Event()

    class CountingWriter(EventWriter):
        def enqueue(self, events: Sequence[EventToPersist]) -> asyncio.Future[None]:
            enqueued.append(events)
            more.set()
            return super().enqueue(events)

    writer = CountingWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
    service = EventCreationService(
        ServerName("example.org"),
        generate_signing_key("a_test"),
        store,
        state,
        writer,
        positions=positions,
    )
    world = World(
        db,
        store,
        state,
        notifier,
        writer,
        service,
        asyncio.Event(),
        asyncio.Event(),
        enqueued,
        more,
    )
    world.gate.set()
    writer.add_pre_commit(world.hook)
    await service.start()
    writer.start()
    try:
        yield world
    finally:
        world.gate.set()
        await writer.stop()
        await db.close()


@pytest.fixture
async def world(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[World]:
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "writer.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("writer_isolation"))
    async with world_on(db) as opened:
        yield opened


@pytest.fixture
async def postgres_world(postgres_cluster: PostgresCluster) -> AsyncIterator[World]:
    db = await PostgresDatabase.open(postgres_cluster.create_database("writer_nul"))
    async with world_on(db) as opened:
        yield opened


def message(body: str) -> EventSpec:
    return EventSpec("m.room.message", {"msgtype": "m.text", "body": body})


async def commit_beside_sends(
    world: World, good_rooms: list[RoomID], bad: Sequence[Coroutine[Any, Any, object]]
) -> tuple[list[StoredEvent], list[object]]:
    """Hold the writer on a first commit, queue a send in each of ``good_rooms`` with the
    ``bad`` ones in between, then let the writer commit them all as one batch. Returns
    the good sends' events and the bad ones' outcomes."""
    world.gate.clear()
    world.held.clear()
    blocker = asyncio.create_task(world.events.send(good_rooms[0], ALICE, message("first")))
    async with asyncio.timeout(10):
        await world.held.wait()
    already = len(world.enqueued)
    sends: list[asyncio.Task[StoredEvent]] = []
    failing: list[asyncio.Task[object]] = []
    for index, room in enumerate(good_rooms):
        sends.append(asyncio.create_task(world.events.send(room, ALICE, message(f"in {room}"))))
        if index < len(bad):
            failing.append(asyncio.create_task(bad[index]))
    await world.until_enqueued(already + len(good_rooms) + len(bad))
    world.batches.clear()
    world.gate.set()
    await blocker
    sent = list(await asyncio.gather(*sends))
    return sent, list(await asyncio.gather(*failing, return_exceptions=True))


async def assert_committed_and_served(
    world: World, good_rooms: list[RoomID], sent: list[StoredEvent], since: int
) -> None:
    ids = [e.pdu.event_id for e in sent]
    stored = await world.store.get_events(ids)
    assert set(stored) == set(ids)
    assert {e.pdu.room_id for e in stored.values()} == set(good_rooms)
    # Announced: the stream moved past them, and a read up to it finds every room.
    until = world.notifier.current_token.events
    assert until >= max(e.stream_ordering for e in sent)
    found = await world.store.get_rooms_with_events_since(good_rooms, since, until)
    assert found == set(good_rooms)
    for event in sent:
        newest = await world.store.get_room_events(
            event.pdu.room_id, after=since, before=until, limit=10, newest_first=True
        )
        assert newest[0].pdu.event_id == event.pdu.event_id
    # The hook's rows were committed with the events, on the retry too.
    assert set(ids) <= await world.hook_rows()


def stored_again(world: World, original: StoredEvent) -> EventToPersist:
    """``original`` as if received once more (over federation), at a new position."""
    return EventToPersist(
        pdu=original.pdu,
        stream_ordering=world.events.allocate_stream(),
        state_group=original.state_group,
        new_state_group=None,
        txn=None,
        relates_to=None,
        rel_type=None,
        new_extremities=(original.pdu.event_id,),
    )


async def test_duplicate_events_fail_only_their_own_rooms(world: World) -> None:
    """Events persisted as federation does whose IDs are already stored fail their
    INSERT on both backends; the sends in the other rooms of their batch commit."""
    good_rooms = [await world.room() for _ in range(GOOD_ROOMS)]
    bad_rooms = [await world.room() for _ in range(2)]
    originals = [await world.events.send(r, ALICE, message("original")) for r in bad_rooms]
    since = world.notifier.current_token.events
    copies = [stored_again(world, original) for original in originals]

    sent, outcomes = await commit_beside_sends(
        world, good_rooms, [world.events.persist([copy]) for copy in copies]
    )

    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    await assert_committed_and_served(world, good_rooms, sent, since)
    for original, copy in zip(originals, copies, strict=True):
        # The stored original is untouched and its room works on (reloaded).
        kept = await world.store.get_events([original.pdu.event_id])
        assert kept[original.pdu.event_id].stream_ordering == original.stream_ordering
        after = await world.events.send(original.pdu.room_id, ALICE, message("after"))
        assert after.pdu.prev_event_ids == [original.pdu.event_id]
        assert after.pdu.event_id in await world.store.get_events([after.pdu.event_id])
        # Later sends commit, and are announced, past the unused positions.
        later = await world.events.send(good_rooms[-1], ALICE, message("later"))
        assert later.stream_ordering > copy.stream_ordering
        assert world.notifier.current_token.events == later.stream_ordering


async def test_a_batch_without_failure_is_one_transaction(world: World) -> None:
    """The common path costs what it did: one transaction (one hook call) per batch."""
    rooms = [await world.room() for _ in range(GOOD_ROOMS)]
    since = world.notifier.current_token.events

    sent, _ = await commit_beside_sends(world, rooms, [])

    assert world.batches == [len(rooms)]
    await assert_committed_and_served(world, rooms, sent, since)


@pytest.mark.postgres
async def test_a_nul_state_key_fails_only_its_own_room_on_postgresql(
    postgres_world: World,
) -> None:
    """PostgreSQL text cannot hold U+0000: a state event with one in its state key (built
    below the HTTP layer, which refuses it) fails with what its room queued on top of it,
    not the other rooms of its batch."""
    world = postgres_world
    good_rooms = [await world.room() for _ in range(GOOD_ROOMS)]
    bad_room = await world.room()
    since = world.notifier.current_token.events
    bad = EventSpec("org.example.loop", {}, "a\x00b")

    sent, outcomes = await commit_beside_sends(
        world,
        good_rooms,
        [
            world.events.send(bad_room, ALICE, bad),
            world.events.send(bad_room, ALICE, message("built on the bad one")),
        ],
    )

    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    await assert_committed_and_served(world, good_rooms, sent, since)
    # The failed events are neither stored nor still cached; their room works on.
    failed = [
        e.pdu.event_id for batch in world.enqueued for e in batch if e.pdu.room_id == bad_room
    ]
    assert len(failed) >= 2
    assert await world.state.get_events(failed[-2:]) == {}
    after = await world.events.send(bad_room, ALICE, message("after"))
    assert after.pdu.event_id in await world.store.get_events([after.pdu.event_id])


async def read_while_held(
    world: World, room: RoomID, spec: EventSpec
) -> tuple[asyncio.Task[StoredEvent], asyncio.Task[RoomSnapshot | None]]:
    """Hold the writer on ``spec`` sent in ``room``, and start ``committed_room`` then:
    the room's head already holds the event; storage does not, and the read waits."""
    world.gate.clear()
    world.held.clear()
    send = asyncio.create_task(world.events.send(room, ALICE, spec))
    async with asyncio.timeout(10):
        await world.held.wait()
    head = await world.state.get_room(room)
    assert head is not None
    assert (
        head.state[(spec.event_type, spec.state_key or "")]
        not in (await world.store.get_current_state_ids(room)).values()
    )
    read = asyncio.create_task(world.state.committed_room(room))
    await asyncio.sleep(0.05)
    assert not read.done()
    world.gate.set()
    return send, read


async def test_a_state_read_waits_for_the_commit_of_what_it_reads(world: World) -> None:
    """The room's snapshot moves past an event before its commit. What clients read of
    current state (``committed_room``: GET /state, the member lists) is given only once
    that commit is over, so it agrees with what is read from storage (``joined_rooms``,
    /sync)."""
    room = await world.room()

    send, read = await read_while_held(world, room, EventSpec("m.room.name", {"name": "new"}, ""))

    sent = await send
    async with asyncio.timeout(10):
        snapshot = await read
    assert snapshot is not None
    assert snapshot.state[("m.room.name", "")] == sent.pdu.event_id
    stored = await world.store.get_current_state_ids(room)
    assert stored[("m.room.name", "")] == sent.pdu.event_id


@pytest.mark.postgres
async def test_a_state_read_never_gives_an_event_whose_commit_failed(
    postgres_world: World,
) -> None:
    """A read waiting for a commit that fails gets the room as storage holds it."""
    world = postgres_world
    room = await world.room()
    before = await world.store.get_current_state_ids(room)

    send, read = await read_while_held(world, room, EventSpec("org.example.loop", {}, "a\x00b"))

    with pytest.raises(StorageError):
        await send
    async with asyncio.timeout(10):
        snapshot = await read
    assert snapshot is not None
    assert snapshot.state == before
