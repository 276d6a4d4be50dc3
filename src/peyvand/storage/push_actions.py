"""Push actions storage: the notifying events each local user has not read yet.
Schema: 007_push_actions.sql.

A row is added per (user, event) whose push rules notify, and deleted once the user has
read up to it (Client-Server API, "Receiving notifications"). Read positions come from
the caller, so this module knows nothing of receipts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peyvand.storage.database import Connection, Database
from peyvand.types import EventID, RoomID, UserID

# Rooms per counting statement: two parameters each, well under both backends' limits.
_COUNT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class PushActionRow:
    user_id: UserID
    room_id: RoomID
    stream_ordering: int
    event_id: EventID
    highlight: bool
    # 'main', or the thread root's event ID.
    thread_id: str


@dataclass(frozen=True, slots=True)
class ReadUpTo:
    """Everything of ``user_id`` in ``room_id`` up to and including ``stream_ordering``
    has been read."""

    user_id: UserID
    room_id: RoomID
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class UnreadCount:
    notifications: int
    highlights: int


_INSERT = (
    "INSERT INTO event_push_actions"
    " (user_id, room_id, stream_ordering, event_id, highlight, thread_id)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (user_id, room_id, stream_ordering) DO NOTHING"
)
_DELETE_READ = (
    "DELETE FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND stream_ordering <= $3"
)


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self, txn: Connection, added: Sequence[PushActionRow], read: Sequence[ReadUpTo]
    ) -> None:
        """Add ``added`` then delete what ``read`` marks as read, inside ``txn`` (the events'
        own group commit), one statement each."""
        if added:
            await txn.executemany(
                _INSERT,
                [
                    (
                        row.user_id,
                        row.room_id,
                        row.stream_ordering,
                        row.event_id,
                        int(row.highlight),
                        row.thread_id,
                    )
                    for row in added
                ],
            )
        if read:
            await txn.executemany(
                _DELETE_READ, [(r.user_id, r.room_id, r.stream_ordering) for r in read]
            )

    async def delete_read(self, read: Sequence[ReadUpTo]) -> None:
        """Delete every row at or before each ``read`` position, in one transaction."""
        if read:
            async with self._db.transaction() as txn:
                await self.write(txn, (), read)

    async def get_unread_counts(
        self, user_id: UserID, read_positions: Mapping[RoomID, int]
    ) -> dict[RoomID, UnreadCount]:
        """room_id -> the user's rows after the room's read position (0: none read);
        rooms without any are absent. One statement per 1,000 rooms: the positions are
        joined in as a VALUES list (an OR per room would exceed SQLite's expression
        depth)."""
        rooms = list(read_positions.items())
        counts: dict[RoomID, UnreadCount] = {}
        for start in range(0, len(rooms), _COUNT_CHUNK):
            chunk = rooms[start : start + _COUNT_CHUNK]
            positions = ", ".join(
                f"(CAST(${2 * i + 2} AS TEXT), CAST(${2 * i + 3} AS BIGINT))"
                for i in range(len(chunk))
            )
            rows = await self._db.fetch(
                "SELECT a.room_id, COUNT(*) AS notifications, SUM(a.highlight) AS highlights"
                f" FROM event_push_actions AS a JOIN (VALUES {positions}) AS r"
                " ON a.room_id = r.column1 AND a.stream_ordering > r.column2"
                " WHERE a.user_id = $1 GROUP BY a.room_id",
                user_id,
                *(value for pair in chunk for value in pair),
            )
            for row in rows:
                counts[RoomID(row["room_id"])] = UnreadCount(
                    int(row["notifications"]), int(row["highlights"])
                )
        return counts
