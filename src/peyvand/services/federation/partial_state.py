"""Rooms whose state is partial here (MSC3706 / MSC3902, "faster joins"; Server-Server
API, send_join v2 with ``omit_members``), in memory: the servers in each at the join and
the requests waiting for its full state.

A room joined from an answer with ``members_omitted`` is readable and writable at once;
what needs every member (``/members``, ``/joined_members``) waits, bounded, until the
background resync (``partial_state_resync``) has the full state.
"""

from __future__ import annotations

import asyncio

from peyvand.errors import Errcode, MatrixError
from peyvand.storage.partial_state import PartialStateRoom
from peyvand.types import RoomID, ServerName

FULL_STATE_WAIT_SECONDS = 60.0


class PartialStateRooms:
    def __init__(self, *, wait_seconds: float = FULL_STATE_WAIT_SECONDS) -> None:
        """A request waits at most ``wait_seconds`` for a room's full state."""
        self._rooms: dict[RoomID, PartialStateRoom] = {}
        self._done: dict[RoomID, asyncio.Event] = {}
        self._wait_seconds = wait_seconds

    def mark(self, room: PartialStateRoom) -> None:
        self._rooms[room.room_id] = room
        self._done.setdefault(room.room_id, asyncio.Event())

    def completed(self, room_id: RoomID) -> None:
        """The room has its full state: wake whoever waits for it."""
        self._rooms.pop(room_id, None)
        done = self._done.pop(room_id, None)
        if done is not None:
            done.set()

    def is_partial(self, room_id: RoomID) -> bool:
        return room_id in self._rooms

    def room_ids(self) -> list[RoomID]:
        return list(self._rooms)

    def get(self, room_id: RoomID) -> PartialStateRoom | None:
        return self._rooms.get(room_id)

    def servers(self, room_id: RoomID) -> frozenset[ServerName]:
        """The answer's ``servers_in_room`` while the room is partial (none after: its
        member events then say which servers are in it)."""
        room = self._rooms.get(room_id)
        return frozenset(room.servers) if room is not None else frozenset()

    async def wait_for_full_state(self, room_id: RoomID) -> None:
        """Return once the room's state is full (at once if it is); 503 ``M_UNKNOWN``
        after the bounded wait."""
        done = self._done.get(room_id)
        if done is None:
            return
        try:
            async with asyncio.timeout(self._wait_seconds):
                await done.wait()
        except TimeoutError:
            raise MatrixError(
                Errcode.UNKNOWN,
                "The room's membership is still being fetched from other servers",
                status=503,
            ) from None
