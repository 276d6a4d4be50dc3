"""The ``state_after`` section of a room in /sync (Client-Server API v1.16, "Syncing",
``use_state_after``; MSC4222, which Synapse serves as ``org.matrix.msc4222.state_after``
and matrix-js-sdk asks for on every sync).

A client that asks for it takes a room's state from ``state_after`` alone: the state at
the **end** of the timeline, never the timeline's own state events. Only so can it learn
that state resolution undid an event it was shown: a kick that lost to a concurrent ban
puts the member's key back to their join, an older event, which ``state`` (applied before
the timeline) cannot say. So a joined room's end is its snapshot, the current state
resolved over every forward extremity (Synapse's current state), not the state after its
newest event, which at a fork is one side's. The snapshot may already hold an event
being committed past the sync's position: the client then gets that state a moment
before the event reaches its timeline (the next response sends the key again). An
incremental section holds the keys whose event differs from the state at the token (as
``_gap`` reads it: that of the newest event up to it), found from the deltas of the
state groups between the two when one descends from the other, else by comparing both
states. A key with no event left (a state reset) cannot be told, as in Synapse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from peyvand.events.pdu import StateKey
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.sync.state_section import MEMBER
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import EventID, RoomID

# Parent groups walked from the end towards the token's before comparing whole states.
_WALK = 32

# The current keys of a room's state other than members'.
NonMemberKeys = Callable[[RoomSnapshot], Sequence[StateKey]]


class StateAfter:
    def __init__(self, state: StateService, room_events: RoomEventsService) -> None:
        self._state = state
        self._room_events = room_events

    async def joined(
        self,
        snapshot: RoomSnapshot,
        since: int | None,
        *,
        members: AbstractSet[str] | None,
        non_member_keys: NonMemberKeys,
    ) -> tuple[dict[StateKey, EventID], set[StateKey]]:
        """A joined room's section, and the keys in it that changed since ``since``
        (None: the whole state, as for an initial sync). ``members``: lazy-loading, the
        users whose member events to include whether or not they changed (None: all
        state). No await between reading the snapshot and checking that it did not move:
        every move of a room assigns it new ``extremities``."""
        if since is None:
            if members is None:
                whole = dict(snapshot.state)
            else:
                wanted = [*non_member_keys(snapshot), *((MEMBER, u) for u in members)]
                whole = {k: v for k in wanted if (v := snapshot.state.get(k)) is not None}
            return whole, set(whole)
        previous = await self._room_events.state_group_at(snapshot.room_id, since)
        extremities = snapshot.extremities
        end_group = snapshot.state_group.state_group
        if previous == end_group:
            return _members(snapshot.state, members), set()
        keys = await self._changed_keys(previous, end_group)
        if keys is not None:
            assert previous is not None
            before = await self._state.state_ids_at_group(previous, list(keys))
            if snapshot.extremities is extremities:
                return self._section(snapshot.state, keys, before, members)
        # The state forked or was reset between the two (or the room moved meanwhile):
        # both states whole.
        end = dict(snapshot.state)
        before = await self._state.state_ids_at_group(previous) if previous is not None else {}
        return self._section(end, end.keys() | before.keys(), before, members)

    async def left(
        self, room_id: RoomID, since: int | None, left_at: int
    ) -> dict[StateKey, EventID]:
        """A room left at stream position ``left_at``: its state there, all of it when
        ``since`` is None (the client never saw the room joined), else what changed
        since ``since``."""
        end_group = await self._room_events.state_group_at(room_id, left_at)
        if end_group is None:
            return {}
        if since is None:
            return await self._state.state_ids_at_group(end_group)
        previous = await self._room_events.state_group_at(room_id, since)
        if previous == end_group:
            return {}
        keys = await self._changed_keys(previous, end_group)
        if keys is None or previous is None:
            end = await self._state.state_ids_at_group(end_group)
            before = await self._state.state_ids_at_group(previous) if previous is not None else {}
            return self._section(end, end.keys() | before.keys(), before, None)[0]
        wanted = list(keys)
        end = await self._state.state_ids_at_group(end_group, wanted)
        before = await self._state.state_ids_at_group(previous, wanted)
        return self._section(end, keys, before, None)[0]

    @staticmethod
    def _section(
        end: Mapping[StateKey, EventID],
        keys: Iterable[StateKey],
        before: Mapping[StateKey, EventID],
        members: AbstractSet[str] | None,
    ) -> tuple[dict[StateKey, EventID], set[StateKey]]:
        """The keys of ``keys`` whose event in ``end`` differs from ``before`` (one
        removed has no event to send), with ``members``' member events."""
        changed = {k for k in keys if end.get(k) != before.get(k)}
        section = {k: end[k] for k in changed if k in end}
        for key, event_id in _members(end, members).items():
            section.setdefault(key, event_id)
        return section, changed & section.keys()

    async def _changed_keys(self, previous: int | None, end: int | None) -> set[StateKey] | None:
        """A superset of the keys that changed from group ``previous`` to ``end``: those
        of the deltas of the groups on the way up from ``end`` through its parents (each
        delta holds at least its change from its parent). None when ``previous`` is not
        among ``end``'s nearest ``_WALK`` ancestors (the state forked, or was reset into
        a group of its own)."""
        if previous is None or end is None:
            return None
        walked: list[int] = []
        group: int | None = end
        while group != previous:
            if group is None or len(walked) == _WALK:
                return None
            walked.append(group)
            group = (await self._state.state_group_row(group)).prev_group
        deltas = await self._state.state_group_deltas(walked)
        return {k for delta in deltas.values() for k in delta}


def _members(
    state: Mapping[StateKey, EventID], members: AbstractSet[str] | None
) -> dict[StateKey, EventID]:
    """The member events of ``members`` in ``state``."""
    if not members:
        return {}
    keys = ((MEMBER, u) for u in members)
    return {k: v for k in keys if (v := state.get(k)) is not None}
