"""Resolving a room's state where its DAG forks (Server-Server API, "Room State
Resolution"; "Room Version 2" / "Room Version 12", "State resolution").

The pure algorithm is ``events.state_res.resolve_state``; this module feeds it. Two uses:

- the state before an event with several ``prev_events``: the resolution of the states
  after each of them;
- a room's current state: the resolution of the states after each of its forward
  extremities, as Synapse computes it. Resolving the previous current state (itself a
  resolution) with one new state is not the same thing, and two servers doing that can
  keep different states for ever.

The events the algorithm reads (every event of the state sets and their auth chains) are
prefetched here, together with any event not stored yet (the one being applied); the
CPU work runs in the executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.events.state_res import StateResError, StateResTooLarge, resolve_state, split_state
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.models import NewStateGroup, StateChange, StateGroupRow
from peyvand.types import EventID, UserID

# Bound on the events one resolution may load (auth chains included).
MAX_AUTH_CHAIN: Final = 50_000


@dataclass(frozen=True, slots=True)
class CurrentState:
    """A room's current state after one more event: its forward extremities, its state
    group (``new_group`` when it needs a new one), and what changed as
    ``((type, state_key), event ID, membership)``, the event ID None for a key the state
    no longer has (a state reset: resolution left no event for it)."""

    extremities: list[EventID]
    row: StateGroupRow
    new_group: NewStateGroup | None
    changes: tuple[StateChange, ...]

    def move(self, snapshot: RoomSnapshot, depth: int) -> None:
        """Move the room's snapshot to this state (a member key removed leaves the user
        with no membership at all)."""
        snapshot.extremities = list(self.extremities)
        snapshot.depth = max(snapshot.depth, depth)
        snapshot.state_group = self.row
        # By key: the order storage reads members set at one position back in (the
        # heroes are the first members).
        changes = self.changes if len(self.changes) < 2 else sorted(self.changes, key=_key)
        for key, event_id, membership in changes:
            if event_id is None:
                snapshot.state.pop(key, None)
                if key[0] == "m.room.member":
                    snapshot.drop_membership(UserID(key[1]))
                continue
            snapshot.state[key] = event_id
            if key[0] == "m.room.member" and membership is not None:
                snapshot.set_membership(UserID(key[1]), membership)


class StateResolver:
    """State resolution over events held here (plus events about to be stored)."""

    def __init__(self, state: StateService) -> None:
        self._state = state

    async def state_after(self, event_id: EventID) -> dict[StateKey, EventID]:
        """The state after a timeline event of this server (its state group; purged
        events keep theirs). ``StateResError`` if the event is not held here."""
        event = (await self._state.get_dag_events([event_id])).get(event_id)
        if event is None:
            raise StateResError(f"no state is known after {event_id}")
        return await self._state.state_ids_at_group(event.state_group)

    async def current_after(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        after_state: dict[StateKey, EventID],
        after_row: StateGroupRow,
    ) -> CurrentState:
        """The room's current state once ``pdu`` (with ``after_state`` in group
        ``after_row``) joins its DAG: ``pdu`` replaces its ``prev_events`` among the
        forward extremities, and the state is the resolution of the states after each of
        them. Nothing is changed yet (see ``CurrentState.move``)."""
        prevs = set(pdu.prev_event_ids)
        extremities = [e for e in snapshot.extremities if e not in prevs] + [pdu.event_id]
        current = await self.resolve_extremities(
            pdu.room_version, extremities, {pdu.event_id: after_state}, [pdu]
        )
        state = snapshot.state
        changes = {k: e for k, e in current.items() if state.get(k) != e}
        # |removed| = |state| + |added| - |current|: mostly none, found without a pass.
        added = sum(1 for k in changes if k not in state)
        removed = []
        if len(state) + added > len(current):
            removed = [k for k in state if k not in current]
        row, new_group = after_row, None
        if not changes and not removed:
            # The room's state stays as it was (an event on one side of a fork that
            # keeps it): so does its group, not a new one per event.
            row = snapshot.state_group
        elif current != after_state:
            new_group = await self._state.group_holding(
                current, [(snapshot.state_group, snapshot.state), (after_row, after_state)]
            )
            row = new_group.row
        members = await self._state.get_pdus(
            e for k, e in changes.items() if k[0] == "m.room.member" and e != pdu.event_id
        )
        members[pdu.event_id] = pdu
        change_rows: list[StateChange] = [
            (k, e, members[e].membership if e in members else None) for k, e in changes.items()
        ]
        change_rows += [(k, None, None) for k in removed]
        return CurrentState(extremities, row, new_group, tuple(change_rows))

    async def resolve_extremities(
        self,
        room_version: RoomVersion,
        extremities: Sequence[EventID],
        known: Mapping[EventID, dict[StateKey, EventID]],
        new_events: Sequence[Pdu] = (),
    ) -> dict[StateKey, EventID]:
        """The room state at ``extremities``: the resolution of the state after each.

        ``known`` gives the state after extremities not stored yet (at least the event
        being applied); ``new_events`` are those events themselves."""
        state_sets = [known[e] if e in known else await self.state_after(e) for e in extremities]
        return await self.resolve(room_version, state_sets, new_events)

    async def resolve(
        self,
        room_version: RoomVersion,
        state_sets: Sequence[Mapping[StateKey, EventID]],
        new_events: Sequence[Pdu] = (),
    ) -> dict[StateKey, EventID]:
        """State resolution over ``state_sets``; ``new_events`` are events of the sets
        that are not stored yet (without them the algorithm would leave them out, and
        the fork would resolve differently here than on every other server)."""
        if len(state_sets) == 1:
            return dict(state_sets[0])
        _, conflicted = split_state(list(state_sets))
        if not conflicted:
            merged: dict[StateKey, EventID] = {}
            for state_set in state_sets:
                merged.update(state_set)
            return merged
        seeds = {e for state_set in state_sets for e in state_set.values()}
        event_map = await self._auth_closure(seeds, {p.event_id: p for p in new_events})
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, resolve_state, room_version, list(state_sets), event_map
        )

    async def _auth_closure(
        self, seeds: Iterable[EventID], in_hand: Mapping[EventID, Pdu]
    ) -> dict[EventID, Pdu]:
        """``seeds`` and everything reachable through ``auth_events`` that is held here
        or ``in_hand``."""
        found: dict[EventID, Pdu] = {}
        frontier = set(seeds)
        while frontier:
            if len(found) > MAX_AUTH_CHAIN:
                raise StateResTooLarge("auth chain events", MAX_AUTH_CHAIN, len(found))
            loaded = {e: in_hand[e] for e in frontier if e in in_hand}
            loaded.update(await self._state.get_pdus(frontier - loaded.keys()))
            found.update(loaded)
            frontier = {a for p in loaded.values() for a in p.auth_event_ids if a not in found}
        return found


def _key(change: StateChange) -> StateKey:
    return change[0]
