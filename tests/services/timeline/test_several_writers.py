"""Two event writers and a reader on one PostgreSQL database (issue 21, several event
writers): each writer allocates in its lane, publishes its position on the bus and
follows the other; every process announces every event once, in position order, and
never past a position still in flight at either writer.

Each "process" is the timeline of one (storage, state, room index, notifier, tracker,
dispatcher, group-committing writer, event creation) with its own connection pool and
``PostgresBus``, wired as ``wiring.local`` and ``wiring.workers`` wire a deployment's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.postgres import PostgresCluster
from peyvand.errors import MatrixError
from peyvand.events.room_versions import ROOM_V12
from peyvand.events.signing import generate_signing_key
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.absent_writers import AbsentWriters, commit_fence
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher, HeldAnnouncements
from peyvand.services.timeline.event_follower import (
    EventPositionPublisher,
    EventStreamFollower,
    OwnCommits,
    followed_position,
)
from peyvand.services.timeline.event_writer import EventWriter, TxnWrite
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions, Lane, StreamTracker
from peyvand.storage.bus import PostgresBus
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.storage.stream_positions import StoodIn, StreamPositionStore
from peyvand.types import RoomID, ServerName, UserID
from peyvand.wiring.leased import InstanceName

pytestmark = pytest.mark.postgres

HERE = ServerName("example.org")
ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
WRITERS = ("writer1", "writer2")
WAIT_SECONDS = 10.0


@dataclass
class Process:
    name: str
    db: PostgresDatabase
    bus: PostgresBus
    notifier: Notifier
    tracker: EventPositions
    components: list[Any]
    events: EventCreationService | None = None
    writer: EventWriter | None = None
    # Every events position this process announced, in the order it did.
    announced: list[int] = field(default_factory=list)
    # Closed: the group commit waits before writing (set once it waits).
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    claim: InstanceName | None = None

    async def hold(self, _batch: Sequence[EventToPersist]) -> TxnWrite | None:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return None

    def on_told(self, batch: Sequence[EventToPersist]) -> None:
        self.announced.extend(e.stream_ordering for e in batch)

    @property
    def position(self) -> int:
        return self.notifier.current_token.events

    async def room(self, creator: UserID) -> RoomID:
        assert self.events is not None
        join = EventSpec("m.room.member", {"membership": "join"}, creator)
        room_id, _ = await self.events.create_room(
            ROOM_V12, creator, {"room_version": "12"}, [join], room_id=None, is_public=False
        )
        return room_id

    async def send(self, room_id: RoomID, sender: UserID, body: str) -> int:
        assert self.events is not None
        spec = EventSpec("m.room.message", {"msgtype": "m.text", "body": body})
        return (await self.events.send(room_id, sender, spec)).stream_ordering


async def _process(dsn: str, name: str) -> Process:
    """One process of the deployment, started: an event writer if ``name`` is one of
    ``WRITERS``, a client reader otherwise."""
    db = await PostgresDatabase.open(dsn)
    store, invites, positions = EventStore(db), RemoteInviteStore(db), StreamPositionStore(db)
    lane = Lane(WRITERS.index(name), len(WRITERS)) if name in WRITERS else Lane()
    state = StateService(store, lane=lane)
    await state.start()
    starts_at = await followed_position(positions, store, WRITERS)
    index = RoomIndex(store, invites, starts_at=starts_at)
    await index.start()
    notifier = Notifier(StreamToken(events=starts_at))
    tracker: EventPositions = StreamTracker(lane=lane)
    dispatcher = EventDispatcher(HERE, state, index, notifier, tracker)
    bus = PostgresBus(dsn, name, backoff_seconds=(0.05, 0.5), ping_seconds=1.0)
    process = Process(name, db, bus, notifier, tracker, [])
    process.gate.set()
    dispatcher.listeners.append(process.on_told)
    own: OwnCommits | None = None
    publisher: EventPositionPublisher | None = None
    if name in WRITERS:
        claim = InstanceName(db, name)
        await claim.start()
        process.components.append(claim)
        process.claim = claim
        writer = EventWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
        writer.add_pre_commit(process.hold)
        writer.add_pre_commit(commit_fence(name, RoomOwners((name,))))
        events = EventCreationService(
            HERE, generate_signing_key(name), store, state, writer, positions=tracker
        )
        await events.start()
        writer.start()
        process.events, process.writer = events, writer
        publisher = EventPositionPublisher(
            bus, positions, name, lambda: notifier.current_token.events, tracker, store, WRITERS
        )
        dispatcher.advanced.append(publisher.advanced)
        dispatcher.held = HeldAnnouncements()
        own = OwnCommits(name, tracker, dispatcher.held)
    follower = EventStreamFollower(
        bus, positions, store, invites, state, dispatcher, starts_at, writers=WRITERS, own=own
    )
    await bus.start()
    if publisher is not None:
        publisher.published.append(follower.published)
        await publisher.start()
        process.components.append(publisher)
    await follower.start()
    process.components.append(follower)
    if publisher is not None:
        others = [w for w in WRITERS if w != name]
        absent = AbsentWriters(bus, positions, others, lambda: publisher.newest)
        await absent.start()
        process.components.append(absent)
    return process


async def _stop(process: Process) -> None:
    process.stopped = True
    process.gate.set()
    for component in reversed(process.components):
        await component.stop()
    await process.bus.stop()
    if process.writer is not None:
        await process.writer.stop()
    await process.db.close()


@dataclass
class Deployment:
    dsn: str
    processes: list[Process]

    async def restart(self, index: int) -> Process:
        """Stop the process at ``index`` (if running) and start it again (a new one of
        that name)."""
        if not self.processes[index].stopped:
            await _stop(self.processes[index])
        self.processes[index] = await _process(self.dsn, self.processes[index].name)
        return self.processes[index]


@pytest.fixture
async def several(postgres_cluster: PostgresCluster) -> AsyncIterator[Deployment]:
    dsn = postgres_cluster.create_database("writers")
    db = await PostgresDatabase.open(dsn)
    await run_migrations(db)
    await db.close()
    started = Deployment(dsn, [])
    try:
        for name in (*WRITERS, "reader"):
            started.processes.append(await _process(dsn, name))
        yield started
    finally:
        for process in reversed(started.processes):
            if not process.stopped:
                await _stop(process)


@pytest.fixture
def deployment(several: Deployment) -> tuple[Process, Process, Process]:
    first, second, reader = several.processes
    return first, second, reader


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT_SECONDS / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")


async def _reaches(process: Process, position: int) -> None:
    await _until(lambda: process.position >= position, f"{process.name} reaches {position}")


def _in_order_once(process: Process, expected: set[int]) -> None:
    """``process`` announced exactly ``expected``, each once, in position order."""
    assert process.announced == sorted(set(process.announced)), process.name
    assert set(process.announced) == expected, process.name


async def test_two_writers_interleave_and_every_process_sees_the_stream_in_order(
    deployment: tuple[Process, Process, Process],
) -> None:
    first, second, reader = deployment
    rooms = [await first.room(ALICE), await second.room(BOB)]

    async def sends(writer: Process, room_id: RoomID, sender: UserID) -> list[int]:
        return [await writer.send(room_id, sender, f"m{n}") for n in range(25)]

    positions = await asyncio.gather(sends(first, rooms[0], ALICE), sends(second, rooms[1], BOB))
    assert all(p % 2 == 0 for p in positions[0])  # writer1's lane
    assert all(p % 2 == 1 for p in positions[1])  # writer2's lane
    newest = max(max(positions[0]), max(positions[1]))
    for process in deployment:
        await _reaches(process, newest)
    expected = set(first.announced) | set(second.announced)
    assert set(positions[0]) | set(positions[1]) <= expected
    for process in deployment:
        _in_order_once(process, expected)

    # One writer alone: the idle one is moved along by what it hears, so the reader
    # is not held back by it.
    alone = [await first.send(rooms[0], ALICE, f"alone{n}") for n in range(5)]
    await _reaches(reader, alone[-1])  # past the idle writer
    assert set(alone) <= set(reader.announced)


async def _held_below(
    first: Process, second: Process, reader: Process
) -> tuple[asyncio.Task[int], int, list[int], RoomID]:
    """A room of each writer; a message of ``second``'s held in its group commit (the
    task sending it, its position) and four of ``first``'s sent meanwhile, the last
    above it (``first`` allocates above what it heard of ``second``, which published
    nothing of the held message); ``second``'s room."""
    rooms = [await first.room(ALICE), await second.room(BOB)]
    await _reaches(reader, max(first.position, second.position))
    second.gate.clear()
    second.waiting.clear()
    held = asyncio.create_task(second.send(rooms[1], BOB, "held"))
    async with asyncio.timeout(WAIT_SECONDS):
        await second.waiting.wait()
    held_position = second.tracker.persisted_upto + 1
    above = [await first.send(rooms[0], ALICE, f"above{n}") for n in range(4)]
    assert above[-1] > held_position
    return held, held_position, above, rooms[1]


async def test_a_position_in_flight_at_one_writer_holds_back_every_process(
    deployment: tuple[Process, Process, Process],
) -> None:
    """writer2's message waits in its group commit while writer1 commits above it:
    nobody announces writer1's messages (writer1 itself neither) until writer2's
    commit lands, then everyone announces both, in order."""
    first, second, reader = deployment
    held, held_position, above, _ = await _held_below(first, second, reader)
    await asyncio.sleep(0.5)
    for process in deployment:
        assert process.position < held_position, process.name
        assert max(process.announced) < held_position, process.name
    second.gate.set()
    async with asyncio.timeout(WAIT_SECONDS):
        assert await held == held_position
    for process in deployment:
        await _reaches(process, above[-1])
        _in_order_once(process, set(first.announced) | set(second.announced))
        assert {held_position, *above} <= set(process.announced)


async def test_a_stopped_writer_is_stood_in_for_and_rejoins(several: Deployment) -> None:
    """writer2 stops (as if killed: its instance name is free): writer1 stands in for it,
    so every process follows writer1's new messages within seconds instead of waiting
    for writer2. writer2 started again takes its name back, and what it writes is
    announced everywhere, above what was passed while it was away."""
    first, second, reader = several.processes
    rooms = [await first.room(ALICE), await second.room(BOB)]
    await _reaches(reader, max(first.position, second.position))
    await _stop(second)
    alone = [await first.send(rooms[0], ALICE, f"alone{n}") for n in range(3)]
    await _reaches(reader, alone[-1])
    await _reaches(first, alone[-1])
    assert set(alone) <= set(reader.announced) & set(first.announced)

    second = await several.restart(1)
    back = await second.send(rooms[1], BOB, "back")
    assert back > alone[-1]
    for process in several.processes:
        await _reaches(process, back)
    assert back in reader.announced and back in first.announced
    _in_order_once(reader, set(reader.announced))


async def test_a_writer_taken_for_absent_has_its_write_below_the_move_refused(
    several: Deployment,
) -> None:
    """writer2's lock connection is gone while it runs (its name free, as after a lost
    database connection) and a message of its waits in its group commit: writer1 takes
    it for absent and moves its position past the message. The commit is then refused
    (the sender gets an error), never stored below a position the readers passed; the
    next message is allocated above the move and announced everywhere."""
    first, second, reader = several.processes
    held, held_position, above, room = await _held_below(first, second, reader)
    assert second.claim is not None
    await second.claim.stop()  # the name is free: writer1 stands in within a second
    await _reaches(reader, above[-1])
    second.gate.set()
    with pytest.raises(MatrixError) as refused:
        async with asyncio.timeout(WAIT_SECONDS):
            await held
    assert refused.value.status == 503
    assert isinstance(refused.value.__cause__, StoodIn)
    assert held_position not in reader.announced
    later = await second.send(room, BOB, "later")
    assert later > above[-1]
    for process in several.processes:
        await _reaches(process, later)
        assert held_position not in process.announced
    _in_order_once(reader, set(reader.announced))
