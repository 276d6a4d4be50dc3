"""Reads for what application-service transactions carry beside room events
(services/appservice/extras.py): receipts, to-device messages and device list changes in
stream order across every room, user and device, and one-time and fallback key states of
many users at once.

Every range read is bounded by a row count; the caller continues from the last position
it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peyvand.storage.database import Database, Row, iter_chunks, placeholders
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import EventID, RoomID, UserID

_CHUNK = 500

# user -> device -> algorithm -> unclaimed one-time keys
OneTimeKeyCounts = dict[UserID, dict[str, dict[str, int]]]
# user -> device -> algorithms of fallback keys not handed out yet
UnusedFallbackKeys = dict[UserID, dict[str, list[str]]]


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One stored to-device message: ``message`` is the JSON text of the /sync event."""

    stream_id: int
    user_id: UserID
    device_id: str
    message: str


class AppServiceExtrasStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def receipts_between(
        self, after: int, until: int, limit: int
    ) -> list[tuple[int, ReceiptRow]]:
        """Receipts (any room, type and user) last moved in ``(after, until]``, oldest
        first, at most ``limit``, each with its stream position."""
        rows = await self._db.fetch(
            "SELECT stream_id, room_id, receipt_type, user_id, thread_id, event_id, ts"
            " FROM receipts WHERE stream_id > $1 AND stream_id <= $2"
            " ORDER BY stream_id LIMIT $3",
            after,
            until,
            limit,
        )
        return [
            (
                int(r["stream_id"]),
                ReceiptRow(
                    room_id=RoomID(r["room_id"]),
                    receipt_type=r["receipt_type"],
                    user_id=UserID(r["user_id"]),
                    thread_id=r["thread_id"],
                    event_id=EventID(r["event_id"]),
                    ts=int(r["ts"]),
                ),
            )
            for r in rows
        ]

    async def inbox_between(self, after: int, until: int, limit: int) -> list[InboxEntry]:
        """Stored to-device messages (any device) at positions in ``(after, until]``,
        oldest first, at most ``limit``. One send is one position for all its devices,
        so a full page may end inside a position: see ``inbox_at``."""
        rows = await self._db.fetch(
            "SELECT stream_id, user_id, device_id, message FROM device_inbox"
            " WHERE stream_id > $1 AND stream_id <= $2"
            " ORDER BY stream_id, user_id, device_id LIMIT $3",
            after,
            until,
            limit,
        )
        return [_inbox_entry(row) for row in rows]

    async def inbox_at(self, position: int) -> list[InboxEntry]:
        """Every stored to-device message of one send (bounded by the devices one
        request may address)."""
        rows = await self._db.fetch(
            "SELECT stream_id, user_id, device_id, message FROM device_inbox"
            " WHERE stream_id = $1 ORDER BY user_id, device_id",
            position,
        )
        return [_inbox_entry(row) for row in rows]

    async def inbox_recipients_between(self, after: int, until: int) -> list[UserID]:
        """The users with stored to-device messages at positions in ``(after, until]``."""
        rows = await self._db.fetch(
            "SELECT DISTINCT user_id FROM device_inbox WHERE stream_id > $1 AND stream_id <= $2",
            after,
            until,
        )
        return [UserID(row["user_id"]) for row in rows]

    async def delete_unattended_inbox(
        self, user_ids: Sequence[UserID], after: int, until: int
    ) -> None:
        """Drop the to-device messages at positions in ``(after, until]`` of the devices
        of ``user_ids`` that have no access token (no one syncs as them: only the
        appservices acting for their users read them)."""
        async with self._db.transaction() as txn:
            async for chunk in iter_chunks(user_ids, _CHUNK):
                await txn.execute(
                    "DELETE FROM device_inbox WHERE stream_id > $1 AND stream_id <= $2"
                    f" AND user_id IN ({placeholders(len(chunk), 3)})"
                    " AND NOT EXISTS (SELECT 1 FROM access_tokens t"
                    " WHERE t.user_id = device_inbox.user_id"
                    " AND t.device_id = device_inbox.device_id)",
                    after,
                    until,
                    *chunk,
                )

    async def acknowledged_extras_positions(self, appservice_ids: Sequence[str]) -> dict[str, str]:
        """The extras position each of ``appservice_ids`` last acknowledged (those that
        acknowledged one)."""
        found: dict[str, str] = {}
        async for chunk in iter_chunks(appservice_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT appservice_id, extras_position FROM appservice_positions"
                f" WHERE appservice_id IN ({placeholders(len(chunk))})"
                " AND extras_position IS NOT NULL",
                *chunk,
            )
            found.update((row["appservice_id"], row["extras_position"]) for row in rows)
        return found

    async def device_list_changes_between(
        self, after: int, until: int, limit: int
    ) -> list[tuple[int, UserID]]:
        """(position, user) of the device list changes in ``(after, until]``, oldest
        first, at most ``limit``."""
        rows = await self._db.fetch(
            "SELECT stream_id, user_id FROM device_lists_stream"
            " WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id LIMIT $3",
            after,
            until,
            limit,
        )
        return [(int(row["stream_id"]), UserID(row["user_id"])) for row in rows]

    async def one_time_key_counts(self, user_ids: Sequence[UserID]) -> OneTimeKeyCounts:
        """Unclaimed one-time keys per algorithm of every device of ``user_ids``; a
        device without any has an empty mapping."""
        counts: OneTimeKeyCounts = {}
        async for chunk in iter_chunks(user_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT d.user_id, d.device_id, k.algorithm, COUNT(k.key_id) AS n"
                " FROM devices d LEFT JOIN e2e_one_time_keys k"
                " ON k.user_id = d.user_id AND k.device_id = d.device_id"
                f" WHERE d.user_id IN ({placeholders(len(chunk))})"
                " GROUP BY d.user_id, d.device_id, k.algorithm",
                *chunk,
            )
            for row in rows:
                device = counts.setdefault(UserID(row["user_id"]), {}).setdefault(
                    row["device_id"], {}
                )
                if row["algorithm"] is not None:
                    device[row["algorithm"]] = int(row["n"])
        return counts

    async def unused_fallback_key_types(self, user_ids: Sequence[UserID]) -> UnusedFallbackKeys:
        """The algorithms of the fallback keys not handed out yet of every device of
        ``user_ids``; a device without any has an empty list."""
        types: UnusedFallbackKeys = {}
        async for chunk in iter_chunks(user_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT d.user_id, d.device_id, f.algorithm"
                " FROM devices d LEFT JOIN e2e_fallback_keys f"
                " ON f.user_id = d.user_id AND f.device_id = d.device_id AND NOT f.used"
                f" WHERE d.user_id IN ({placeholders(len(chunk))})"
                " ORDER BY d.user_id, d.device_id, f.algorithm",
                *chunk,
            )
            for row in rows:
                device = types.setdefault(UserID(row["user_id"]), {}).setdefault(
                    row["device_id"], []
                )
                if row["algorithm"] is not None:
                    device.append(row["algorithm"])
        return types


def _inbox_entry(row: Row) -> InboxEntry:
    return InboxEntry(
        int(row["stream_id"]), UserID(row["user_id"]), row["device_id"], row["message"]
    )
