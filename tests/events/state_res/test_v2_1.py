"""Behaviour specific to state resolution v2.1 (room version 12) and where it departs
from v2 (room versions 10, 11).

Spec: "Room Version 12", "State resolution": the iterative auth checks start from an empty
state map, the full conflicted set includes the conflicted state subgraph, and room
creators have infinite power (so they sort first in the reverse topological power order).
"""

from __future__ import annotations

import math

import pytest

from harness.state_res_dag import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    EVELYN,
    TOPIC_KEY,
    V2_VERSIONS,
    ZARA,
    RoomDag,
    event_id,
    member,
    power,
    topic,
)
from peyvand.events.room_versions import ROOM_V12, RoomVersion
from peyvand.events.state_res.graph import AuthGraph, auth_difference, conflicted_subgraph
from peyvand.events.state_res.ordering import sender_power_level

# Bob sets the topic twice on branches off START, where he has no power; PA, on a third
# branch, gives him some. With PA unconflicted, whether his topics pass depends on the
# state the iterative auth checks start from.
POWERLESS_TOPICS = [power("PA", ALICE, {ALICE: 100, BOB: 50}), topic("T1", BOB), topic("T2", BOB)]
POWERLESS_TOPICS_EDGES = ["PA START", "T1 START", "T2 START"]


@pytest.mark.parametrize("version", V2_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_v2_checks_conflicted_events_against_the_unconflicted_state(
    version: RoomVersion,
) -> None:
    room = RoomDag(version, POWERLESS_TOPICS, POWERLESS_TOPICS_EDGES)
    resolved = room.resolve(room.state("START", "PA", "T1"), room.state("START", "PA", "T2"))
    # Both pass under PA; same mainline position, so the later one is applied last.
    assert resolved[TOPIC_KEY] == event_id("T2")
    assert resolved[room.key("PA")] == event_id("PA")


def test_v2_1_checks_conflicted_events_from_an_empty_state() -> None:
    room = RoomDag(ROOM_V12, POWERLESS_TOPICS, POWERLESS_TOPICS_EDGES)
    resolved = room.resolve(room.state("START", "PA", "T1"), room.state("START", "PA", "T2"))
    # Checked against their own auth events (IPOWER: Bob at 0), both topics fail; the
    # unconflicted PA is still laid over the result (step 5).
    assert TOPIC_KEY not in resolved
    assert resolved[room.key("PA")] == event_id("PA")


# Zara joins again (ZJ2) and then leaves (ZL); one state set stops before both, and an
# invite she sent after ZJ2 is unconflicted, so ZJ2 is in every state set's auth chain.
SUBGRAPH_NODES = [
    member("ZJ1", ZARA, ZARA, "join"),
    member("ZJ2", ZARA, ZARA, "join"),
    member("ZL", ZARA, ZARA, "leave"),
    member("INV", ZARA, EVELYN, "invite"),
]
SUBGRAPH_EDGES = ["ZL ZJ2 ZJ1 START", "INV ZJ2"]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_conflicted_subgraph_adds_events_between_conflicted_events(
    version: RoomVersion,
) -> None:
    room = RoomDag(version, SUBGRAPH_NODES, SUBGRAPH_EDGES)
    conflicted = {event_id("ZJ1"), event_id("ZL")}
    graph = AuthGraph(room.event_map, None, 1000)
    unconflicted = room.state("START", "INV")
    del unconflicted[room.key("ZJ1")]
    difference, closure = auth_difference(
        graph, [[event_id("ZJ1")], [event_id("ZL")]], unconflicted.values(), conflicted
    )
    # ZJ2 is reachable from the unconflicted invite: not in the auth difference ...
    assert event_id("ZJ2") not in difference
    # ... but on the auth path ZL -> ZJ2 -> ZJ1 between two conflicted events.
    subgraph = conflicted_subgraph(graph, conflicted, closure)
    assert subgraph == {event_id("ZJ1"), event_id("ZJ2"), event_id("ZL")}
    resolved = room.resolve(room.state("START", "ZJ1", "INV"), room.state("START", "ZL", "INV"))
    assert resolved[room.key("ZL")] == event_id("ZL")


@pytest.mark.parametrize(
    ("version", "alice_level"),
    [(v, 100) for v in V2_VERSIONS] + [(ROOM_V12, math.inf)],
    ids=["v10", "v11", "v12"],
)
def test_creator_power_in_the_power_order(version: RoomVersion, alice_level: float) -> None:
    room = RoomDag(
        version, [power("PA", ALICE, {ALICE: 100, BOB: 50}), topic("T", BOB)], ["T PA START"]
    )
    graph = AuthGraph(room.event_map, None, 1000)
    assert sender_power_level(room.event_map[event_id("PA")], graph) == alice_level
    assert sender_power_level(room.event_map[event_id("T")], graph) == 50
