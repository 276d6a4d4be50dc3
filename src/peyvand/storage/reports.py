"""Content reports' rows (Client-Server API "Reporting content"), for the server's admins.

A report names an event (in a room), a room or a user. IDs are allocated in order, so the
newest report has the highest ID and the admin listing pages by ID.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Literal

from peyvand.storage.database import Database, Row
from peyvand.storage.errors import ConflictError

ReportKind = Literal["event", "room", "user"]

_COLUMNS = "report_id, kind, reporter, room_id, event_id, user_id, reason, score, received_ts"

# Concurrent inserts may pick the same next ID (PostgreSQL): try again this many times.
_ID_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Report:
    report_id: int
    kind: ReportKind
    reporter: str
    room_id: str | None
    event_id: str | None
    user_id: str | None
    reason: str
    score: int | None
    received_ts: int


class ReportStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        kind: ReportKind,
        reporter: str,
        reason: str,
        received_ts: int,
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        user_id: str | None = None,
        score: int | None = None,
    ) -> int:
        """Insert a report; its (new, highest) ID."""
        for attempt in range(_ID_ATTEMPTS):
            try:
                async with self._db.transaction() as txn:
                    report_id = await txn.fetchval(
                        f"INSERT INTO reports ({_COLUMNS})"
                        " SELECT COALESCE(MAX(report_id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8"
                        " FROM reports RETURNING report_id",
                        kind,
                        reporter,
                        room_id,
                        event_id,
                        user_id,
                        reason,
                        score,
                        received_ts,
                    )
                return int(report_id)
            except ConflictError:
                if attempt == _ID_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def get(self, report_id: int) -> Report | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM reports WHERE report_id = $1", report_id
        )
        return None if row is None else _report(row)

    async def list(self, *, before: int | None, limit: int) -> builtins.list[Report]:
        """Up to ``limit`` reports, newest first, with IDs below ``before`` (if given)."""
        if before is None:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM reports ORDER BY report_id DESC LIMIT $1", limit
            )
        else:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM reports WHERE report_id < $1"
                " ORDER BY report_id DESC LIMIT $2",
                before,
                limit,
            )
        return [_report(r) for r in rows]

    async def count(self) -> int:
        return int(await self._db.fetchval("SELECT COUNT(*) FROM reports"))

    async def user_known(self, user_id: str) -> bool:
        """True if ``user_id`` has an account here or a membership in a room we know."""
        row = await self._db.fetchrow(
            "SELECT 1 FROM users WHERE user_id = $1"
            " UNION ALL SELECT 1 FROM current_state"
            " WHERE type = 'm.room.member' AND state_key = $1 LIMIT 1",
            user_id,
        )
        return row is not None


def _report(row: Row) -> Report:
    return Report(
        report_id=row["report_id"],
        kind=row["kind"],
        reporter=row["reporter"],
        room_id=row["room_id"],
        event_id=row["event_id"],
        user_id=row["user_id"],
        reason=row["reason"],
        score=row["score"],
        received_ts=row["received_ts"],
    )
