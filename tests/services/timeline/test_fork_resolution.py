"""Forks of a room's DAG resolve to the same current state whatever the arrival order.

Two servers, ``a.test`` (Alice, the creator) and ``b.test`` (Bob, power 100), change the
name, the topic and the power levels of a room concurrently: each builds on the forward
extremities it knows and now and then learns the other's events, so the DAG forks and
merges at random (hypothesis draws the history, the timestamps, with ties, and two
arrival orders). Two receiving servers (``c.test``, the real ``FederationEventHandler``
over SQLite, each joined through ``RemoteJoiner``) get every event in a different order
that respects ``prev_events``; afterwards both must hold the same current state, in
memory and as stored (Server-Server API, "Room State Resolution").
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peyvand.events.builder import build_pdu
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.received import parse_pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V12, RoomVersion
from peyvand.events.signing import generate_signing_key
from peyvand.federation.sender import FederationSender
from peyvand.federation.transport import FederationTransport
from peyvand.services.federation.outbound_events import OutboundEvents
from peyvand.services.federation.outbound_join import RemoteJoiner
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.federation.partial_state_resync import PartialStateResync, StateSource
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.stream_tracker import EventPositions, StreamTracker
from peyvand.storage.events import EventStore
from peyvand.storage.federation_outbox import FederationOutboxStore, OutboxRow
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist
from peyvand.storage.partial_state import PartialStateRoom, PartialStateStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, RoomID, ServerName, UserID

ALICE = UserID("@alice:a.test")
BOB = UserID("@bob:b.test")
CAROL = UserID("@carol:c.test")
KEYS = {
    ServerName(name): generate_signing_key(f"k_{name[0]}")
    for name in ("a.test", "b.test", "c.test")
}
RECEIVER = ServerName("c.test")  # the server under test
SENDERS = {ServerName("a.test"): ALICE, ServerName("b.test"): BOB}
POWER: StateKey = ("m.room.power_levels", "")
T0 = 1_800_000_000_000


async def _all_valid(pdus: Sequence[Pdu]) -> list[bool]:
    return [True] * len(pdus)


class _NoRemote:
    """Events arrive in an order that respects ``prev_events``: nothing is fetched."""

    async def get_event(self, destination: str, event_id: EventID) -> Any:
        raise AssertionError(f"fetched {event_id}")

    async def get_missing_events(self, *args: Any) -> list[Any]:
        raise AssertionError("get_missing_events")

    async def get_state_ids(self, *args: Any) -> tuple[list[EventID], list[EventID]]:
        raise AssertionError("get_state_ids")

    async def backfill(self, *args: Any) -> list[Any]:
        raise AssertionError("backfill")


@dataclass
class Dag:
    """A room's events: the line every receiver joins with (``prefix``, then Carol's
    ``join``) and whatever follows."""

    version: RoomVersion
    events: dict[EventID, Pdu]
    prefix: list[Pdu]
    join: Pdu

    def create_auth(self) -> list[EventID]:
        """The create event where ``auth_events`` list it (before v12)."""
        return [] if self.version is ROOM_V12 else [self.prefix[0].event_id]

    def latest_power(self, prevs: Sequence[EventID]) -> EventID:
        """The deepest power levels event among the ancestors of ``prevs`` (any power
        levels event of the room authorises these senders)."""
        seen: set[EventID] = set()
        stack = list(prevs)
        best: Pdu | None = None
        while stack:
            event_id = stack.pop()
            if event_id in seen:
                continue
            seen.add(event_id)
            pdu = self.events[event_id]
            deeper = best is None or (pdu.depth, pdu.event_id) > (best.depth, best.event_id)
            if pdu.is_state() and pdu.state_tuple == POWER and deeper:
                best = pdu
            stack.extend(pdu.prev_event_ids)
        assert best is not None
        return best.event_id


def _sign(
    version: RoomVersion,
    server: ServerName,
    sender: UserID,
    room_id: RoomID | None,
    event_type: str,
    content: dict[str, Any],
    state_key: str | None,
    prevs: Sequence[EventID],
    auth: Sequence[EventID],
    depth: int,
    ts: int,
) -> Pdu:
    return build_pdu(
        version,
        room_id=room_id,
        event_type=event_type,
        sender=sender,
        content=content,
        state_key=state_key,
        prev_events=prevs,
        auth_events=auth,
        depth=depth,
        origin_server_ts=ts,
        origin_server_name=server,
        signing_key=KEYS[server],
    )


def _power_users(version: RoomVersion) -> dict[str, int]:
    """Bob at 100, and Alice, the creator, too before v12 (from v12 she has infinite
    power and may not be listed)."""
    return {BOB: 100} if version is ROOM_V12 else {ALICE: 100, BOB: 100}


def _room(version: RoomVersion = ROOM_V12) -> Dag:
    """Create, Alice's join, power levels (Bob at 100), public join rules, Bob's and
    Carol's joins: a line of events both receiving servers start from."""
    create_room_id = None if version is ROOM_V12 else RoomID("!fork:a.test")
    content = {"room_version": version.identifier}
    if version is not ROOM_V12:
        content["creator"] = ALICE
    create = _sign(
        version,
        ServerName("a.test"),
        ALICE,
        create_room_id,
        "m.room.create",
        content,
        "",
        [],
        [],
        1,
        T0,
    )
    room_id = create.room_id
    chain = [create]
    create_auth = [] if version is ROOM_V12 else [create.event_id]

    def add(server: ServerName, sender: UserID, event_type: str, content: Any, key: str) -> Pdu:
        members = {p.state_key: p.event_id for p in chain if p.type == "m.room.member"}
        auth = create_auth + [p.event_id for p in chain if p.type == "m.room.power_levels"]
        if sender in members:
            auth.append(members[sender])
        if event_type == "m.room.member" and sender not in members:
            auth += [p.event_id for p in chain if p.type == "m.room.join_rules"]
        pdu = _sign(
            version,
            server,
            sender,
            room_id,
            event_type,
            content,
            key,
            [chain[-1].event_id],
            auth,
            len(chain) + 1,
            T0,
        )
        chain.append(pdu)
        return pdu

    add(ServerName("a.test"), ALICE, "m.room.member", {"membership": "join"}, ALICE)
    add(ServerName("a.test"), ALICE, "m.room.power_levels", {"users": _power_users(version)}, "")
    add(ServerName("a.test"), ALICE, "m.room.join_rules", {"join_rule": "public"}, "")
    add(ServerName("b.test"), BOB, "m.room.member", {"membership": "join"}, BOB)
    join = add(ServerName("c.test"), CAROL, "m.room.member", {"membership": "join"}, CAROL)
    return Dag(version, {p.event_id: p for p in chain}, chain[:-1], join)


KINDS = ("m.room.name", "m.room.topic", "m.room.power_levels")


@st.composite
def histories(draw: st.DrawFn) -> tuple[Dag, list[EventID]]:
    """A room (v10: state resolution v2, or v12: v2.1), then concurrent state changes
    from both servers; the events in the order they were made."""
    dag = _room(draw(st.sampled_from([ROOM_V10, ROOM_V12])))
    known = {s: {p.event_id for p in dag.events.values()} for s in SENDERS}
    made: dict[str, list[EventID]] = {s: [] for s in SENDERS}
    order: list[EventID] = []
    for _ in range(draw(st.integers(2, 14))):
        server = draw(st.sampled_from(sorted(SENDERS)))
        if draw(st.integers(0, 3)) == 0:
            other = next(s for s in SENDERS if s != server)
            known[server].update(made[other])
            continue
        cited = {p for e in known[server] for p in dag.events[e].prev_event_ids}
        prevs = sorted(e for e in known[server] if e not in cited)
        kind = draw(st.sampled_from(KINDS))
        sender = SENDERS[server]
        member = next(
            p.event_id for p in dag.prefix if p.type == "m.room.member" and p.state_key == sender
        )
        if kind == "m.room.power_levels":
            content: dict[str, Any] = {
                "users": _power_users(dag.version),
                "events_default": draw(st.integers(0, 5)),
            }
        else:
            field = "name" if kind == "m.room.name" else "topic"
            content = {field: f"{server} {len(order)}"}
        pdu = _sign(
            dag.version,
            server,
            sender,
            dag.join.room_id,
            kind,
            content,
            "",
            prevs,
            [*dag.create_auth(), dag.latest_power(prevs), member],
            max(dag.events[p].depth for p in prevs) + 1,
            T0 + draw(st.integers(0, 3)),
        )
        dag.events[pdu.event_id] = pdu
        known[server].add(pdu.event_id)
        made[server].append(pdu.event_id)
        order.append(pdu.event_id)
    return dag, order


def _arrival(dag: Dag, made: Sequence[EventID], rng: random.Random) -> list[EventID]:
    """``made`` in a random order in which every event comes after its prev events."""
    pending = list(made)
    delivered: set[EventID] = set()
    arrival: list[EventID] = []
    while pending:
        ready = [
            e
            for e in pending
            if all(
                p in delivered or (p not in pending and p not in made)
                for p in dag.events[e].prev_event_ids
            )
        ]
        chosen = rng.choice(ready)
        pending.remove(chosen)
        delivered.add(chosen)
        arrival.append(chosen)
    return arrival


@dataclass
class Receiver:
    """A server receiving the room: its state, federation handler and local sends."""

    state: StateService
    handler: FederationEventHandler
    creation: EventCreationService
    joiner: RemoteJoiner
    db: SqliteDatabase
    store: EventStore
    writer: EventWriter

    async def join(self, dag: Dag) -> None:
        """Join as in ``send_join``: the room's state before Carol's join, then it."""
        answer = {
            "state": [dict(p.data) for p in dag.prefix],
            "auth_chain": [dict(p.data) for p in dag.prefix],
        }
        await self.joiner._install(
            ServerName("a.test"), dag.join.room_id, dag.version, dag.join, answer
        )

    async def receive(self, pdu: Pdu) -> None:
        parsed = parse_pdu(dict(pdu.data), pdu.room_version)
        outcome = await self.handler.process_pdu(ServerName(pdu.event_id.split(":")[-1]), parsed)
        assert outcome.status == "accepted", outcome

    async def current(self, room_id: RoomID) -> tuple[dict[StateKey, EventID], list[EventID]]:
        """The room's current state and forward extremities as stored (reloaded)."""
        self.state.forget_room(room_id)
        snapshot = await self.state.get_room(room_id)
        assert snapshot is not None
        return dict(snapshot.state), sorted(snapshot.extremities)

    async def state_at(self, event_id: EventID) -> dict[StateKey, EventID]:
        event = await self.state.get_event(event_id)
        assert event is not None
        return await self.state.state_ids_at_group(event.state_group)


@asynccontextmanager
async def _receiver(
    path: Path, server_name: ServerName = RECEIVER, remote: _NoRemote | None = None
) -> AsyncIterator[Receiver]:
    """A server: storage, state, group commit, the federation handler (asking ``remote``,
    by default nothing) and local sends."""
    db = await SqliteDatabase.open(str(path))
    await run_migrations(db)
    store = EventStore(db)
    state = StateService(store)
    await state.start()
    index = RoomIndex(store)
    await index.start()
    positions: EventPositions = StreamTracker()
    dispatcher = EventDispatcher(server_name, state, index, Notifier(StreamToken()), positions)
    writer = EventWriter(db, store, dispatcher.on_persisted, dispatcher.on_failed)
    creation = EventCreationService(
        server_name, KEYS[ServerName("c.test")], store, state, writer, positions=positions
    )
    await creation.start()
    writer.start()
    handler = FederationEventHandler(
        state,
        store,
        _all_valid,
        remote if remote is not None else _NoRemote(),
        creation.allocate_stream,
        creation.persist,
        creation.allocate_backfill_stream,
        server_name,
        lambda _pdu: None,
    )
    joiner = RemoteJoiner(
        server_name,
        KEYS[ServerName("c.test")],
        cast(FederationTransport, None),
        state,
        store,
        _all_valid,
        creation.allocate_stream,
        creation.persist,
    )
    try:
        yield Receiver(state, handler, creation, joiner, db, store, writer)
    finally:
        await writer.stop()
        await db.close()


def _hold_commits(receiver: Receiver) -> asyncio.Event:
    """Hold every commit of ``receiver``'s writer until the returned event is set."""
    gate = asyncio.Event()

    async def hold_commit(_events: Sequence[EventToPersist]) -> None:
        await gate.wait()

    receiver.writer.add_pre_commit(hold_commit)
    return gate


async def _built_after(snapshot: RoomSnapshot, extremity: EventID) -> EventID:
    """The event built on ``extremity`` (the snapshot's only forward extremity until
    then), once it is (bounded wait)."""
    for _ in range(500):
        if snapshot.extremities != [extremity]:
            break
        await asyncio.sleep(0.01)
    (built,) = snapshot.extremities
    assert built != extremity
    return built


def _resync(receiver: Receiver) -> PartialStateResync:
    """``receiver``'s partial-state resync, completing rooms from the state it is given."""
    return PartialStateResync(
        RECEIVER,
        PartialStateRooms(),
        PartialStateStore(receiver.db),
        receiver.store,
        receiver.state,
        cast(StateSource, None),
        _all_valid,
        lambda _position, _users: None,
    )


async def _receive(
    path: Path, dag: Dag, arrival: Sequence[EventID]
) -> tuple[dict[StateKey, EventID], dict[StateKey, EventID]]:
    """The room's current state after ``arrival``: in memory, and reloaded from storage."""
    async with _receiver(path) as receiver:
        await receiver.join(dag)
        for event_id in arrival:
            await receiver.receive(dag.events[event_id])
        snapshot = await receiver.state.get_room(dag.join.room_id)
        assert snapshot is not None
        in_memory = dict(snapshot.state)
        stored, _ = await receiver.current(dag.join.room_id)
        return in_memory, stored


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history=histories(), seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)))
def test_any_two_arrival_orders_give_the_same_state(
    history: tuple[Dag, list[EventID]], seeds: tuple[int, int]
) -> None:
    dag, made = history
    first = _arrival(dag, made, random.Random(seeds[0]))
    second = _arrival(dag, made, random.Random(seeds[1]))

    async def both() -> list[tuple[dict[StateKey, EventID], dict[StateKey, EventID]]]:
        with tempfile.TemporaryDirectory() as tmp:
            return [
                await _receive(Path(tmp) / "one.db", dag, first),
                await _receive(Path(tmp) / "two.db", dag, second),
            ]

    (one, one_stored), (two, two_stored) = asyncio.run(both())
    assert one == one_stored
    assert two == two_stored
    assert one == two
    for key in (("m.room.name", ""), ("m.room.topic", "")):
        sent = [e for e in made if dag.events[e].state_tuple == key]
        assert one.get(key) in sent if sent else key not in one


async def test_a_local_send_over_more_extremities_than_it_may_cite(tmp_path: Path) -> None:
    """Twelve concurrent renames leave twelve forward extremities; a local message cites
    the newest ten (``MAX_PREV_EVENTS``). The state before it is the resolution of the
    states after those ten, the room keeps the two others as extremities with the
    message, and its current state is the resolution of those three: a server receiving
    everything (the message too) computes the same."""
    dag = _room()
    renames: list[Pdu] = []
    for i in range(12):
        server = ServerName("a.test" if i % 2 else "b.test")
        sender = SENDERS[server]
        member = next(p.event_id for p in dag.prefix if p.state_key == sender)
        # The two first, which the message cannot cite, are the newest.
        ts = T0 + (100 + i if i < 2 else i)
        pdu = _sign(
            dag.version,
            server,
            sender,
            dag.join.room_id,
            "m.room.name",
            {"name": f"n{i}"},
            "",
            [dag.join.event_id],
            [dag.latest_power([dag.join.event_id]), member],
            dag.join.depth + 1,
            ts,
        )
        dag.events[pdu.event_id] = pdu
        renames.append(pdu)
    name: StateKey = ("m.room.name", "")
    room_id = dag.join.room_id
    async with (
        _receiver(tmp_path / "c.db") as here,
        _receiver(tmp_path / "d.db", ServerName("d.test")) as there,
    ):
        for receiver in (here, there):
            await receiver.join(dag)
            for pdu in renames:
                await receiver.receive(pdu)
        sent = await here.creation.send(
            room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "hi"})
        )
        message = sent.pdu
        assert message.prev_event_ids == [p.event_id for p in renames[2:]]
        before = await here.state_at(message.event_id)
        assert before[name] == renames[-1].event_id
        state, extremities = await here.current(room_id)
        assert extremities == sorted([renames[0].event_id, renames[1].event_id, message.event_id])
        assert state[name] == renames[1].event_id
        await there.receive(message)
        assert await there.state_at(message.event_id) == before
        assert await there.current(room_id) == (state, extremities)


async def test_a_received_event_waiting_while_the_snapshot_is_replaced(tmp_path: Path) -> None:
    """An event received while the room's snapshot is replaced (a partial-state resync
    completing, a failed commit: ``forget_room`` under the room's lock, then a reload)
    is applied to the room's new snapshot, not to the one it waited on: the room's
    current state and extremities in memory include it, as stored."""
    dag = _room()
    rename = _rename_after_join(dag)
    room_id = dag.join.room_id
    name: StateKey = ("m.room.name", "")
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        old = await receiver.state.get_room(room_id)
        assert old is not None
        async with old.lock:
            received = asyncio.create_task(receiver.receive(rename))
            for _ in range(500):  # until it waits on the lock (bounded)
                if old.lock._waiters:
                    break
                await asyncio.sleep(0.01)
            assert old.lock._waiters, "the event never reached the room's lock"
            receiver.state.forget_room(room_id)
            new = await receiver.state.get_room(room_id)
            assert new is not None and new is not old
        await received
        snapshot = await receiver.state.get_room(room_id)
        assert snapshot is new
        assert snapshot.state.get(name) == rename.event_id
        assert snapshot.extremities == [rename.event_id]
        assert await receiver.current(room_id) == (dict(snapshot.state), [rename.event_id])


async def test_a_received_fork_while_a_local_message_is_being_committed(tmp_path: Path) -> None:
    """A local message is a forward extremity as soon as it is built, and its commit
    may take a while (group commit; the room's lock is not held meanwhile). A received
    event forking beside it resolves the state after each extremity, the message
    included: it is read as it is being written, not refused as unknown (two servers
    sending at once refused each other's events for good that way)."""
    dag = _room()
    rename = _rename_after_join(dag)
    room_id = dag.join.room_id
    name: StateKey = ("m.room.name", "")
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        gate = _hold_commits(receiver)
        sending = asyncio.create_task(
            receiver.creation.send(
                room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "hi"})
            )
        )
        try:
            snapshot = await receiver.state.get_room(room_id)
            assert snapshot is not None
            message_id = await _built_after(snapshot, dag.join.event_id)
            assert await receiver.store.get_events([message_id]) == {}  # not committed yet
            received = asyncio.create_task(receiver.receive(rename))
            await asyncio.sleep(0.2)
            if received.done():  # it should be resolved and waiting on the commit
                received.result()  # raises what refused it
                raise AssertionError("applied before the message was committed")
        finally:
            gate.set()
        async with asyncio.timeout(10):
            message = await sending
            await received
        assert message.pdu.event_id == message_id
        state, extremities = await receiver.current(room_id)
        assert extremities == sorted([message_id, rename.event_id])
        assert state[name] == rename.event_id


async def test_a_state_group_being_written_is_read_whole_when_the_caches_are_dropped(
    tmp_path: Path,
) -> None:
    """A state event's new group exists only in memory until its commit. The deltas
    cache may be dropped meanwhile (a partial-state room completing anywhere drops it,
    and it evicts): an event built on that group still sees the state it holds (the
    group is never read from storage as empty)."""
    dag = _room()
    room_id = dag.join.room_id
    topic_key: StateKey = ("m.room.topic", "")
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        gate = _hold_commits(receiver)
        # Bob (power 100) stands in for a local user: his events are signed here.
        topic_sent = asyncio.create_task(
            receiver.creation.send(room_id, BOB, EventSpec("m.room.topic", {"topic": "t"}, ""))
        )
        try:
            snapshot = await receiver.state.get_room(room_id)
            assert snapshot is not None
            for _ in range(500):  # until the topic is built (bounded)
                if topic_key in snapshot.state:
                    break
                await asyncio.sleep(0.01)
            assert topic_key in snapshot.state
            receiver.state.forget_state_deltas()
            profile_sent = asyncio.create_task(
                receiver.creation.send(
                    room_id,
                    CAROL,
                    EventSpec("m.room.member", {"membership": "join", "displayname": "C"}, CAROL),
                )
            )
            for _ in range(500):  # until the member event is built (bounded)
                if snapshot.state[("m.room.member", CAROL)] != dag.join.event_id:
                    break
                await asyncio.sleep(0.01)
            in_flight = (await receiver.state.get_events([snapshot.extremities[0]])).values()
            (member_group,) = [e.state_group for e in in_flight]
            keyed = await receiver.state.state_ids_at_group(member_group, [topic_key])
            assert keyed == {topic_key: snapshot.state[topic_key]}
        finally:
            gate.set()
        async with asyncio.timeout(10):
            topic = await topic_sent
            profile = await profile_sent
        receiver.state.forget_state_deltas()
        receiver.state.forget_room(room_id)  # read the stored groups, not the snapshot
        after = await receiver.state.state_ids_at_group(profile.state_group)
        assert after[topic_key] == topic.pdu.event_id
        assert after[("m.room.member", CAROL)] == profile.pdu.event_id


async def test_a_send_built_while_a_failed_commit_drops_the_room_builds_again(
    tmp_path: Path,
) -> None:
    """A commit fails (its room's snapshot is dropped and reloaded) while the next
    event of the room is being built on the old snapshot, citing the failed event: that
    event is built again on the reloaded snapshot, so nothing stored cites an event
    that never was."""
    dag = _room()
    room_id = dag.join.room_id
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        gate = asyncio.Event()
        failing: set[EventID] = set()

        async def fail_commit(events: Sequence[Any]) -> None:
            await gate.wait()
            if any(e.pdu.event_id in failing for e in events):
                raise RuntimeError("the disk is full")

        receiver.writer.add_pre_commit(fail_commit)
        first = asyncio.create_task(
            receiver.creation.send(
                room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "one"})
            )
        )
        building = asyncio.Event()
        release = asyncio.Event()

        async def countersign(pdu: Pdu, _snapshot: Any) -> Pdu:
            building.set()
            await release.wait()
            return pdu

        try:
            snapshot = await receiver.state.get_room(room_id)
            assert snapshot is not None
            first_id = await _built_after(snapshot, dag.join.event_id)
            failing.add(first_id)
            second = asyncio.create_task(
                receiver.creation.send(
                    room_id,
                    CAROL,
                    EventSpec("m.room.message", {"msgtype": "m.text", "body": "two"}),
                    countersign=countersign,
                )
            )
            async with asyncio.timeout(10):
                await building.wait()
        finally:
            gate.set()
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(first, return_exceptions=True)
            assert isinstance(outcomes[0], RuntimeError)
            release.set()
            stored = await second
        assert stored.pdu.prev_event_ids == [dag.join.event_id]
        assert await receiver.store.get_forward_extremities(room_id) == [stored.pdu.event_id]


class _RecordingSender:
    """Records where each event would be sent (``FederationSender``'s rows)."""

    def __init__(self) -> None:
        self.destinations: dict[str, set[ServerName]] = {}

    def rows_for_event(
        self, room_id: RoomID, event_id: EventID, destinations: set[ServerName]
    ) -> list[OutboxRow]:
        self.destinations[event_id] = set(destinations)
        return []


async def test_an_event_goes_to_the_servers_in_the_room_when_it_was_made(tmp_path: Path) -> None:
    """A local message waits for its commit while Bob's leave (received, forking beside
    it) takes b.test out of the room: the message was made while b.test was in the room,
    so it is still sent there (else b.test never gets it, and cannot fetch it after its
    user left)."""
    dag = _room()
    room_id = dag.join.room_id
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        recording = _RecordingSender()
        outbound = OutboundEvents(
            RECEIVER,
            cast(FederationSender, recording),
            receiver.state,
            cast(FederationOutboxStore, None),
        )
        gate = _hold_commits(receiver)
        receiver.writer.add_pre_commit(outbound.prepare_outbound)
        sending = asyncio.create_task(
            receiver.creation.send(
                room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "hi"})
            )
        )
        bob_join = next(p for p in dag.prefix if p.type == "m.room.member" and p.state_key == BOB)
        leave = _sign(
            dag.version,
            ServerName("b.test"),
            BOB,
            room_id,
            "m.room.member",
            {"membership": "leave"},
            BOB,
            [dag.join.event_id],
            [dag.latest_power([dag.join.event_id]), bob_join.event_id],
            dag.join.depth + 1,
            T0 + 1,
        )
        try:
            snapshot = await receiver.state.get_room(room_id)
            assert snapshot is not None
            message_id = await _built_after(snapshot, dag.join.event_id)
            received = asyncio.create_task(receiver.receive(leave))
            for _ in range(500):  # until the leave is applied (bounded)
                if "b.test" not in snapshot.joined_servers():
                    break
                await asyncio.sleep(0.01)
            assert "b.test" not in snapshot.joined_servers()
        finally:
            gate.set()
        async with asyncio.timeout(10):
            await sending
            await received
        assert recording.destinations[message_id] == {ServerName("a.test"), ServerName("b.test")}


async def test_a_completion_while_a_local_event_is_being_committed(tmp_path: Path) -> None:
    """A partial-state room completes while a local state event built before waits for
    its commit: the completion waits for it (it rewrites the stored state and reloads
    the room from it), so the reloaded room keeps the event as its forward extremity
    and in its state, and the next message cites it."""
    dag = _room()
    room_id = dag.join.room_id
    member_key: StateKey = ("m.room.member", CAROL)
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        resync = _resync(receiver)
        room = PartialStateRoom(room_id, dag.join.event_id, ServerName("a.test"), ())
        full = {p.state_tuple: p.event_id for p in dag.prefix}
        gate = _hold_commits(receiver)
        profile_sent = asyncio.create_task(
            receiver.creation.send(
                room_id,
                CAROL,
                EventSpec("m.room.member", {"membership": "join", "displayname": "C"}, CAROL),
            )
        )
        try:
            snapshot = await receiver.state.get_room(room_id)
            assert snapshot is not None
            profile_id = await _built_after(snapshot, dag.join.event_id)
            completing = asyncio.create_task(resync._complete(room, full, ServerName("a.test")))
            await asyncio.sleep(0.2)
            assert not completing.done()  # waiting for the profile change's commit
        finally:
            gate.set()
        async with asyncio.timeout(10):
            await profile_sent
            await completing
        completed = await receiver.state.get_room(room_id)
        assert completed is not None
        assert completed.extremities == [profile_id]
        assert completed.state[member_key] == profile_id
        message = await receiver.creation.send(
            room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "next"})
        )
        assert message.pdu.prev_event_ids == [profile_id]
        assert await receiver.current(room_id) == (dict(completed.state), [message.pdu.event_id])


def _rename_after_join(dag: Dag) -> Pdu:
    """Alice names the room right after Carol's join."""
    return _sign(
        dag.version,
        ServerName("a.test"),
        ALICE,
        dag.join.room_id,
        "m.room.name",
        {"name": "while replaced"},
        "",
        [dag.join.event_id],
        [dag.latest_power([dag.join.event_id]), dag.prefix[1].event_id],
        dag.join.depth + 1,
        T0,
    )


class _ReplacingBackfill(_NoRemote):
    """Answers ``/backfill`` with ``history``, once the room's snapshot was replaced
    (``forget_room``, then a reload) and ``rename`` applied to the new one meanwhile."""

    def __init__(self, history: Sequence[Pdu], rename: Pdu) -> None:
        self.history = history
        self.rename = rename
        self.receiver: Receiver | None = None

    async def backfill(self, *args: Any) -> list[Any]:
        assert self.receiver is not None
        self.receiver.state.forget_room(self.rename.room_id)
        await self.receiver.receive(self.rename)
        return [dict(p.data) for p in self.history]


async def test_a_backfill_while_the_snapshot_is_replaced(tmp_path: Path) -> None:
    """History backfilled while the room's snapshot is replaced (and an event applied to
    the new one) is stored with the new snapshot's forward extremities, not the ones of
    the snapshot the backfill started from: the stored extremities keep that event."""
    dag = _room()
    rename = _rename_after_join(dag)
    room_id = dag.join.room_id
    remote = _ReplacingBackfill([dag.prefix[-1]], rename)
    async with _receiver(tmp_path / "c.db", remote=remote) as receiver:
        remote.receiver = receiver
        await receiver.join(dag)
        old = await receiver.state.get_room(room_id)
        assert await receiver.handler.backfill(room_id, 10)
        snapshot = await receiver.state.get_room(room_id)
        assert snapshot is not None and snapshot is not old
        assert snapshot.extremities == [rename.event_id]
        assert await receiver.state.get_event(dag.prefix[-1].event_id) is not None
        assert await receiver.current(room_id) == (dict(snapshot.state), [rename.event_id])


async def test_a_completion_waiting_while_the_snapshot_is_replaced(tmp_path: Path) -> None:
    """A partial-state completion that waited on the room's lock while the snapshot was
    replaced (and an event applied to the new one) completes the new snapshot: the
    room's new current state group holds that event, as its current state does (a
    completion of the forgotten one derived the group without it)."""
    dag = _room()
    rename = _rename_after_join(dag)
    room_id = dag.join.room_id
    name: StateKey = ("m.room.name", "")
    async with _receiver(tmp_path / "c.db") as receiver:
        await receiver.join(dag)
        resync = _resync(receiver)
        room = PartialStateRoom(room_id, dag.join.event_id, ServerName("a.test"), ())
        full = {p.state_tuple: p.event_id for p in dag.prefix}
        old = await receiver.state.get_room(room_id)
        assert old is not None
        async with old.lock:
            completing = asyncio.create_task(resync._complete(room, full, ServerName("a.test")))
            for _ in range(500):  # until it waits on the lock (bounded)
                if old.lock._waiters:
                    break
                await asyncio.sleep(0.01)
            assert old.lock._waiters, "the completion never reached the room's lock"
            receiver.state.forget_room(room_id)
            await receiver.receive(rename)
        await completing
        snapshot = await receiver.state.get_room(room_id)
        assert snapshot is not None
        assert snapshot.state.get(name) == rename.event_id
        group = snapshot.state_group.state_group
        receiver.state.forget_room(room_id)  # the group's state, not the snapshot's
        assert await receiver.state.state_ids_at_group(group) == snapshot.state


def _join_rules_fork(dag: Dag) -> tuple[Pdu, Pdu]:
    """Two events on Carol's join: Dave (of ``b.test``) joins by the public join rules,
    and Alice, concurrently, makes the room invite-only. Resolved, the join rules are
    a power event and win; Dave's join then fails against them, and his member key has
    no event left: the resolved state has no ``m.room.member`` for Dave at all (a state
    reset)."""
    dave = UserID("@dave:b.test")
    prevs = [dag.join.event_id]
    power = dag.latest_power(prevs)
    rules = next(p.event_id for p in dag.prefix if p.type == "m.room.join_rules")
    alice = next(p.event_id for p in dag.prefix if p.state_key == ALICE)
    depth = dag.join.depth + 1
    join = _sign(
        dag.version,
        ServerName("b.test"),
        dave,
        dag.join.room_id,
        "m.room.member",
        {"membership": "join"},
        dave,
        prevs,
        [*dag.create_auth(), power, rules],
        depth,
        T0 + 1,
    )
    invite_only = _sign(
        dag.version,
        ServerName("a.test"),
        ALICE,
        dag.join.room_id,
        "m.room.join_rules",
        {"join_rule": "invite"},
        "",
        prevs,
        [*dag.create_auth(), power, alice],
        depth,
        T0 + 2,
    )
    dag.events[join.event_id] = join
    dag.events[invite_only.event_id] = invite_only
    return join, invite_only


@pytest.mark.parametrize("join_first", [True, False])
async def test_a_state_reset_removes_the_key_everywhere(tmp_path: Path, join_first: bool) -> None:
    """Whichever arrives first, the room ends without Dave's member key: in memory (state
    and memberships), as stored, and in its current state group; a later message citing
    both forks has the same state before it."""
    dag = _room()
    join, invite_only = _join_rules_fork(dag)
    dave_key: StateKey = ("m.room.member", join.state_key or "")
    room_id = dag.join.room_id
    async with _receiver(tmp_path / "c.db") as here:
        await here.join(dag)
        for pdu in (join, invite_only) if join_first else (invite_only, join):
            parsed = parse_pdu(dict(pdu.data), pdu.room_version)
            outcome = await here.handler.process_pdu(ServerName("b.test"), parsed)
            assert outcome.status in ("accepted", "soft_failed"), outcome
        snapshot = await here.state.get_room(room_id)
        assert snapshot is not None
        assert dave_key not in snapshot.state
        assert UserID(join.state_key or "") not in snapshot.memberships
        assert snapshot.state[("m.room.join_rules", "")] == invite_only.event_id
        in_memory = dict(snapshot.state)
        # Not answered from the snapshot: the group's own rows.
        here.state.forget_room(room_id)
        in_group = await here.state.state_ids_at_group(snapshot.state_group.state_group)
        stored, _ = await here.current(room_id)
        assert stored == in_memory
        assert in_group == in_memory
        sent = await here.creation.send(
            room_id, CAROL, EventSpec("m.room.message", {"msgtype": "m.text", "body": "hi"})
        )
        assert dave_key not in await here.state_at(sent.pdu.event_id)


async def test_a_rejoin_drops_what_the_room_no_longer_has(tmp_path: Path) -> None:
    """Joined again over federation (a ``send_join`` answer), the room's current state is
    the answered state and the join: what the room held here before and the answer no
    longer has (Dave's join, gone in a state reset there) is not left in storage, where
    a restart would read it back."""
    dag = _room()
    join, _ = _join_rules_fork(dag)
    dave_key: StateKey = ("m.room.member", join.state_key or "")
    room_id = dag.join.room_id
    again = _sign(
        dag.version,
        ServerName("c.test"),
        CAROL,
        room_id,
        "m.room.member",
        {"membership": "join", "displayname": "Carol"},
        CAROL,
        [join.event_id],
        [*dag.create_auth(), dag.latest_power([join.event_id]), dag.join.event_id],
        join.depth + 1,
        T0 + 3,
    )
    async with _receiver(tmp_path / "c.db") as here:
        await here.join(dag)
        await here.receive(join)
        assert dave_key in await here.store.get_current_state_ids(room_id)
        answer = {
            "state": [dict(p.data) for p in (*dag.prefix, dag.join)],
            "auth_chain": [dict(p.data) for p in (*dag.prefix, dag.join)],
        }
        await here.joiner._install(ServerName("a.test"), room_id, dag.version, again, answer)
        stored = await here.store.get_current_state_ids(room_id)
        assert dave_key not in stored
        assert stored[("m.room.member", CAROL)] == again.event_id
        state, _ = await here.current(room_id)
        assert state == stored


async def test_messages_on_the_losing_side_of_a_fork_keep_the_rooms_group(tmp_path: Path) -> None:
    """Two concurrent renames fork the room; the later one wins. Messages that go on
    from the losing rename (its server not yet knowing the other) leave the current
    state as it is: the room keeps its state group, not a new one per message, and each
    message is stored with its own side's group and the room's as its ``current_group``
    (what /sync's ``state_after`` continues from)."""
    dag = _room()
    room_id = dag.join.room_id
    renames: dict[ServerName, Pdu] = {}
    for server, ts in ((ServerName("a.test"), T0 + 2), (ServerName("b.test"), T0 + 1)):
        sender = SENDERS[server]
        member = next(p.event_id for p in dag.prefix if p.state_key == sender)
        renames[server] = _sign(
            dag.version,
            server,
            sender,
            room_id,
            "m.room.name",
            {"name": server},
            "",
            [dag.join.event_id],
            [dag.latest_power([dag.join.event_id]), member],
            dag.join.depth + 1,
            ts,
        )
        dag.events[renames[server].event_id] = renames[server]
    loser = renames[ServerName("b.test")]
    bob = SENDERS[ServerName("b.test")]
    bob_member = next(p.event_id for p in dag.prefix if p.state_key == bob)
    messages: list[Pdu] = []
    previous = loser
    for n in range(3):
        previous = _sign(
            dag.version,
            ServerName("b.test"),
            bob,
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": f"on the losing side {n}"},
            None,
            [previous.event_id],
            [dag.latest_power([dag.join.event_id]), bob_member],
            previous.depth + 1,
            T0 + 3 + n,
        )
        messages.append(previous)
    name: StateKey = ("m.room.name", "")
    async with _receiver(tmp_path / "c.db") as here:
        await here.join(dag)
        for pdu in renames.values():
            await here.receive(pdu)
        snapshot = await here.state.get_room(room_id)
        assert snapshot is not None
        assert snapshot.state[name] == renames[ServerName("a.test")].event_id
        group = snapshot.state_group.state_group
        for pdu in messages:
            await here.receive(pdu)
            snapshot = await here.state.get_room(room_id)
            assert snapshot is not None
            assert snapshot.state_group.state_group == group, pdu.event_id
        stored = await here.store.get_events([p.event_id for p in messages])
        losing_state = await here.state_at(loser.event_id)
        for pdu in messages:
            assert await here.state_at(pdu.event_id) == losing_state, pdu.event_id
            assert stored[pdu.event_id].current_group == group, pdu.event_id
        state, _ = await here.current(room_id)
        assert state[name] == renames[ServerName("a.test")].event_id
