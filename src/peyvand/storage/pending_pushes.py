"""The events that notify a user after a position, for a pusher catching up after a
restart (issue 17; the rows of ``storage.push_actions``, schema 029).

An event notifies user U in room R when its room row exists (the room outcome notifies)
and U's exception does not take it back (``notify = -1``), or U's exception adds it
(``notify = 1``). Room rows are read for the rooms U is joined to, after U's read mark
there (joining sets it, so nothing from before U joined is found), never U's own events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.storage.database import Database, placeholders
from peyvand.types import EventID, RoomID, UserID

# Rooms per statement.
_ROOMS_PER_QUERY: Final = 500


@dataclass(frozen=True, slots=True)
class PendingPush:
    room_id: RoomID
    stream_ordering: int
    event_id: EventID
    highlight: bool


class PendingPushStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def notifying_after(
        self,
        user_id: UserID,
        room_ids: Sequence[RoomID],
        after: int,
        up_to: int,
        limit: int,
    ) -> tuple[list[PendingPush], int]:
        """The events in ``(after, up_to]`` that notify ``user_id`` in ``room_ids``, in
        stream order, at most ``limit`` rows of each kind read; and the position up to
        which the answer is complete (``up_to`` unless a limit was reached)."""
        complete_to = up_to
        room_rows: list[tuple[RoomID, int, EventID, int]] = []
        for start in range(0, len(room_ids), _ROOMS_PER_QUERY):
            chunk = room_ids[start : start + _ROOMS_PER_QUERY]
            rows = await self._db.fetch(
                "SELECT n.room_id, n.stream_ordering, n.event_id, n.highlight"
                " FROM push_room_notifications AS n"
                " LEFT JOIN push_read_marks AS m ON m.user_id = $1 AND m.room_id = n.room_id"
                " WHERE n.stream_ordering > $2 AND n.stream_ordering <= $3"
                " AND n.sender <> $1 AND n.stream_ordering > COALESCE(m.stream_ordering, 0)"
                f" AND n.room_id IN ({placeholders(len(chunk), 5)})"
                " ORDER BY n.stream_ordering LIMIT $4",
                user_id,
                after,
                up_to,
                limit,
                *chunk,
            )
            if len(rows) == limit:
                complete_to = min(complete_to, rows[-1]["stream_ordering"])
            room_rows.extend(
                (r["room_id"], r["stream_ordering"], r["event_id"], r["highlight"]) for r in rows
            )
        exceptions = await self._db.fetch(
            "SELECT room_id, stream_ordering, event_id, notify, highlight"
            " FROM push_user_exceptions"
            " WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3"
            " ORDER BY stream_ordering LIMIT $4",
            user_id,
            after,
            up_to,
            limit,
        )
        if len(exceptions) == limit:
            complete_to = min(complete_to, exceptions[-1]["stream_ordering"])
        joined = set(room_ids)
        # (room, position) -> [event ID, notify, highlight]
        merged: dict[tuple[RoomID, int], tuple[EventID, int, int]] = {
            (room_id, pos): (event_id, 1, highlight)
            for room_id, pos, event_id, highlight in room_rows
        }
        for r in exceptions:
            if r["room_id"] not in joined:
                continue
            key = (r["room_id"], r["stream_ordering"])
            event_id, notify, highlight = merged.get(key, (r["event_id"], 0, 0))
            merged[key] = (event_id, notify + r["notify"], highlight + r["highlight"])
        pending = [
            PendingPush(room_id, pos, event_id, highlight > 0)
            for (room_id, pos), (event_id, notify, highlight) in merged.items()
            if notify > 0 and pos <= complete_to
        ]
        pending.sort(key=lambda p: p.stream_ordering)
        return pending, complete_to
