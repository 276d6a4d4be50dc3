"""Who shares a room with whom, as EDUs need it: which other servers hear of a local
user's typing, presence or devices, and whether a remote user is worth tracking (some
local user shares a room with them)."""

from __future__ import annotations

from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import ServerName, UserID, server_name_of


class RoomSharing:
    def __init__(self, server_name: ServerName, state: StateService, index: RoomIndex) -> None:
        self._server_name = server_name
        self._state = state
        self._index = index

    def is_local(self, user_id: str) -> bool:
        return server_name_of(user_id) == self._server_name

    def servers_in(self, snapshot: RoomSnapshot) -> set[ServerName]:
        """The other servers with a member joined to the room."""
        servers = {server_name_of(u) for u, m in snapshot.memberships.items() if m == "join"}
        servers.discard(self._server_name)
        return servers

    async def servers_sharing_rooms(self, user_id: UserID) -> set[ServerName]:
        """The other servers with a member joined to a room ``user_id`` is joined to."""
        servers: set[ServerName] = set()
        for room_id, (membership, _) in list((await self._index.memberships(user_id)).items()):
            snapshot = await self._state.get_room(room_id) if membership == "join" else None
            if snapshot is not None:
                servers |= self.servers_in(snapshot)
        return servers

    async def shares_room_with_local_user(self, user_id: UserID) -> bool:
        """Whether a local user shares a room with (remote) ``user_id``."""
        for room_id, (membership, _) in list((await self._index.memberships(user_id)).items()):
            if membership != "join":
                continue
            snapshot = await self._state.get_room(room_id)
            if snapshot is not None and any(
                m == "join" and self.is_local(u) for u, m in snapshot.memberships.items()
            ):
                return True
        return False
