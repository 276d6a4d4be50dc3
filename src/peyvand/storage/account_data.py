"""Account data storage: one JSON object per (user, room, type); room '' is global.

The caller assigns ``stream_id`` and serialises writes, so the account data stream has
no gaps or reordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database
from peyvand.types import JsonDict, RoomID, UserID

# The room_id column of global account data.
GLOBAL = ""


@dataclass(frozen=True, slots=True)
class AccountDataRow:
    # '' for global account data.
    room_id: str
    type: str
    content: JsonDict


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_max_stream_id(self) -> int:
        value = await self._db.fetchval("SELECT MAX(stream_id) FROM account_data")
        return int(value or 0)

    async def get(self, user_id: UserID, room_id: RoomID | str, data_type: str) -> JsonDict | None:
        raw = await self._db.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
            user_id,
            room_id,
            data_type,
        )
        if raw is None:
            return None
        content: JsonDict = orjson.loads(raw)
        return content

    async def put(
        self,
        user_id: UserID,
        room_id: RoomID | str,
        data_type: str,
        content: JsonDict,
        stream_id: int,
    ) -> None:
        await self._db.execute(
            "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) DO UPDATE SET"
            " content = excluded.content, stream_id = excluded.stream_id",
            user_id,
            room_id,
            data_type,
            orjson.dumps(content).decode(),
            stream_id,
        )

    async def get_changed(
        self, user_id: UserID, since: int, until: int, *, rooms: bool
    ) -> list[AccountDataRow]:
        """The user's room (``rooms``) or global account data changed in ``(since, until]``."""
        room_clause = "room_id <> $4" if rooms else "room_id = $4"
        rows = await self._db.fetch(
            "SELECT room_id, type, content FROM account_data"
            " WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3"
            f" AND {room_clause} ORDER BY stream_id",
            user_id,
            since,
            until,
            GLOBAL,
        )
        return [AccountDataRow(r["room_id"], r["type"], orjson.loads(r["content"])) for r in rows]
