"""State resolution v2 (room versions 2-11) and v2.1 (room version 12); room version 1's
algorithm is ``v1.resolve_state_v1``, to which ``resolve_state`` hands v1 rooms.

Spec: "Room Version 2", "State resolution" (shared by v2-v11) and "Room Version 12",
"State resolution". The algorithm, with the step numbers used in comments below:

1. Sort the power events of the *full conflicted set*, with the events of their auth
   chains that are in that set, by *reverse topological power ordering*.
2. Apply the *iterative auth checks* to them, starting from the unconflicted state map
   (v2) or from an empty state map (v2.1), giving a partially resolved state.
3. Sort the remaining events by *mainline ordering* based on the partially resolved power
   levels.
4. Apply the iterative auth checks to them, on top of the partially resolved state.
5. Overwrite the result with the unconflicted state map.

v2.1 also widens the full conflicted set with the *conflicted state subgraph*.

Deliberate choices where the spec leaves room (Synapse, ``synapse/state/v2.py``, is the
reference): a key missing from some state set is conflicted; a state set's full auth chain
includes its own events; conflicted and auth-difference events missing from ``event_map``
take no part. Unlike Synapse, which keeps previously rejected events out of the state, a
rejected event is re-checked like any other, as "Rejected events" requires; rejected
events are never used as *auth events*, also as the spec requires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from peyvand.events.auth import AuthError, auth_types_for_event, check_auth_rules
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion, StateResAlgorithm
from peyvand.events.state_res.errors import MissingEventError, StateResError, StateResTooLarge
from peyvand.events.state_res.graph import (
    AuthChainLookup,
    AuthGraph,
    auth_difference,
    conflicted_subgraph,
    create_event_id_of,
)
from peyvand.events.state_res.ordering import (
    POWER_LEVELS_KEY,
    is_power_event,
    mainline_order,
    reverse_topological_power_order,
)
from peyvand.events.state_res.v1 import resolve_state_v1
from peyvand.types import EventID

StateMap = Mapping[StateKey, EventID]


@dataclass(frozen=True, slots=True)
class StateResLimits:
    """Bounds past which ``resolve_state`` refuses with ``StateResTooLarge``.

    ``max_state_sets``: state sets to merge (forward extremities; the spec caps an event's
    ``prev_events`` at 20). ``max_conflicted_events``: distinct conflicted events, checked
    before any auth chain is walked. ``max_events``: distinct events whose auth edges the
    resolution follows (auth chains, the auth difference, the v12 subgraph).
    """

    max_state_sets: int = 100
    max_conflicted_events: int = 20_000
    max_events: int = 200_000


DEFAULT_LIMITS = StateResLimits()


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[EventID, Pdu],
    auth_chains: AuthChainLookup | None = None,
    *,
    limits: StateResLimits = DEFAULT_LIMITS,
) -> dict[StateKey, EventID]:
    """The resolution of ``state_sets``, a ``(type, state_key) -> event ID`` map.

    ``event_map`` must hold every conflicted event and the events of the auth chains the
    algorithm walks (the caller prefetches; nothing is fetched here), the unconflicted
    events that the conflicted events' auth checks consult (the ``auth_types_for_event``
    keys and the power levels), and in v12 the create event. ``auth_chains`` optionally
    gives precomputed auth chains (a callable or a possibly partial mapping), which spares
    the walks; without it chains are computed from ``event_map``.

    Raises ``StateResTooLarge`` past ``limits``, ``MissingEventError`` when a required
    event is absent and ``StateResError`` when the events are from different rooms.
    Cost grows with the conflicted events and their auth chains; the unconflicted state is
    only split off, copied into the result and walked as little as ``auth_difference``
    allows.
    """
    if len(state_sets) > limits.max_state_sets:
        raise StateResTooLarge("max_state_sets", limits.max_state_sets, len(state_sets))
    if room_version.state_res is StateResAlgorithm.V1:
        return resolve_state_v1(room_version, state_sets, event_map)
    unconflicted, conflicted = split_state(state_sets)
    if not conflicted:
        return unconflicted
    conflicted_ids: set[EventID] = set().union(*conflicted.values())
    if len(conflicted_ids) > limits.max_conflicted_events:
        raise StateResTooLarge(
            "max_conflicted_events", limits.max_conflicted_events, len(conflicted_ids)
        )
    graph = AuthGraph(event_map, auth_chains, limits.max_events)
    per_set = [
        [event_id for key in conflicted if (event_id := state_set.get(key)) is not None]
        for state_set in state_sets
    ]
    difference, closure = auth_difference(graph, per_set, unconflicted.values(), conflicted_ids)
    full_conflicted = conflicted_ids | difference
    v2_1 = room_version.state_res is StateResAlgorithm.V2_1
    if v2_1:
        full_conflicted |= conflicted_subgraph(graph, conflicted_ids, closure)
    full_conflicted = {event_id for event_id in full_conflicted if event_id in event_map}
    _check_one_room(full_conflicted, graph)
    # v2.1, step 2: the iterative auth checks start from an empty state map.
    base: StateMap = {} if v2_1 else unconflicted
    resolved = _resolve_conflicted(room_version, full_conflicted, base, graph)
    # 5. Replace any event with the event with the same key from the unconflicted state.
    resolved.update(unconflicted)
    return resolved


def split_state(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, EventID], dict[StateKey, set[EventID]]]:
    """The *unconflicted state map* and the conflicted event IDs of each conflicted key.

    "Definitions", "Unconflicted state map and conflicted state set": a key is
    unconflicted if every state set maps it to the same event; a key some set lacks is
    conflicted (between the events the others have).
    """
    unconflicted: dict[StateKey, EventID] = {}
    conflicted: dict[StateKey, set[EventID]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first, rest = state_sets[0], state_sets[1:]
    keys: set[StateKey] = set(first)
    for state_set in rest:
        keys.update(state_set)
    for key in keys:
        values = {state_set.get(key) for state_set in rest}
        values.add(first.get(key))
        if len(values) == 1 and None not in values:
            unconflicted[key] = first[key]
        else:
            conflicted[key] = {value for value in values if value is not None}
    return unconflicted, conflicted


def _check_one_room(event_ids: Set[EventID], graph: AuthGraph) -> None:
    rooms = {graph.event_map[event_id].room_id for event_id in event_ids}
    if len(rooms) > 1:
        raise StateResError(f"state sets mix events of several rooms: {sorted(rooms)}")


def _resolve_conflicted(
    room_version: RoomVersion, full_conflicted: set[EventID], base: StateMap, graph: AuthGraph
) -> dict[StateKey, EventID]:
    """Steps 1 to 4: the full conflicted set applied over ``base``; returns only the keys
    the conflicted events set (the caller lays the unconflicted state over them)."""
    power_events = [e for e in full_conflicted if is_power_event(graph.event_map[e])]
    # 1. The power events and their auth chains in the full conflicted set, sorted.
    power_order = reverse_topological_power_order(power_events, full_conflicted, graph)
    resolved: dict[StateKey, EventID] = {}
    # 2. Iterative auth checks from the unconflicted (v2) or empty (v2.1) state.
    _iterative_auth_checks(room_version, power_order, resolved, base, graph)
    # 3. The other events, by mainline ordering based on the partially resolved power levels.
    leftover = full_conflicted.difference(power_order)
    power_levels = resolved.get(POWER_LEVELS_KEY, base.get(POWER_LEVELS_KEY))
    leftover_order = mainline_order(leftover, power_levels, graph)
    # 4. Iterative auth checks on the partially resolved state.
    _iterative_auth_checks(room_version, leftover_order, resolved, base, graph)
    return resolved


def _iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: Sequence[EventID],
    resolved: dict[StateKey, EventID],
    base: StateMap,
    graph: AuthGraph,
) -> None:
    """The *iterative auth checks algorithm*, applied in place to ``resolved``.

    The partially resolved state is ``resolved`` laid over ``base`` (not copied, so the
    unconflicted state costs nothing here).

    Each event is checked by the authorization rules against its own (not rejected) auth
    events, overlaid, for each key the auth events selection names, by the partially
    resolved state; "if a key required for checking the authorisation rules is not present
    in the state, then the appropriate state event from the event's ``auth_events`` is
    used". Allowed events replace their key in ``resolved``; the others are ignored.
    """
    for event_id in event_ids:
        event = graph.event_map[event_id]
        if not event.is_state():
            continue
        auth_state: dict[StateKey, Pdu] = {}
        for auth_id in graph.auth_ids(event_id):
            auth_event = graph.event_map.get(auth_id)
            if auth_event is None:
                if auth_id == create_event_id_of(event):
                    raise MissingEventError(auth_id, "the room's m.room.create")
                continue
            if auth_event.rejected_reason is None and auth_event.is_state():
                auth_state[auth_event.state_tuple] = auth_event
        keys = auth_types_for_event(
            room_version, event.type, event.sender, event.state_key, event.content
        )
        for key in keys:
            state_id = resolved.get(key, base.get(key))
            if state_id is None:
                continue
            state_event = graph.event_map.get(state_id)
            if state_event is None:
                raise MissingEventError(state_id, f"state {key} consulted by the auth checks")
            auth_state[key] = state_event
        try:
            check_auth_rules(event, auth_state)
        except AuthError:
            continue
        resolved[event.state_tuple] = event_id
