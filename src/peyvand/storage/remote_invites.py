"""Invites of local users to rooms this server is not in yet (see migration 018)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database, Row
from peyvand.types import EventID, JsonDict, RoomID, UserID


@dataclass(frozen=True, slots=True)
class RemoteInvite:
    room_id: RoomID
    user_id: UserID
    event_id: EventID
    room_version: str
    sender: UserID
    membership: str
    stream_ordering: int
    pdu: JsonDict
    invite_state: list[JsonDict]


_COLUMNS = (
    "room_id, user_id, event_id, room_version, sender, membership, stream_ordering, pdu,"
    " invite_state"
)


def _invite(row: Row) -> RemoteInvite:
    return RemoteInvite(
        RoomID(row["room_id"]),
        UserID(row["user_id"]),
        EventID(row["event_id"]),
        row["room_version"],
        UserID(row["sender"]),
        row["membership"],
        row["stream_ordering"],
        orjson.loads(row["pdu"]),
        orjson.loads(row["invite_state"]),
    )


class RemoteInviteStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, invite: RemoteInvite) -> None:
        """Store (or replace: a new invite to the same room) an invite."""
        async with self._db.transaction() as txn:
            await txn.execute(
                "DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2",
                invite.room_id,
                invite.user_id,
            )
            await txn.execute(
                f"INSERT INTO remote_invites ({_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                invite.room_id,
                invite.user_id,
                invite.event_id,
                invite.room_version,
                invite.sender,
                invite.membership,
                invite.stream_ordering,
                orjson.dumps(invite.pdu).decode(),
                orjson.dumps(invite.invite_state).decode(),
            )

    async def get(self, room_id: RoomID, user_id: UserID) -> RemoteInvite | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM remote_invites WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )
        return None if row is None else _invite(row)

    async def memberships_of(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        """room_id -> (membership, stream position) for the user's remote invites."""
        rows = await self._db.fetch(
            "SELECT room_id, membership, stream_ordering FROM remote_invites WHERE user_id = $1",
            user_id,
        )
        return {RoomID(r[0]): (r[1], r[2]) for r in rows}

    async def set_membership(
        self, room_id: RoomID, user_id: UserID, membership: str, stream_ordering: int
    ) -> None:
        await self._db.execute(
            "UPDATE remote_invites SET membership = $3, stream_ordering = $4"
            " WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
            membership,
            stream_ordering,
        )

    async def delete(self, room_id: RoomID, user_id: UserID) -> None:
        await self._db.execute(
            "DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
