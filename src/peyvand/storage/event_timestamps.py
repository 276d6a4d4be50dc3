"""A room's timeline events by ``origin_server_ts`` (migration 036), for jump to date
(Client-Server API ``GET /rooms/{roomId}/timestamp_to_event``, Server-Server API ``GET
/timestamp_to_event/{roomId}``).

Only timeline events are here: outliers, rejected and soft-failed events live in
``event_outliers`` and are never an answer, as in Synapse.
"""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.types import EventID, RoomID


class EventTimestampStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def closest_event_ids(
        self, room_id: RoomID, timestamp: int, *, forwards: bool, limit: int
    ) -> list[EventID]:
        """Up to ``limit`` events of ``room_id`` from ``timestamp`` (inclusive) in the
        direction asked, the closest first: by ``origin_server_ts``, then ``depth``, then
        stream position (the order Synapse uses for ties)."""
        comparison, order = (">=", "ASC") if forwards else ("<=", "DESC")
        rows = await self._db.fetch(
            "SELECT event_id FROM events"
            f" WHERE room_id = $1 AND origin_server_ts {comparison} $2"
            f" ORDER BY origin_server_ts {order}, depth {order}, stream_ordering {order}"
            " LIMIT $3",
            room_id,
            timestamp,
            limit,
        )
        return [EventID(row["event_id"]) for row in rows]
