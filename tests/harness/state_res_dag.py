"""Test helper: room histories written as short edge lists, resolved with ``resolve_state``.

As in Synapse's ``tests/state/test_v2.py``, every room starts with ``INITIAL`` (create,
Alice's join, power levels with Alice at 100, public join rules, Bob, Charlie and Zara
joining, then the message ``START``) and a history is a list of chains such as
``"END MB MA PA START"``: each event's ``prev_events`` are the events to its right. The
builder walks the DAG from the oldest event, computes the state before each event
(resolving the states after its ``prev_events`` when there are several), picks its
``auth_events`` from that state with the auth events selection, and numbers
``origin_server_ts`` in that order. Event IDs are ``$`` + the node name.

In v12 the room ID is ``!CREATE`` (the create event is ``$CREATE``) and the creator may not
be listed in ``users``, so Alice is dropped from every power levels event's ``users``
there: she has infinite power instead, which keeps the shared fixtures meaningful.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from peyvand.events.auth import auth_types_for_event
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.events.state_res import resolve_state
from peyvand.types import EventID

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

V2_VERSIONS = [ROOM_V10, ROOM_V11]
ALL_VERSIONS = [ROOM_V10, ROOM_V11, ROOM_V12]

TOPIC_KEY: StateKey = ("m.room.topic", "")
POWER_KEY: StateKey = ("m.room.power_levels", "")


@dataclass(frozen=True)
class Node:
    """An event of a fixture before it is placed in the DAG."""

    name: str
    type: str
    sender: str
    content: Mapping[str, Any] = field(default_factory=dict)
    state_key: str | None = None


def member(name: str, sender: str, target: str, membership: str) -> Node:
    return Node(name, "m.room.member", sender, {"membership": membership}, target)


def power(name: str, sender: str, users: Mapping[str, int], **levels: Any) -> Node:
    return Node(name, "m.room.power_levels", sender, {"users": dict(users), **levels}, "")


def topic(name: str, sender: str) -> Node:
    return Node(name, "m.room.topic", sender, {"topic": name}, "")


def join_rules(name: str, sender: str, rule: str) -> Node:
    return Node(name, "m.room.join_rules", sender, {"join_rule": rule}, "")


def message(name: str, sender: str) -> Node:
    return Node(name, "m.room.message", sender, {"body": name})


INITIAL = [
    Node("CREATE", "m.room.create", ALICE, {}, ""),
    member("IMA", ALICE, ALICE, "join"),
    power("IPOWER", ALICE, {ALICE: 100}),
    join_rules("IJR", ALICE, "public"),
    member("IMB", BOB, BOB, "join"),
    member("IMC", CHARLIE, CHARLIE, "join"),
    member("IMZ", ZARA, ZARA, "join"),
    message("START", ZARA),
    message("END", ZARA),
]
INITIAL_EDGES = "START IMZ IMC IMB IJR IPOWER IMA CREATE"


def event_id(name: str) -> EventID:
    return EventID("$" + name)


class RoomDag:
    """A room history built from ``nodes`` (on top of ``INITIAL``) and edge chains."""

    def __init__(self, version: RoomVersion, nodes: Sequence[Node], edges: Sequence[str]) -> None:
        self.version = version
        self.room_id = "!CREATE" if version.room_id_is_create_event_hash else "!r:example.com"
        self.event_map: dict[EventID, Pdu] = {}
        self.state_after: dict[str, dict[StateKey, EventID]] = {}
        by_name = {node.name: node for node in [*INITIAL, *nodes]}
        prevs: dict[str, set[str]] = {name: set() for name in by_name}
        for chain in [INITIAL_EDGES, *edges]:
            names = chain.split()
            for later, earlier in pairwise(names):
                prevs[later].add(earlier)
        for name in _oldest_first(prevs):
            self._add(by_name[name], sorted(prevs[name]))

    def _add(self, node: Node, prev_names: list[str]) -> None:
        states = [self.state_after[name] for name in prev_names]
        if not states:
            before: dict[StateKey, EventID] = {}
        elif len(states) == 1:
            before = dict(states[0])
        else:
            before = resolve_state(self.version, states, self.event_map)
        content = dict(node.content)
        if node.type == "m.room.create":
            content["room_version"] = self.version.identifier
            if not self.version.implicit_room_creator:
                content["creator"] = node.sender
        if node.type == "m.room.power_levels" and self.version.creators_have_infinite_power:
            content["users"] = {u: v for u, v in content["users"].items() if u != ALICE}
        keys = auth_types_for_event(self.version, node.type, node.sender, node.state_key, content)
        data: dict[str, Any] = {
            "type": node.type,
            "sender": node.sender,
            "content": content,
            "prev_events": [event_id(name) for name in prev_names],
            "auth_events": sorted(before[key] for key in keys if key in before),
            "depth": 1 + len(self.event_map),
            "origin_server_ts": len(self.event_map),
            "signatures": {"example.com": {"ed25519:k": "sig"}},
        }
        if node.state_key is not None:
            data["state_key"] = node.state_key
        if node.type != "m.room.create" or not self.version.room_id_is_create_event_hash:
            data["room_id"] = self.room_id
        pdu = Pdu(data, event_id(node.name), self.version)
        self.event_map[pdu.event_id] = pdu
        after = dict(before)
        if pdu.is_state():
            after[pdu.state_tuple] = pdu.event_id
        self.state_after[node.name] = after

    def key(self, name: str) -> StateKey:
        return self.event_map[event_id(name)].state_tuple

    def state(self, base: str, *names: str) -> dict[StateKey, EventID]:
        """The state after ``base`` with the events ``names`` put over it (by key)."""
        state = dict(self.state_after[base])
        for name in names:
            state[self.key(name)] = event_id(name)
        return state

    def resolve(self, *states: Mapping[StateKey, EventID]) -> dict[StateKey, EventID]:
        return resolve_state(self.version, list(states), self.event_map)

    def changed_at_end(self, expected: Sequence[str]) -> dict[StateKey, EventID]:
        """The state at END restricted, like Synapse's ``do_check``, to the keys that
        changed since START and the keys of ``expected``."""
        start, end = self.state_after["START"], self.state_after["END"]
        keys = {self.key(name) for name in expected}
        return {k: v for k, v in end.items() if k in keys or start.get(k) != v}

    def expected(self, names: Sequence[str]) -> dict[StateKey, EventID]:
        return {self.key(name): event_id(name) for name in names}


def _oldest_first(prevs: Mapping[str, set[str]]) -> list[str]:
    """Kahn's algorithm: every event after its ``prev_events``, ties by name."""
    waiting = {name: len(earlier) for name, earlier in prevs.items()}
    later: dict[str, list[str]] = {name: [] for name in prevs}
    for name, earlier in prevs.items():
        for prev in earlier:
            later[prev].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for child in later[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    assert len(order) == len(prevs), "the fixture's edges have a cycle"
    return order
