"""The two orderings of state resolution v2: reverse topological power and mainline.

Spec: "Room Version 2" (and 12), "State resolution", "Definitions": *power events*,
*reverse topological power ordering* and *mainline ordering*.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Set

from peyvand.events.auth import get_user_power_level
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.state_res.graph import AuthGraph
from peyvand.types import EventID

POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")


def is_power_event(event: Pdu) -> bool:
    """A *power event*: ``m.room.power_levels``, ``m.room.join_rules``, or a kick or ban.

    "Definitions", "Power events": a state event of type ``m.room.power_levels`` or
    ``m.room.join_rules``, or an ``m.room.member`` with membership ``leave`` or ``ban``
    whose ``sender`` is not its ``state_key``. Synapse also counts ``m.room.create``,
    which can only matter for a room with two create events; it is included for parity.
    """
    if not event.is_state():
        return False
    if event.state_tuple in (
        POWER_LEVELS_KEY,
        ("m.room.join_rules", ""),
        ("m.room.create", ""),
    ):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def sender_power_level(event: Pdu, graph: AuthGraph) -> int | float:
    """The power level of ``event``'s sender "when looking at their respective auth_events".

    The power levels and create events among ``auth_events`` decide (in v12 the create
    event is implied, and a room creator has infinite power, ``math.inf``).
    """
    auth_state: dict[StateKey, Pdu] = {}
    for auth_id in graph.auth_ids(event.event_id):
        auth_event = graph.event_map.get(auth_id)
        if auth_event is not None and auth_event.state_tuple in (
            POWER_LEVELS_KEY,
            ("m.room.create", ""),
        ):
            auth_state[auth_event.state_tuple] = auth_event
    return get_user_power_level(event.sender, auth_state, event.room_version)


def reverse_topological_power_order(
    power_event_ids: Iterable[EventID], full_conflicted: Set[EventID], graph: AuthGraph
) -> list[EventID]:
    """Step 1: the power events plus their auth chains within the full conflicted set,
    in *reverse topological power ordering* (earliest first).

    Kahn's algorithm over the auth DAG, choosing at each step the smallest ready event by
    (sender's power level descending, ``origin_server_ts``, ``event_id``). As Synapse and
    other servers do, the chain of a power event is followed only through events of the
    full conflicted set, and edges are the direct ``auth_events`` links among them.
    """
    edges: dict[EventID, set[EventID]] = {}
    stack = list(power_event_ids)
    while stack:
        event_id = stack.pop()
        if event_id in edges:
            continue
        parents = {a for a in graph.auth_ids(event_id) if a in full_conflicted}
        edges[event_id] = parents
        stack.extend(parents - edges.keys())

    def key(event_id: EventID) -> tuple[int | float, int, EventID]:
        event = graph.event_map[event_id]
        return (-sender_power_level(event, graph), event.origin_server_ts, event_id)

    children: dict[EventID, list[EventID]] = {event_id: [] for event_id in edges}
    for event_id, parents in edges.items():
        for parent in parents:
            children[parent].append(event_id)
    remaining = {event_id: len(parents) for event_id, parents in edges.items()}
    ready = [(key(event_id), event_id) for event_id, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[EventID] = []
    while ready:
        _, event_id = heapq.heappop(ready)
        ordered.append(event_id)
        for child in children[event_id]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, (key(child), child))
    return ordered


def _power_levels_parent(event_id: EventID, graph: AuthGraph) -> EventID | None:
    """The ``m.room.power_levels`` event among ``event_id``'s auth events, if any."""
    for auth_id in graph.auth_ids(event_id):
        auth_event = graph.event_map.get(auth_id)
        if auth_event is not None and auth_event.state_tuple == POWER_LEVELS_KEY:
            return auth_id
    return None


def mainline_order(
    event_ids: Iterable[EventID], power_levels_id: EventID | None, graph: AuthGraph
) -> list[EventID]:
    """Step 3: ``event_ids`` in *mainline ordering* based on ``power_levels_id``.

    The mainline of P₀ is P₀, the power levels event in its auth events P₁, and so on.
    An event's *mainline position* is the index i of the first Pᵢ met when following
    power levels auth events from it (the event itself excluded), or infinity if none is
    met. Events sort by position descending, then ``origin_server_ts``, then ``event_id``.
    """
    position: dict[EventID, float] = {}
    mainline_id = power_levels_id
    index = 0
    while mainline_id is not None and mainline_id not in position:
        position[mainline_id] = index
        mainline_id = _power_levels_parent(mainline_id, graph)
        index += 1

    def mainline_position(event_id: EventID) -> float:
        walked: dict[EventID, None] = {}
        current = _power_levels_parent(event_id, graph)
        while current is not None and current not in position:
            walked[current] = None
            current = _power_levels_parent(current, graph)
            if current in walked:  # a cycle: not a genuine DAG, no mainline event
                current = None
        result = position[current] if current is not None else math.inf
        # Every power levels event passed on the way leads to the same mainline event.
        position.update(dict.fromkeys(walked, result))
        return result

    def key(event_id: EventID) -> tuple[float, int, EventID]:
        event = graph.event_map[event_id]
        return (-mainline_position(event_id), event.origin_server_ts, event_id)

    return sorted(event_ids, key=key)
