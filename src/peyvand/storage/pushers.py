"""Pushers (schema 027): where a user's devices want their push notifications sent, and
(schema 037) how far each has delivered to its push gateway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from peyvand.storage.database import Database, placeholders
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


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """A pusher with its delivery progress (schema 037)."""

    pusher: PusherRow
    # The position of the last event delivered (or given up on).
    last_stream_ordering: int
    # Since when (ms) its gateway has been failing; None: it is not.
    failing_since: int | None


class TooManyPushers(Exception):
    """The user has ``max_per_user`` pushers already (``set_pusher``)."""


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

    async def set_pusher(
        self, pusher: PusherRow, *, append: bool, max_per_user: int | None = None
    ) -> list[UserID]:
        """Create or replace the user's pusher for (app_id, pushkey); unless ``append``,
        other users' pushers with the same app_id and pushkey go (one transaction): the
        users they belonged to are returned. Raises TooManyPushers if that would give
        the user more than ``max_per_user``."""
        taken_from: list[UserID] = []
        async with self._db.transaction() as txn:
            if max_per_user is not None:
                others = await txn.fetchval(
                    "SELECT COUNT(*) FROM pushers WHERE user_id = $1"
                    " AND NOT (app_id = $2 AND pushkey = $3)",
                    pusher.user_id,
                    pusher.app_id,
                    pusher.pushkey,
                )
                if others >= max_per_user:
                    raise TooManyPushers
            if not append:
                rows = await txn.fetch(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3"
                    " RETURNING user_id",
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.user_id,
                )
                taken_from = [UserID(r["user_id"]) for r in rows]
            # A new pusher starts after the newest event: it gets what comes next.
            await txn.execute(
                f"INSERT INTO pushers ({_COLUMNS}, last_stream_ordering)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
                " (SELECT COALESCE(MAX(stream_ordering), 0) FROM events))"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
                " device_id = excluded.device_id, kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang,"
                " data = excluded.data,"
                # A new gateway (or data) has not failed yet.
                " failing_since = CASE WHEN pushers.data = excluded.data"
                " THEN pushers.failing_since ELSE NULL END",
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
        return taken_from

    async def delete_pusher(self, user_id: UserID, app_id: str, pushkey: str) -> None:
        await self._db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id,
            app_id,
            pushkey,
        )

    async def delete_if_unchanged(self, pusher: PusherRow) -> bool:
        """Delete the pusher if it still has ``pusher``'s data (URL included): a pusher
        its old gateway rejected, or that failed for a day, may have been replaced
        meanwhile, and the replacement stays. Whether it was deleted."""
        async with self._db.transaction() as txn:
            deleted = await txn.fetchval(
                "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3"
                " AND data = $4 RETURNING user_id",
                pusher.user_id,
                pusher.app_id,
                pusher.pushkey,
                orjson.dumps(pusher.data).decode(),
            )
        return deleted is not None

    async def delete_for_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        """The pushers set by these devices (logged out or deleted)."""
        await self._db.executemany(
            "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
            [(user_id, device_id) for device_id in device_ids],
        )

    async def get_deliveries(
        self, kind: str, user_ids: Sequence[UserID] | None = None
    ) -> list[DeliveryState]:
        """Every pusher of ``kind`` (of ``user_ids`` only, when given) with its progress."""
        sql = f"SELECT {_COLUMNS}, last_stream_ordering, failing_since FROM pushers WHERE kind = $1"
        args: list[Any] = [kind]
        if user_ids is not None:
            if not user_ids:
                return []
            sql += f" AND user_id IN ({placeholders(len(user_ids), 2)})"
            args.extend(user_ids)
        rows = await self._db.fetch(sql + " ORDER BY user_id, created_ts", *args)
        return [
            DeliveryState(_row(r), r["last_stream_ordering"] or 0, r["failing_since"]) for r in rows
        ]

    async def set_delivered(
        self, progress: Sequence[tuple[PusherRow, int, int | None]]
    ) -> list[bool]:
        """Record for each (pusher, position, success_ts) that the pusher is done up to the
        position (its gateway answered at ``success_ts``, or it was given up on: None)
        and no longer failing, in one transaction; each result is False if that pusher
        is gone."""
        found: list[bool] = []
        async with self._db.transaction() as txn:
            for pusher, stream_ordering, success_ts in progress:
                user_id = await txn.fetchval(
                    "UPDATE pushers SET last_stream_ordering = $4,"
                    " last_success_ts = COALESCE($5, last_success_ts), failing_since = NULL"
                    " WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 RETURNING user_id",
                    pusher.user_id,
                    pusher.app_id,
                    pusher.pushkey,
                    stream_ordering,
                    success_ts,
                )
                found.append(user_id is not None)
        return found

    async def set_failing_since(self, pusher: PusherRow, failing_since: int) -> None:
        """Record since when the pusher's gateway fails, unless the pusher was replaced
        (other data, URL included) meanwhile."""
        await self._db.execute(
            "UPDATE pushers SET failing_since = $4"
            " WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND data = $5",
            pusher.user_id,
            pusher.app_id,
            pusher.pushkey,
            failing_since,
            orjson.dumps(pusher.data).decode(),
        )
