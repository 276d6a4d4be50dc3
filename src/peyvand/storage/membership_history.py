"""A user's past memberships of a room, from its timeline (history visibility's
"joined the room at any point after the event was sent")."""

from __future__ import annotations

import orjson

from peyvand.storage.database import Database
from peyvand.types import RoomID, UserID

# The user's newest member events read when looking for their latest join: a join further
# back than this many membership changes is not found (its history then stays hidden).
_SCANNED = 50


class MembershipHistoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest_join(self, room_id: RoomID, user_id: UserID) -> int | None:
        """The stream position of the user's newest ``join`` member event in the room
        (a profile change counts: the user was joined then); None if none is found."""
        rows = await self._db.fetch(
            "SELECT stream_ordering, pdu FROM events"
            " WHERE type = 'm.room.member' AND state_key = $1 AND room_id = $2"
            " ORDER BY stream_ordering DESC LIMIT $3",
            user_id,
            room_id,
            _SCANNED,
        )
        for row in rows:
            content = orjson.loads(row[1]).get("content")
            if isinstance(content, dict) and content.get("membership") == "join":
                return int(row[0])
        return None
