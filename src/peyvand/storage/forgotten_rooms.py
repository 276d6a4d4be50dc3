"""The rooms each user has forgotten (Client-Server API `/forget`)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from peyvand.storage.database import Database
from peyvand.types import RoomID, UserID


class ForgottenRoomStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Told of the user after each write (caches of forgotten rooms drop theirs).
        self.listeners: list[Callable[[UserID], None]] = []
        # Told when another process of a deployment wrote these users' forgotten rooms
        # (None: anyone's; ``changed_elsewhere``, issue 21).
        self.elsewhere_listeners: list[Callable[[Collection[str] | None], None]] = []

    def changed_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment wrote these users' forgotten rooms (None:
        anyone's): the caches here drop theirs."""
        for listener in self.elsewhere_listeners:
            listener(user_ids)

    async def set_forgotten(self, user_id: UserID, room_id: RoomID, forgotten: bool) -> None:
        if forgotten:
            await self._db.execute(
                "INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2)"
                " ON CONFLICT (user_id, room_id) DO NOTHING",
                user_id,
                room_id,
            )
        else:
            await self._db.execute(
                "DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2",
                user_id,
                room_id,
            )
        for listener in self.listeners:
            listener(user_id)

    async def get_forgotten(self, user_id: UserID) -> set[RoomID]:
        rows = await self._db.fetch(
            "SELECT room_id FROM forgotten_rooms WHERE user_id = $1", user_id
        )
        return {RoomID(r[0]) for r in rows}
