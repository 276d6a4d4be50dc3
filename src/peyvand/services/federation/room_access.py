"""Which rooms another server may use through this one: the room's server ACL
(Server-Server API, "Server Access Control Lists (ACLs)"), the moderation policy lists'
server bans, and whether the server takes part in the room."""

from __future__ import annotations

from peyvand.errors import Errcode, MatrixError
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.federation.received_events import FederationEventHandler
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import RoomID, ServerName, server_name_of


class RoomAccess:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        handler: FederationEventHandler,
        policy_lists: PolicyListService,
        *,
        partial_state: PartialStateRooms | None = None,
    ) -> None:
        """Servers the moderation ``policy_lists`` ban are refused. While a room's state
        is partial here (``partial_state``, MSC3706) this server is no resident of it and
        does not serve its state, as Synapse."""
        self._server_name = server_name
        self._state = state
        self._handler = handler
        self._policy_lists = policy_lists
        self._partial_state = partial_state

    async def room(
        self, room_id: RoomID, origin: ServerName | None = None, *, resident: bool = False
    ) -> RoomSnapshot:
        """The room; with ``origin``, 403 unless the room's server ACL allows it; with
        ``resident``, 404 unless this server still takes part in it (it can then vouch for
        its current state: make_join, send_join and the like)."""
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or (resident and not snapshot.takes_part(self._server_name)):
            raise MatrixError(Errcode.NOT_FOUND, "Unknown room")
        if resident and self._is_partial(room_id):
            raise MatrixError(Errcode.NOT_FOUND, "This server is not fully joined to the room")
        if origin is not None and not await self._handler.origin_allowed(origin, snapshot):
            raise MatrixError(Errcode.FORBIDDEN, "Server is denied by the room's ACL")
        if origin is not None:
            self._policy_lists.check_server(origin, room_id)
        return snapshot

    async def require_server_in_room(self, origin: ServerName, snapshot: RoomSnapshot) -> None:
        """``origin`` takes part in the room (has a joined member), or the room is
        world-readable: only then may it read the room's events."""
        if any(
            server_name_of(u) == origin and m == "join" for u, m in snapshot.memberships.items()
        ):
            return
        if self._partial_state is not None and origin in self._partial_state.servers(
            snapshot.room_id
        ):
            return
        key = ("m.room.history_visibility", "")
        if key in snapshot.state:
            events = await self._state.get_pdus([snapshot.state[key]])
            event = events.get(snapshot.state[key])
            if event is not None and event.content.get("history_visibility") == "world_readable":
                return
        raise MatrixError(Errcode.FORBIDDEN, "Your server is not in this room")

    def require_full_state(self, room_id: RoomID) -> None:
        """403 while the room's state is partial here: its state cannot be served."""
        if self._is_partial(room_id):
            raise MatrixError(
                Errcode.FORBIDDEN, "The room's state is partial here: ask another server"
            )

    def _is_partial(self, room_id: RoomID) -> bool:
        return self._partial_state is not None and self._partial_state.is_partial(room_id)
