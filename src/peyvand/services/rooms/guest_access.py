"""Guest accounts in rooms (Client-Server API, "Guest Access", "Server behaviour"):
guests may only join rooms whose ``m.room.guest_access`` is ``can_join``, and when a
room's guest access changes away from that, its local guests leave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import StateKey
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.guests import GuestStore
from peyvand.storage.models import EventToPersist
from peyvand.types import RoomID, UserID, server_name_of

logger = logging.getLogger(__name__)

GUEST_ACCESS_KEY: StateKey = ("m.room.guest_access", "")

Leave = Callable[[RoomID, UserID], Awaitable[None]]


class GuestAccess:
    def __init__(self, server_name: str, guests: GuestStore, state: StateService) -> None:
        self._server_name = server_name
        self._guests = guests
        self._state = state
        self._leave: Leave | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def use_leave(self, leave: Leave) -> None:
        """How a guest leaves a room (the membership service)."""
        self._leave = leave

    async def _can_join(self, snapshot: RoomSnapshot) -> bool:
        events = await self._state.get_state_events(snapshot.state, [GUEST_ACCESS_KEY])
        event = events.get(GUEST_ACCESS_KEY)
        return event is not None and event.content.get("guest_access") == "can_join"

    async def check_join(self, user_id: UserID, snapshot: RoomSnapshot | None) -> None:
        """403 M_FORBIDDEN if ``user_id`` is a guest and the room (None: not on this
        server) does not let guests join."""
        if not await self._guests.guests_among([user_id]):
            return
        if snapshot is None or not await self._can_join(snapshot):
            raise MatrixError(Errcode.FORBIDDEN, "Guest access is not allowed in this room")

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Event dispatcher listener: a guest access change that stops guests joining
        makes the room's local guests leave, in the background."""
        rooms = {
            RoomID(p.pdu.room_id)
            for p in batch
            if p.pdu.type == GUEST_ACCESS_KEY[0] and p.pdu.state_key == GUEST_ACCESS_KEY[1]
        }
        for room_id in rooms:
            task = asyncio.create_task(self._remove_guests(room_id), name=f"guests:{room_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _remove_guests(self, room_id: RoomID) -> None:
        try:
            snapshot = await self._state.get_room(room_id)
            if snapshot is None or self._leave is None or await self._can_join(snapshot):
                return
            local = [u for u in snapshot.joined_members() if server_name_of(u) == self._server_name]
            for guest in sorted(await self._guests.guests_among(local)):
                await self._leave(room_id, guest)
        except Exception:
            logger.exception("Could not remove the guests of %s", room_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
