"""Send-to-device storage: per-device inboxes, applied transaction IDs and the stream's
position (Client-Server API, "Send-to-Device messaging").

The caller allocates positions and serialises writes, so inbox rows commit in position
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database, iter_chunks, placeholders
from peyvand.types import JsonDict, UserID

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One message for a device: ``message`` is the JSON text of the /sync event."""

    user_id: UserID
    device_id: str
    message: str


@dataclass(frozen=True, slots=True)
class InboxMessage:
    stream_id: int
    message: JsonDict


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_position(self) -> int:
        """The highest to-device position ever allocated."""
        return int(await self._db.fetchval("SELECT position FROM to_device_stream"))

    async def get_device_ids(self, user_ids: Sequence[UserID]) -> dict[UserID, set[str]]:
        """The current devices of each of ``user_ids`` (users without any are absent)."""
        found: dict[UserID, set[str]] = {}
        async for chunk in iter_chunks(user_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT user_id, device_id FROM devices"
                f" WHERE user_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            for row in rows:
                found.setdefault(UserID(row["user_id"]), set()).add(row["device_id"])
        return found

    async def add_messages(
        self,
        sender: UserID,
        sender_device: str,
        txn_id: str,
        position: int,
        rows: Sequence[InboxRow],
    ) -> bool:
        """Store ``rows`` at ``position`` unless the sender's device already applied
        ``txn_id``; False (and nothing written) for such a retry. One transaction."""
        async with self._db.transaction() as txn:
            applied = await txn.fetch(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id, stream_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id, txn_id) DO NOTHING"
                " RETURNING stream_id",
                sender,
                sender_device,
                txn_id,
                position,
            )
            if not applied:
                return False
            await txn.executemany(
                "INSERT INTO device_inbox (user_id, device_id, stream_id, message)"
                " VALUES ($1, $2, $3, $4)",
                [(row.user_id, row.device_id, position, row.message) for row in rows],
            )
            # Never backwards (a position is only ever moved on, by whichever process).
            await txn.execute(
                "UPDATE to_device_stream SET position = $1 WHERE position < $1", position
            )
        return True

    async def get_messages(
        self, user_id: UserID, device_id: str, after: int, until: int, limit: int
    ) -> list[InboxMessage]:
        """The device's messages in ``(after, until]``, oldest first, at most ``limit``."""
        rows = await self._db.fetch(
            "SELECT stream_id, message FROM device_inbox"
            " WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4"
            " ORDER BY stream_id LIMIT $5",
            user_id,
            device_id,
            after,
            until,
            limit,
        )
        return [InboxMessage(row["stream_id"], orjson.loads(row["message"])) for row in rows]

    async def delete_messages(self, user_id: UserID, device_id: str, up_to: int) -> None:
        """Drop the device's messages at positions up to ``up_to`` (acknowledged)."""
        await self._db.execute(
            "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
            user_id,
            device_id,
            up_to,
        )

    async def delete_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """Drop the inboxes and applied transaction IDs of deleted devices."""
        async with self._db.transaction() as txn:
            async for chunk in iter_chunks(device_ids, _CHUNK):
                in_list = placeholders(len(chunk), 2)
                for table in ("device_inbox", "to_device_txns"):
                    await txn.execute(
                        f"DELETE FROM {table} WHERE user_id = $1 AND device_id IN ({in_list})",
                        user_id,
                        *chunk,
                    )
