"""Pushers (schema 027): where a user's devices want their push notifications sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from peyvand.storage.database import Database
from peyvand.types import JsonDict, UserID

_COLUMNS = (
    "user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,"
    " profile_tag, lang, data, created_ts"
)


@dataclass(frozen=True, slots=True)
class PusherRow:
    user_id: UserID
    app_id: str
    pushkey: str
    device_id: str | None
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: JsonDict
    created_ts: int


def _row(r: Any) -> PusherRow:
    return PusherRow(
        UserID(r["user_id"]),
        r["app_id"],
        r["pushkey"],
        r["device_id"],
        r["kind"],
        r["app_display_name"],
        r["device_display_name"],
        r["profile_tag"],
        r["lang"],
        orjson.loads(r["data"]),
        r["created_ts"],
    )


class PusherStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_pushers(self, user_id: UserID) -> list[PusherRow]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id,"
            " pushkey",
            user_id,
        )
        return [_row(r) for r in rows]

    async def set_pusher(self, pusher: PusherRow, *, append: bool) -> None:
        """Create or replace the user's pusher for (app_id, pushkey); unless ``append``,
        other users' pushers with the same app_id and pushkey go (one transaction)."""
        async with self._db.transaction() as txn:
            if not append:
                await txn.execute(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.user_id,
                )
            await txn.execute(
                f"INSERT INTO pushers ({_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
                " device_id = excluded.device_id, kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang,"
                " data = excluded.data",
                pusher.user_id,
                pusher.app_id,
                pusher.pushkey,
                pusher.device_id,
                pusher.kind,
                pusher.app_display_name,
                pusher.device_display_name,
                pusher.profile_tag,
                pusher.lang,
                orjson.dumps(pusher.data).decode(),
                pusher.created_ts,
            )

    async def delete_pusher(self, user_id: UserID, app_id: str, pushkey: str) -> None:
        await self._db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id,
            app_id,
            pushkey,
        )

    async def delete_for_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """The pushers set by these devices (logged out or deleted)."""
        await self._db.executemany(
            "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
            [(user_id, device_id) for device_id in device_ids],
        )
