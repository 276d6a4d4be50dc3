"""Invites of local users to rooms this server is not in yet (see migration 018), some of
them held as message requests, and each user's policy for such invites (migration 022)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database, Row
from peyvand.storage.stream_positions import record_purged_events
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
    # A message request: kept out of the user's rooms until accepted (docs/compliance.md).
    held: bool = False


_COLUMNS = (
    "room_id, user_id, event_id, room_version, sender, membership, stream_ordering, pdu,"
    " invite_state, held"
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
        bool(row["held"]),
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
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                invite.room_id,
                invite.user_id,
                invite.event_id,
                invite.room_version,
                invite.sender,
                invite.membership,
                invite.stream_ordering,
                orjson.dumps(invite.pdu).decode(),
                orjson.dumps(invite.invite_state).decode(),
                invite.held,
            )

    async def get(self, room_id: RoomID, user_id: UserID) -> RemoteInvite | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM remote_invites WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )
        return None if row is None else _invite(row)

    async def memberships_of(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        """room_id -> (membership, stream position) for the user's remote invites (held
        ones left out: they are not among the user's rooms)."""
        rows = await self._db.fetch(
            "SELECT room_id, membership, stream_ordering FROM remote_invites"
            " WHERE user_id = $1 AND NOT held",
            user_id,
        )
        return {RoomID(r[0]): (r[1], r[2]) for r in rows}

    async def changed_in_range(self, after: int, up_to: int) -> list[RemoteInvite]:
        """The invites (not held) whose membership moved to a position in ``(after,
        up_to]``, in stream order (a process following another's writes)."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM remote_invites WHERE stream_ordering > $1"
            " AND stream_ordering <= $2 AND NOT held ORDER BY stream_ordering",
            after,
            up_to,
        )
        return [_invite(row) for row in rows]

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

    async def delete_all_for(self, user_id: UserID) -> None:
        """Forget every invite the user had from other servers (erasure), recording the
        highest events position they held (``stream_positions.PURGED_EVENTS``)."""
        async with self._db.transaction() as txn:
            top = await txn.fetchval(
                "SELECT MAX(stream_ordering) FROM remote_invites WHERE user_id = $1", user_id
            )
            await txn.execute("DELETE FROM remote_invites WHERE user_id = $1", user_id)
            if top is not None and int(top) > 0:
                await record_purged_events(txn, int(top))

    async def held_for(self, user_id: UserID) -> list[RemoteInvite]:
        """The user's held invites (message requests) still open, oldest first."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM remote_invites"
            " WHERE user_id = $1 AND held AND membership = 'invite' ORDER BY stream_ordering",
            user_id,
        )
        return [_invite(row) for row in rows]

    async def count_held(self, user_id: UserID) -> int:
        count = await self._db.fetchval(
            "SELECT COUNT(*) FROM remote_invites"
            " WHERE user_id = $1 AND held AND membership = 'invite'",
            user_id,
        )
        return int(count or 0)

    async def release(self, room_id: RoomID, user_id: UserID, stream_ordering: int) -> bool:
        """Make a held invite an ordinary one, at ``stream_ordering``; False if there was
        no held open invite."""
        async with self._db.transaction() as txn:
            row = await txn.fetchrow(
                "UPDATE remote_invites SET held = FALSE, stream_ordering = $3"
                " WHERE room_id = $1 AND user_id = $2 AND held AND membership = 'invite'"
                " RETURNING room_id",
                room_id,
                user_id,
                stream_ordering,
            )
        return row is not None


class InvitePolicyStore:
    """Each user's choice for invites from other servers (``user_invite_policies``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: UserID) -> str | None:
        value = await self._db.fetchval(
            "SELECT policy FROM user_invite_policies WHERE user_id = $1", user_id
        )
        return None if value is None else str(value)

    async def set(self, user_id: UserID, policy: str, ts: int) -> None:
        await self._db.execute(
            "INSERT INTO user_invite_policies (user_id, policy, updated_ts) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET policy = $2, updated_ts = $3",
            user_id,
            policy,
            ts,
        )
