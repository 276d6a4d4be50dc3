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
incremental section holds the keys whose event differs from the state at the token,
found from the deltas of the state groups between the two when one descends from the
other, else by comparing both states, once per pair of groups (every sync woken by one
event asks the same). A key with no event left (a state reset) cannot be told, as in
Synapse.

The state at the token is the room's current state group once the newest event up to
it was applied (``state_group_at(resolved=True)``: ``StoredEvent.current_group``,
recorded with each event), which at a fork is the resolved state the client was given,
not that event's side (which ``_gap`` reads, as Synapse's legacy sync does). So a key
the client holds from a resolution that later returns to that side's event is sent
again, as Synapse's diff of its current-state deltas sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from peyvand.events.pdu import StateKey
from peyvand.lru import LRU
from peyvand.services.rooms.reads import RoomEventsService
from peyvand.services.sync.state_section import MEMBER, only_members
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import EventID, RoomID

# Parent groups walked from the end towards the token's before comparing whole states.
_WALK = 32
# (token's group, end group) pairs whose changed keys are kept, when at most
# ``_KEPT_KEYS`` (more: a client back after long, not shared by the syncs one event wakes).
_CHANGES = 4096
_KEPT_KEYS = 256

# The current keys of a room's state other than members'.
NonMemberKeys = Callable[[RoomSnapshot], Sequence[StateKey]]


class StateAfter:
    def __init__(self, state: StateService, room_events: RoomEventsService) -> None:
        self._state = state
        self._room_events = room_events
        # (room, group at the token, group at the end) -> the keys whose event differs:
        # every sync woken by one event asks the same.
        self._changes: LRU[tuple[RoomID, int | None, int], frozenset[StateKey]] = LRU(_CHANGES)

    def forget_room(self, room_id: RoomID) -> None:
        """The room's stored state groups were rewritten (a partial state completed)."""
        for key in [k for k in self._changes if k[0] == room_id]:
            self._changes.pop(key)

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
        state). The snapshot is read with no await before its use."""
        if since is None:
            if members is None:
                whole = dict(snapshot.state)
            else:
                wanted = [*non_member_keys(snapshot), *((MEMBER, u) for u in members)]
                whole = {k: v for k in wanted if (v := snapshot.state.get(k)) is not None}
            return whole, set(whole)
        previous = await self._room_events.state_group_at(snapshot.room_id, since, resolved=True)
        end_group = snapshot.state_group.state_group
        if previous == end_group:
            return _members(snapshot.state, members), set()
        return await self._between(snapshot.room_id, previous, end_group, members)

    async def left(
        self,
        room_id: RoomID,
        since: int | None,
        left_at: int,
        *,
        members: AbstractSet[str] | None = None,
    ) -> tuple[dict[StateKey, EventID], set[StateKey]]:
        """A room left at stream position ``left_at``: its state there, all of it when
        ``since`` is None (the client never saw the room joined), else what changed
        since ``since``; and the keys in it that changed (as for ``joined``).
        ``members``: lazy-loading, as for ``joined`` (of the whole state, only their
        member events)."""
        end_group = await self._room_events.state_group_at(room_id, left_at, resolved=True)
        if end_group is None:
            return {}, set()
        if since is None:
            whole = await self._state.state_ids_at_group(end_group)
            section = whole if members is None else only_members(whole, members)
            return section, set(section)
        previous = await self._room_events.state_group_at(room_id, since, resolved=True)
        if previous == end_group:
            if not members:
                return {}, set()
            keys = [(MEMBER, u) for u in members]
            return dict(await self._state.state_ids_at_group(end_group, keys)), set()
        return await self._between(room_id, previous, end_group, members)

    async def _between(
        self,
        room_id: RoomID,
        previous: int | None,
        end_group: int,
        members: AbstractSet[str] | None,
    ) -> tuple[dict[StateKey, EventID], set[StateKey]]:
        """The events of ``end_group`` at the keys changed since group ``previous`` (one
        removed has none to send), with ``members``' member events; and the changed keys
        among them."""
        cache_key = (room_id, previous, end_group)
        changed = self._changes.get(cache_key)
        if changed is None:
            changed = await self._changed(room_id, previous, end_group)
            if len(changed) <= _KEPT_KEYS:
                self._changes.put(cache_key, changed)
        member_keys = [(MEMBER, u) for u in members or ()]
        end = await self._state.state_ids_in_room(room_id, end_group, [*changed, *member_keys])
        section = {k: end[k] for k in changed if k in end}
        for key in member_keys:
            if key in end:
                section.setdefault(key, end[key])
        return section, set(changed & section.keys())

    async def _changed(
        self, room_id: RoomID, previous: int | None, end_group: int
    ) -> frozenset[StateKey]:
        """The keys whose event differs between groups ``previous`` and ``end_group``."""
        keys = await self._changed_keys(previous, end_group)
        if keys is None or previous is None:
            end = await self._state.state_ids_at_group(end_group)
            before = await self._state.state_ids_at_group(previous) if previous is not None else {}
            keys = end.keys() | before.keys()
        else:
            wanted = list(keys)
            end = await self._state.state_ids_in_room(room_id, end_group, wanted)
            before = await self._state.state_ids_at_group(previous, wanted)
        return frozenset(k for k in keys if end.get(k) != before.get(k))

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
