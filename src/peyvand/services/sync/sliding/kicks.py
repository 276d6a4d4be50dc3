"""Which rooms a user was kicked from: lists keep showing those (Synapse's
``filter_membership_for_sync``: "A leave != kick"), while a room the user left is shown
only in the response after the leave.

Kept per (user, room, leave position), so each leave's sender is read once: the
snapshots of the rooms (cached by the state service) name the member events, read in one
batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from peyvand.lru import LRU
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID, RoomID, UserID

_LEAVES = 100_000


class Kicks:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._kicked: LRU[tuple[UserID, RoomID, int], bool] = LRU(_LEAVES)

    async def kicked(self, user_id: UserID, left: Mapping[RoomID, int]) -> set[RoomID]:
        """The rooms of ``left`` (room -> position of the user's leave) whose leave was
        sent by someone else. A room whose member event is not held (a state reset, a
        rejected remote invite) counts as left, as in Synapse."""
        kicked: set[RoomID] = set()
        unknown: dict[EventID, tuple[RoomID, int]] = {}
        for room_id, position in left.items():
            held = self._kicked.get((user_id, room_id, position))
            if held is None:
                snapshot = await self._state.get_room(room_id)
                event_id = snapshot.state.get(("m.room.member", user_id)) if snapshot else None
                if event_id is not None:
                    unknown[event_id] = (room_id, position)
            elif held:
                kicked.add(room_id)
        events = await self._state.get_pdus(unknown) if unknown else {}
        for event_id, (room_id, position) in unknown.items():
            pdu = events.get(event_id)
            by_other = pdu is not None and pdu.membership == "leave" and pdu.sender != user_id
            self._kicked.put((user_id, room_id, position), by_other)
            if by_other:
                kicked.add(room_id)
        return kicked
