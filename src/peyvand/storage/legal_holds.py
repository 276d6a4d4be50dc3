"""Legal holds' rows (docs/compliance.md): placed, released, never deleted.

A hold names a user (the events they sent) or a room (its events), optionally limited to
events whose ``origin_server_ts`` lies in ``[since_ts, until_ts]``. Releasing one sets its
``released_*`` columns, once; the schema refuses every other change and every delete, so
the table is the history of every hold ever placed. What a hold covers, and who may place
one, is ``peyvand.compliance.legal_hold``'s business.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from peyvand.storage.database import Database, Row, placeholders

HoldKind = Literal["user", "room"]

# Up to this many targets the active holds are looked up by target (one IN-list); for a
# larger batch every active hold is read instead (still one statement: there are few).
_IN_LIST_MAX = 500

_COLUMNS = (
    "hold_id, kind, target, case_id, reason, since_ts, until_ts, created_by, created_ts,"
    " released_by, released_ts, release_reason"
)


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold. Timestamps in milliseconds; ``since_ts`` / ``until_ts`` (inclusive, either
    may be None for unbounded) limit it to events sent in that range."""

    hold_id: str
    kind: HoldKind
    target: str
    case_id: str
    reason: str
    since_ts: int | None
    until_ts: int | None
    created_by: str
    created_ts: int
    released_by: str | None = None
    released_ts: int | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_ts is None


class LegalHoldStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, hold: Hold) -> None:
        """Insert a new (active) hold; ``ConflictError`` if its ID is taken."""
        await self._db.execute(
            f"INSERT INTO legal_holds ({_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL)",
            hold.hold_id,
            hold.kind,
            hold.target,
            hold.case_id,
            hold.reason,
            hold.since_ts,
            hold.until_ts,
            hold.created_by,
            hold.created_ts,
        )

    async def release(
        self, hold_id: str, released_by: str, released_ts: int, release_reason: str
    ) -> Hold | None:
        """Mark an active hold released and return it; None if there is no such hold or it
        was already released (of two concurrent releases, one wins)."""
        async with self._db.transaction() as txn:  # a write: on the writer connection
            row = await txn.fetchrow(
                "UPDATE legal_holds SET released_by = $2, released_ts = $3, release_reason = $4"
                f" WHERE hold_id = $1 AND released_ts IS NULL RETURNING {_COLUMNS}",
                hold_id,
                released_by,
                released_ts,
                release_reason,
            )
        return None if row is None else _hold(row)

    async def get(self, hold_id: str) -> Hold | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM legal_holds WHERE hold_id = $1", hold_id
        )
        return None if row is None else _hold(row)

    async def list(self, *, active_only: bool) -> builtins.list[Hold]:
        """The active holds (or all, released ones included), oldest first."""
        where = " WHERE released_ts IS NULL" if active_only else ""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM legal_holds{where} ORDER BY created_ts, hold_id"
        )
        return [_hold(r) for r in rows]

    async def active_for(
        self, room_ids: Collection[str], sender_ids: Collection[str]
    ) -> builtins.list[Hold]:
        """The active room holds on any of ``room_ids`` and user holds on any of
        ``sender_ids``, in one statement."""
        rooms, senders = sorted(set(room_ids)), sorted(set(sender_ids))
        if not rooms and not senders:
            return []
        if len(rooms) + len(senders) > _IN_LIST_MAX:
            wanted = {("room", r) for r in rooms} | {("user", s) for s in senders}
            every = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM legal_holds WHERE released_ts IS NULL"
            )
            return [h for h in map(_hold, every) if (h.kind, h.target) in wanted]
        clauses = []
        if rooms:
            clauses.append(f"(kind = 'room' AND target IN ({placeholders(len(rooms))}))")
        if senders:
            start = len(rooms) + 1
            clauses.append(f"(kind = 'user' AND target IN ({placeholders(len(senders), start)}))")
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM legal_holds"
            f" WHERE released_ts IS NULL AND ({' OR '.join(clauses)})",
            *rooms,
            *senders,
        )
        return [_hold(r) for r in rows]


def _hold(row: Row) -> Hold:
    return Hold(
        hold_id=row["hold_id"],
        kind=row["kind"],
        target=row["target"],
        case_id=row["case_id"],
        reason=row["reason"],
        since_ts=row["since_ts"],
        until_ts=row["until_ts"],
        created_by=row["created_by"],
        created_ts=row["created_ts"],
        released_by=row["released_by"],
        released_ts=row["released_ts"],
        release_reason=row["release_reason"],
    )
