"""Hypothesis properties of ``resolve_state`` over random room histories, for v2 and v2.1:
determinism, independence from the order (and repetition) of the state sets, the
unconflicted state kept (step 5, in both algorithms), every key holding an event of that
key, and precomputed auth chains changing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.state_res_dag import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CHARLIE,
    EVELYN,
    Node,
    RoomDag,
    join_rules,
    member,
    power,
    topic,
)
from peyvand.events.room_versions import RoomVersion
from peyvand.events.state_res import resolve_state, split_state
from peyvand.types import EventID

USERS = [ALICE, BOB, CHARLIE, EVELYN]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Node], list[str], list[str]]:
    """Up to 8 random state events on random branches, and 2-3 of them as tips."""
    count = draw(st.integers(2, 8))
    nodes: list[Node] = []
    edges: list[str] = []
    names = ["START"]
    for i in range(count):
        name = f"E{i}"
        sender = draw(st.sampled_from(USERS))
        kind = draw(st.sampled_from(["topic", "power", "ban", "join", "rules"]))
        if kind == "topic":
            node = topic(name, sender)
        elif kind == "power":
            levels = draw(st.lists(st.sampled_from([0, 50, 100]), min_size=2, max_size=2))
            node = power(name, sender, {ALICE: 100, BOB: levels[0], CHARLIE: levels[1]})
        elif kind == "ban":
            node = member(name, sender, draw(st.sampled_from(USERS)), "ban")
        elif kind == "join":
            node = member(name, sender, sender, "join")
        else:
            node = join_rules(name, sender, draw(st.sampled_from(["public", "invite"])))
        parents = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        edges.extend(f"{name} {parent}" for parent in parents)
        nodes.append(node)
        names.append(name)
    tips = draw(st.lists(st.sampled_from(names), min_size=2, max_size=3, unique=True))
    return nodes, edges, tips


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), data=st.data())
def test_resolution_properties(
    version: RoomVersion, history: tuple[list[Node], list[str], list[str]], data: Any
) -> None:
    nodes, edges, tips = history
    room = RoomDag(version, nodes, edges)
    states = [room.state_after[tip] for tip in tips]
    resolved = resolve_state(version, states, room.event_map)
    # Deterministic, and blind to the order and repetition of the state sets.
    assert resolve_state(version, states, room.event_map) == resolved
    shuffled = data.draw(st.permutations(states))
    assert resolve_state(version, shuffled, room.event_map) == resolved
    assert resolve_state(version, [*states, states[0]], room.event_map) == resolved
    # The unconflicted state is kept.
    unconflicted, _ = split_state(states)
    assert unconflicted.items() <= resolved.items()
    # Every key holds an event of that type and state key.
    for key, value in resolved.items():
        assert room.event_map[value].state_tuple == key
    # Precomputed auth chains give the same answer as walking the event map.
    chains: dict[EventID, set[EventID]] = {}
    for eid in room.event_map:  # the builder's map is in DAG order, oldest first
        chains[eid] = set()
        for auth_id in room.event_map[eid].auth_event_ids:
            chains[eid] |= {auth_id} | chains[auth_id]
    assert resolve_state(version, states, room.event_map, chains) == resolved


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
@settings(max_examples=20, deadline=None)
@given(history=histories())
def test_one_state_set_resolves_to_itself(
    version: RoomVersion, history: tuple[list[Node], list[str], list[str]]
) -> None:
    nodes, edges, tips = history
    room = RoomDag(version, nodes, edges)
    state = room.state_after[tips[0]]
    assert resolve_state(version, [state], room.event_map) == state
    assert resolve_state(version, [state, state], room.event_map) == state
