"""Device list storage: the stream of users whose devices or keys changed, and the
membership changes in rooms that decide who must hear of them (End-to-End Encryption,
"Tracking the device list for a user").

Positions are taken from the stored ones (``add_change``), so the processes of a
deployment that record changes never take the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson

from peyvand.storage.database import Database, iter_chunks, placeholders
from peyvand.storage.errors import ConflictError
from peyvand.types import RoomID, UserID

_CHUNK = 500
# Positions tried by ``add_change`` against other processes' simultaneous changes.
_ADD_TRIES = 20

# (room, member, membership, the membership it replaced in the room's state) of one
# m.room.member event.
MembershipChange = tuple[RoomID, UserID, str, str | None]
# The replaced membership when its event is held nowhere (never a membership).
REPLACED_UNKNOWN: Final = ""


class DeviceListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_max_position(self) -> int:
        value = await self._db.fetchval("SELECT MAX(stream_id) FROM device_lists_stream")
        return int(value or 0)

    async def add_change(self, user_id: UserID, above: int) -> int:
        """Record a change of ``user_id``'s devices at the next position, above ``above``
        and every stored one; that position. Several processes of a deployment record
        changes (a client reader's fetch of another server's user's devices, issue 21):
        a position taken by another meanwhile is a conflict, and the next is tried, so
        positions commit in order."""
        for _ in range(_ADD_TRIES):
            position = max(above, await self.get_max_position()) + 1
            try:
                await self._db.execute(
                    "INSERT INTO device_lists_stream (stream_id, user_id) VALUES ($1, $2)",
                    position,
                    user_id,
                )
            except ConflictError:
                continue
            return position
        raise ConflictError(f"no device list position after {_ADD_TRIES} tries")

    async def get_changed_users(self, after: int, until: int) -> set[UserID]:
        """Every user with a change in ``(after, until]``."""
        rows = await self._db.fetch(
            "SELECT DISTINCT user_id FROM device_lists_stream"
            " WHERE stream_id > $1 AND stream_id <= $2",
            after,
            until,
        )
        return {UserID(row["user_id"]) for row in rows}

    async def get_membership_changes(
        self, room_ids: Sequence[RoomID], after: int, until: int
    ) -> list[MembershipChange]:
        """The m.room.member events of ``room_ids`` in ``(after, until]``, oldest first
        within each room (range reads on the events' (room, stream) index), each with the
        membership of the member event it replaced in the room's state: None for none,
        ``REPLACED_UNKNOWN`` when that event is held nowhere (not expected: a purge keeps
        state events as outliers). The replaced event is a timeline event or an outlier
        (the state a join over federation started from)."""
        found: list[MembershipChange] = []
        async for chunk in iter_chunks(room_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT e.room_id, e.state_key, e.pdu, e.replaces_state,"
                " COALESCE(p.pdu, o.pdu) AS replaced FROM events e"
                " LEFT JOIN events p ON p.event_id = e.replaces_state"
                " LEFT JOIN event_outliers o ON o.event_id = e.replaces_state"
                f" WHERE e.room_id IN ({placeholders(len(chunk), 3)})"
                " AND e.stream_ordering > $1 AND e.stream_ordering <= $2"
                " AND e.type = 'm.room.member' ORDER BY e.stream_ordering",
                after,
                until,
                *chunk,
            )
            for row in rows:
                membership = _membership(row["pdu"])
                if membership is not None:
                    found.append(
                        (
                            RoomID(row["room_id"]),
                            UserID(row["state_key"]),
                            membership,
                            _replaced(row["replaces_state"], row["replaced"]),
                        )
                    )
        return found


def _replaced(event_id: str | None, pdu: str | bytes | None) -> str | None:
    if event_id is None:
        return None
    if pdu is None:
        return REPLACED_UNKNOWN
    return _membership(pdu) or REPLACED_UNKNOWN


def _membership(pdu: str | bytes) -> str | None:
    membership = orjson.loads(pdu).get("content", {}).get("membership")
    return membership if isinstance(membership, str) else None
