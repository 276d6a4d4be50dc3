"""State resolution v1 (room version 1), a pure function.

Spec: "Room Version 1", "State resolution". Here *R* is the resolution so far:

1. *R* starts as the union of the state sets without the *conflicting* events: a conflict
   is between states that map the same ``(type, state_key)`` to different events (a key
   only some sets have is not a conflict).
2. Conflicting ``m.room.power_levels`` events, then ``m.room.join_rules`` events, then
   each ``m.room.member`` key's events are sorted by ascending ``depth`` then descending
   ``sha1(event_id)``; the first goes into *R*, and each next one replaces it while it is
   allowed by the authorization rules in *R* (the first one that is not ends the pass).
3. Every other conflict takes the event with the highest depth and lowest
   ``sha1(event_id)`` that passes the authorization rules in *R*.

Where the spec is silent Synapse (``synapse/state/v1.py``) is followed: conflicting events
missing from ``event_map`` take no part (one left is simply kept), and when no event of a
step-3 conflict is allowed the last one in its order is kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from peyvand.events.auth import AuthError, auth_types_for_event, check_auth_rules
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.types import EventID

_POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")


def resolve_state_v1(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, EventID]],
    event_map: Mapping[EventID, Pdu],
) -> dict[StateKey, EventID]:
    """The v1 resolution of ``state_sets``; ``event_map`` must hold the conflicting events
    and the unconflicted events their authorization consults."""
    resolved: dict[StateKey, EventID] = {}
    conflicted: dict[StateKey, set[EventID]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif resolved.setdefault(key, event_id) != event_id:
                conflicted[key] = {resolved.pop(key), event_id}
    candidates: dict[StateKey, list[Pdu]] = {}
    for key, event_ids in conflicted.items():
        events = [event_map[e] for e in event_ids if e in event_map]
        if len(events) == 1:
            resolved[key] = events[0].event_id
        elif events:
            candidates[key] = events
    auth_passes = [
        [key for key in candidates if key == _POWER_LEVELS_KEY],
        [key for key in candidates if key[0] == "m.room.join_rules"],
        [key for key in candidates if key[0] == "m.room.member"],
    ]
    for keys in auth_passes:
        for key in keys:
            resolved[key] = _resolve_auth_key(
                room_version, candidates.pop(key), resolved, event_map
            )
    for key, events in candidates.items():
        resolved[key] = _resolve_other_key(room_version, events, resolved, event_map)
    return resolved


def _sha1(event: Pdu) -> str:
    return hashlib.sha1(event.event_id.encode()).hexdigest()


def _allowed(
    room_version: RoomVersion,
    event: Pdu,
    state: Mapping[StateKey, EventID],
    event_map: Mapping[EventID, Pdu],
) -> bool:
    """Whether ``event`` is allowed by the authorization rules in the room state ``state``."""
    keys = auth_types_for_event(
        room_version, event.type, event.sender, event.state_key, event.content
    )
    auth_state = {
        key: event_map[state[key]] for key in keys if key in state and state[key] in event_map
    }
    try:
        check_auth_rules(event, auth_state)
    except AuthError:
        return False
    return True


def _resolve_auth_key(
    room_version: RoomVersion,
    events: list[Pdu],
    resolved: Mapping[StateKey, EventID],
    event_map: Mapping[EventID, Pdu],
) -> EventID:
    """Step 2 for one key: ascending depth then descending sha1; the last event of the
    allowed run wins."""
    ordered = _by_depth_then_sha1_desc(events)
    state = dict(resolved)
    winner = ordered[0]
    for event in ordered[1:]:
        state[winner.state_tuple] = winner.event_id
        if not _allowed(room_version, event, state, event_map):
            break
        winner = event
    return winner.event_id


def _by_depth_then_sha1_desc(events: list[Pdu]) -> list[Pdu]:
    """Ascending ``depth``, then descending ``sha1(event_id)``."""
    by_sha1_desc = sorted(events, key=_sha1, reverse=True)
    return sorted(by_sha1_desc, key=lambda e: e.depth)


def _resolve_other_key(
    room_version: RoomVersion,
    events: list[Pdu],
    resolved: Mapping[StateKey, EventID],
    event_map: Mapping[EventID, Pdu],
) -> EventID:
    """Step 3 for one key: the highest depth and lowest sha1 that is allowed in *R*."""
    ordered = list(reversed(_by_depth_then_sha1_desc(events)))
    for event in ordered:
        if _allowed(room_version, event, resolved, event_map):
            return event.event_id
    return ordered[-1].event_id
