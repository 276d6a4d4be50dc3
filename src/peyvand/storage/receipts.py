"""Receipts storage: the latest receipt per (room, receipt type, user, thread).

A receipt only ever moves forward: an upsert naming an event that is not after the stored
one (by the events' stream orderings) changes nothing, as in Synapse. The caller assigns
``stream_id`` and serialises writes, so the receipts stream has no gaps or reordering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peyvand.storage.database import Database, iter_chunks, placeholders
from peyvand.types import EventID, RoomID, UserID

# Room IDs per statement when reading many rooms (well under both backends' limits).
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    room_id: RoomID
    receipt_type: str
    user_id: UserID
    # '' for an unthreaded receipt.
    thread_id: str
    event_id: EventID
    ts: int


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_max_stream_id(self) -> int:
        value = await self._db.fetchval("SELECT MAX(stream_id) FROM receipts")
        return int(value or 0)

    async def upsert_receipt(
        self,
        row: ReceiptRow,
        event_stream_ordering: int,
        stream_id: int,
    ) -> bool:
        """Store ``row`` unless the stored receipt is for the same or a later event.

        Returns whether anything was written.
        """
        async with self._db.transaction() as txn:
            written = await txn.fetchrow(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
                " event_stream_ordering, ts, stream_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id,"
                " event_stream_ordering = excluded.event_stream_ordering,"
                " ts = excluded.ts, stream_id = excluded.stream_id"
                " WHERE receipts.event_stream_ordering < excluded.event_stream_ordering"
                " RETURNING stream_id",
                row.room_id,
                row.receipt_type,
                row.user_id,
                row.thread_id,
                row.event_id,
                event_stream_ordering,
                row.ts,
                stream_id,
            )
        return written is not None

    async def get_receipts_for_rooms(
        self,
        viewer: UserID,
        room_ids: Sequence[RoomID],
        since: int,
        until: int,
    ) -> list[ReceiptRow]:
        """Receipts in ``room_ids`` changed in ``(since, until]`` that ``viewer`` may see:
        everyone's m.read, and only the viewer's own m.read.private."""
        rows = []
        async for chunk in iter_chunks(room_ids, _CHUNK):
            rows.extend(
                await self._db.fetch(
                    "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts"
                    " FROM receipts WHERE stream_id > $1 AND stream_id <= $2"
                    " AND (receipt_type = 'm.read' OR user_id = $3)"
                    f" AND room_id IN ({placeholders(len(chunk), 4)})"
                    " ORDER BY stream_id",
                    since,
                    until,
                    viewer,
                    *chunk,
                )
            )
        return [
            ReceiptRow(
                room_id=RoomID(r["room_id"]),
                receipt_type=r["receipt_type"],
                user_id=UserID(r["user_id"]),
                thread_id=r["thread_id"],
                event_id=EventID(r["event_id"]),
                ts=r["ts"],
            )
            for r in rows
        ]
