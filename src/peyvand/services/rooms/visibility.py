"""Which events a user may see (Client-Server API, "Room History Visibility").

Decided per event from the state after it: the user's membership then and the room's
``m.room.history_visibility``. Lookups are memoised per state group, so a page of events
sent under one state costs one lookup. Under ``shared``, "Server behaviour" rule 3 lets a
user see an event if they "joined the room at any point after the event was sent": a
joined member sees all of it, and a former member what was sent before their latest join
(read once per room and call, only for a reader not joined), so a user who left or was
kicked keeps the history they could read while joined, as the module's introduction says.
Events from users the reader ignores are left out, except state events ("Ignoring
Users", "Server behaviour"), and so are redactions not in effect (rooms v3+ "Handling
redactions": not sent to clients until both events are known and the redaction is
applied).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from peyvand.events.pdu import StateKey
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.types import RoomID, UserID

_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")
# From the least to the most restrictive.
_PRIORITY = ("world_readable", "shared", "invited", "joined")


def _value(content: Mapping[str, Any]) -> str:
    """A visibility content's value; unknown values count as ``shared``."""
    value = content.get("history_visibility")
    return value if isinstance(value, str) and value in _PRIORITY else "shared"


IgnoredBy = Callable[[UserID], Awaitable[frozenset[UserID]]]
"""user -> the users they ignore."""

LatestJoin = Callable[[RoomID, UserID], Awaitable[int | None]]
"""(room, user) -> the stream position of the user's latest join to it (None: never)."""


class VisibilityService:
    def __init__(self, state: StateService, ignored_by: IgnoredBy, latest_join: LatestJoin) -> None:
        self._state = state
        self._ignored_by = ignored_by
        self._latest_join = latest_join

    async def filter_events(
        self,
        user_id: UserID,
        events: Sequence[StoredEvent],
        *,
        currently_joined: bool,
    ) -> list[StoredEvent]:
        """``events`` that ``user_id`` may see, in the same order."""
        member_key: StateKey = ("m.room.member", user_id)
        keys = [_VISIBILITY_KEY, member_key]
        by_group: dict[int, tuple[str, str | None]] = {}
        ignored = await self._ignored_by(user_id) if events else frozenset()
        for event in events:
            if event.state_group in by_group:
                continue
            ids = await self._state.state_ids_in_room(event.pdu.room_id, event.state_group, keys)
            found = await self._state.get_state_events_by_id(ids.values())
            vis_id = ids.get(_VISIBILITY_KEY)
            visibility = _value(found[vis_id].pdu.content) if vis_id in found else "shared"
            membership = None
            if (member_id := ids.get(member_key)) and member_id in found:
                membership = found[member_id].pdu.membership
            by_group[event.state_group] = (visibility, membership)
        joins: dict[RoomID, int | None] = {}
        visible = []
        for event in events:
            visibility, membership = by_group[event.state_group]
            if event.pdu.sender in ignored and not event.pdu.is_state():
                continue
            if event.pdu.type == _VISIBILITY_KEY[0] and event.pdu.state_key == "":
                # A change is seen by whoever may see either side of it (Synapse does the
                # same): the less restrictive of the old and the new visibility.
                before = await self._visibility_before(event)
                if _PRIORITY.index(before) < _PRIORITY.index(visibility):
                    visibility = before
            if (
                (event.pdu.type == "m.room.member" and event.pdu.state_key == user_id)
                or visibility == "world_readable"
                or membership == "join"
                or (visibility == "invited" and membership == "invite")
                or (
                    visibility == "shared"
                    and (currently_joined or await self._joined_after(user_id, event, joins))
                )
            ):
                visible.append(event)
        redactions = [e.pdu.event_id for e in visible if e.pdu.type == "m.room.redaction"]
        if redactions:
            # Rooms v3+ "Handling redactions": not shown until in effect.
            pending = await self._state.pending_redactions(redactions)
            visible = [e for e in visible if e.pdu.event_id not in pending]
        return visible

    async def _joined_after(
        self, user_id: UserID, event: StoredEvent, joins: dict[RoomID, int | None]
    ) -> bool:
        """Whether the user joined the event's room after it was sent (``joins``: each
        room's latest join, read once per call)."""
        room_id = event.pdu.room_id
        if room_id not in joins:
            joins[room_id] = await self._latest_join(room_id, user_id)
        latest = joins[room_id]
        return latest is not None and event.stream_ordering < latest

    async def _visibility_before(self, event: StoredEvent) -> str:
        """The history visibility just before the state event ``event``."""
        before = (await self._state.state_group_row(event.state_group)).prev_group
        if before is None:
            return "shared"
        ids = await self._state.state_ids_in_room(event.pdu.room_id, before, [_VISIBILITY_KEY])
        found = await self._state.get_state_events_by_id(ids.values())
        vis_id = ids.get(_VISIBILITY_KEY)
        return _value(found[vis_id].pdu.content) if vis_id in found else "shared"
