"""Guest accounts in rooms (Client-Server API, "Guest Access", "Server behaviour"):
guests may only join rooms whose ``m.room.guest_access`` is ``can_join``, and when a
room's guest access changes away from that, its local guests leave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from peyvand.background import BackgroundTask
from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import StateKey
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.guests import GuestStore
from peyvand.storage.models import EventToPersist
from peyvand.types import RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

GUEST_ACCESS_KEY: StateKey = ("m.room.guest_access", "")

Leave = Callable[[RoomID, UserID], Awaitable[None]]


class GuestAccess:
    """Whether guests may join a room."""

    def __init__(self, guests: GuestStore, state: StateService) -> None:
        self._guests = guests
        self._state = state

    async def can_join(self, snapshot: RoomSnapshot) -> bool:
        """Whether the room's ``m.room.guest_access`` is ``can_join``."""
        events = await self._state.get_state_events(snapshot.state, [GUEST_ACCESS_KEY])
        event = events.get(GUEST_ACCESS_KEY)
        return event is not None and event.content.get("guest_access") == "can_join"

    async def check_join(self, user_id: UserID, snapshot: RoomSnapshot | None) -> None:
        """403 M_FORBIDDEN if ``user_id`` is a guest and the room (None: not on this
        server) does not let guests join."""
        if not await self._guests.guests_among([user_id]):
            return
        if snapshot is None or not await self.can_join(snapshot):
            raise MatrixError(Errcode.FORBIDDEN, "Guest access is not allowed in this room")


class GuestRemoval:
    """When a room's guest access changes away from ``can_join``, its local guests leave
    (through ``leave``, the membership service), in the background."""

    def __init__(
        self,
        server_name: ServerName,
        guests: GuestStore,
        state: StateService,
        access: GuestAccess,
        leave: Leave,
    ) -> None:
        self._server_name = server_name
        self._guests = guests
        self._state = state
        self._access = access
        self._leave = leave
        self._rooms: asyncio.Queue[RoomID] = asyncio.Queue()
        self._task = BackgroundTask("guest-removal", self._run)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Event dispatcher listener: queue the rooms whose guest access changed."""
        rooms = {
            RoomID(p.pdu.room_id)
            for p in batch
            if p.pdu.type == GUEST_ACCESS_KEY[0] and p.pdu.state_key == GUEST_ACCESS_KEY[1]
        }
        for room_id in sorted(rooms):
            self._rooms.put_nowait(room_id)

    async def _run(self) -> None:
        while True:
            await self._remove_guests(await self._rooms.get())

    async def _remove_guests(self, room_id: RoomID) -> None:
        try:
            snapshot = await self._state.get_room(room_id)
            if snapshot is None or await self._access.can_join(snapshot):
                return
            local = [u for u in snapshot.joined_members() if server_name_of(u) == self._server_name]
            for guest in sorted(await self._guests.guests_among(local)):
                await self._leave(room_id, guest)
        except Exception:
            logger.exception("Could not remove the guests of %s", room_id)
