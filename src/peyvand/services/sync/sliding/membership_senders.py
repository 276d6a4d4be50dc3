"""Who sent a user's current membership in their rooms. A leave sent by someone else is a
kick, which lists keep showing (Synapse's ``filter_membership_for_sync``: "A leave !=
kick"), while a room the user left is shown only in the response after the leave; an
invite's sender is the inviter, whose invites are not shown to a user ignoring them
("Ignoring Users").

Kept per (user, room, membership position), so each membership's sender is read once:
the member events the rooms' cached snapshots name, the others' in one query (no room's
state is loaded for it), all read in one batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from peyvand.lru import LRU
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID, RoomID, UserID

_HELD = 100_000

# (user, rooms) -> the user's current member event in each room that has one.
LoadMemberEvents = Callable[[UserID, Sequence[RoomID]], Awaitable[dict[RoomID, EventID]]]


class MembershipSenders:
    def __init__(self, state: StateService, load_member_events: LoadMemberEvents) -> None:
        self._state = state
        self._load = load_member_events
        # (user, room, membership position) -> its sender (None: not held here).
        self._senders: LRU[tuple[UserID, RoomID, int], tuple[str | None]] = LRU(_HELD)

    async def senders(
        self, user_id: UserID, membership: str, rooms: Mapping[RoomID, int]
    ) -> dict[RoomID, str]:
        """The sender of the user's ``membership`` event at each position of ``rooms``
        (room -> position). A room whose member event is not held here (a state reset,
        a rejected or pending invite from another server) is left out."""
        found: dict[RoomID, str] = {}
        unknown: list[RoomID] = []
        for room_id, position in rooms.items():
            held = self._senders.get((user_id, room_id, position))
            if held is None:
                unknown.append(room_id)
            elif held[0] is not None:
                found[room_id] = held[0]
        if not unknown:
            return found
        event_ids: dict[RoomID, EventID] = {}
        uncached: list[RoomID] = []
        for room_id in unknown:
            snapshot = self._state.cached_room(room_id)
            if snapshot is None:
                uncached.append(room_id)
            elif (event_id := snapshot.state.get(("m.room.member", user_id))) is not None:
                event_ids[room_id] = event_id
        if uncached:
            event_ids.update(await self._load(user_id, uncached))
        events = await self._state.get_pdus(event_ids.values())
        for room_id in unknown:
            pdu = events.get(event_ids[room_id]) if room_id in event_ids else None
            if pdu is not None and pdu.membership != membership:
                continue  # a newer membership than asked about: not kept
            sender = pdu.sender if pdu is not None else None
            self._senders.put((user_id, room_id, rooms[room_id]), (sender,))
            if sender is not None:
                found[room_id] = sender
        return found
