"""The stripped state of a room the user is invited to or knocking on, as sync shows
it (Client-Server API, "Stripped state"; MSC4186 ``invite_state``), and who sent the
user's membership (the inviter, whose invites are hidden if the user ignores them).
"""

from __future__ import annotations

from peyvand.events.pdu import StateKey
from peyvand.events.serialize import invite_stripped_state, stripped_state_event
from peyvand.services.timeline.room_state import STRIPPED_STATE_TYPES, StateService
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.types import JsonDict, RoomID, UserID


class InviteState:
    def __init__(self, state: StateService, remote_invites: RemoteInviteStore | None) -> None:
        self._state = state
        self._remote_invites = remote_invites

    async def stripped(self, room_id: RoomID, user_id: UserID) -> tuple[list[JsonDict], str | None]:
        """The room's stripped state events and the sender of the user's membership."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return await self.remote(room_id, user_id)
        keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES]
        keys.append(("m.room.member", user_id))
        events = await self._state.get_state_events(snapshot.state, keys)
        member = events.get(("m.room.member", user_id))
        if member is not None and member.sender != user_id:
            # The inviter's own member event too (the spec lets the server add events
            # to its list; Synapse does, and clients name the inviter from it).
            inviter: StateKey = ("m.room.member", member.sender)
            events.update(await self._state.get_state_events(snapshot.state, [inviter]))
        stripped = [stripped_state_event(e) for e in events.values()]
        return stripped, member.sender if member else None

    async def remote(self, room_id: RoomID, user_id: UserID) -> tuple[list[JsonDict], str | None]:
        """An invite to a room on another server (one this server does not hold): the
        stripped state its server sent, and the invite itself; none when there is no
        such invite."""
        invite = (
            await self._remote_invites.get(room_id, user_id)
            if self._remote_invites is not None
            else None
        )
        if invite is None:
            return [], None
        events = invite_stripped_state(invite.invite_state, user_id, invite.pdu, invite.sender)
        return events, invite.sender
