"""Inputs state resolution refuses, and what it costs: limits, missing events, rooms mixed,
and that the unconflicted state of a big room is not walked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from harness.state_res_dag import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    RoomDag,
    event_id,
    member,
    power,
    topic,
)
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12, RoomVersion
from peyvand.events.state_res import (
    MissingEventError,
    StateResError,
    StateResLimits,
    StateResTooLarge,
    resolve_state,
)
from peyvand.types import EventID

BAN_RACE = [
    power("PA", ALICE, {ALICE: 100, BOB: 50}),
    member("MB", ALICE, BOB, "ban"),
    power("PB", BOB, {ALICE: 100, BOB: 50}),
]
BAN_RACE_EDGES = ["MB PA START", "PB PA"]

pytestmark = pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")


def _race(version: RoomVersion) -> tuple[RoomDag, list[dict[tuple[str, str], EventID]]]:
    room = RoomDag(version, BAN_RACE, BAN_RACE_EDGES)
    return room, [room.state_after["MB"], room.state_after["PB"]]


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        (StateResLimits(max_state_sets=1), "max_state_sets"),
        (StateResLimits(max_conflicted_events=3), "max_conflicted_events"),
        (StateResLimits(max_events=3), "max_events"),
    ],
)
def test_limits_are_enforced(version: RoomVersion, limits: StateResLimits, name: str) -> None:
    room, states = _race(version)
    with pytest.raises(StateResTooLarge) as info:
        resolve_state(version, states, room.event_map, limits=limits)
    assert info.value.limit == name
    # The default limits let the same input through.
    assert resolve_state(version, states, room.event_map)[room.key("MB")] == event_id("MB")


def test_missing_required_event_is_loud(version: RoomVersion) -> None:
    room, states = _race(version)
    # v10/v11 consult the unconflicted state (Alice's join, for the ban); v12 needs its
    # create event, which no event lists among its auth events.
    missing = event_id("CREATE") if version is ROOM_V12 else event_id("IMA")
    event_map = {k: v for k, v in room.event_map.items() if k != missing}
    with pytest.raises(MissingEventError) as info:
        resolve_state(version, states, event_map)
    assert info.value.event_id == missing


def test_events_from_another_room_are_refused(version: RoomVersion) -> None:
    room, states = _race(version)
    stray = room.event_map[event_id("PB")]
    event_map = dict(room.event_map)
    event_map[stray.event_id] = Pdu(
        {**stray.data, "room_id": "!elsewhere:example.com"}, stray.event_id, version
    )
    with pytest.raises(StateResError):
        resolve_state(version, states, event_map)


class CountingMap(Mapping[EventID, Pdu]):
    """An event map that records which events were read."""

    def __init__(self, events: Mapping[EventID, Pdu]) -> None:
        self._events = events
        self.read: set[EventID] = set()

    def __getitem__(self, key: EventID) -> Pdu:
        self.read.add(key)
        return self._events[key]

    def __iter__(self) -> Iterator[EventID]:
        raise AssertionError("state resolution must not iterate the event map")

    def __len__(self) -> int:
        return len(self._events)


def test_cost_follows_the_conflict_not_the_room(version: RoomVersion) -> None:
    """200 unconflicted members, a topic conflict: only the topics and their auth events
    are read."""
    joins = [
        member(f"J{i}", f"@u{i}:example.com", f"@u{i}:example.com", "join") for i in range(200)
    ]
    chain = " ".join(f"J{i}" for i in reversed(range(200)))
    nodes = [*joins, topic("T1", ALICE), topic("T2", ALICE)]
    room = RoomDag(version, nodes, [f"{chain} START", "T1 J199", "T2 J199"])
    counting = CountingMap(room.event_map)
    resolved = resolve_state(version, [room.state_after["T1"], room.state_after["T2"]], counting)
    assert resolved[room.key("T2")] == event_id("T2")
    assert len(resolved) > 200
    assert len(counting.read) <= 8, sorted(counting.read)


@pytest.mark.parametrize("chains_as", ["mapping", "callable"])
def test_precomputed_auth_chains_give_the_same_answer(version: RoomVersion, chains_as: str) -> None:
    room, states = _race(version)
    chains: dict[EventID, set[EventID]] = {}

    def chain_of(eid: EventID) -> set[EventID]:
        if eid not in chains:
            found: set[EventID] = set()
            for auth_id in room.event_map[eid].auth_event_ids:
                found |= {auth_id} | chain_of(auth_id)
            chains[eid] = found
        return chains[eid]

    expected = resolve_state(version, states, room.event_map)
    lookup = {eid: chain_of(eid) for eid in room.event_map} if chains_as == "mapping" else chain_of
    assert resolve_state(version, states, room.event_map, lookup) == expected
