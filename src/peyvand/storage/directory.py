"""Room aliases of this server (schema 006), the rooms appservices publish per
third-party network (schema 045) and the user directory search.

Which rooms are published in the room list is a column of ``rooms`` (``EventStore``).
"""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.storage.database import Database
from peyvand.types import RoomAlias, RoomID, ServerName, UserID


@dataclass(frozen=True, slots=True)
class AliasRow:
    room_alias: RoomAlias
    room_id: RoomID
    creator: UserID


@dataclass(frozen=True, slots=True)
class UserDirectoryRow:
    user_id: UserID
    displayname: str | None
    avatar_url: str | None


def like_pattern(term: str) -> str:
    """``term`` with LIKE wildcards escaped (for ``LIKE ... ESCAPE '\\'``)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Room aliases --------------------------------------------------------------------

    async def create_alias(
        self, room_alias: RoomAlias, room_id: RoomID, creator: UserID, created_ts: int
    ) -> None:
        """Insert an alias; ``ConflictError`` if it exists."""
        await self._db.execute(
            "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts)"
            " VALUES ($1, $2, $3, $4)",
            room_alias,
            room_id,
            creator,
            created_ts,
        )

    async def get_alias(self, room_alias: RoomAlias) -> AliasRow | None:
        row = await self._db.fetchrow(
            "SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = $1",
            room_alias,
        )
        if row is None:
            return None
        return AliasRow(
            RoomAlias(row["room_alias"]), RoomID(row["room_id"]), UserID(row["creator"])
        )

    async def delete_alias(self, room_alias: RoomAlias) -> RoomID | None:
        """Delete an alias; the room it pointed to, or None if there was no such alias."""
        async with self._db.transaction() as txn:
            row = await txn.fetchrow(
                "DELETE FROM room_aliases WHERE room_alias = $1 RETURNING room_id", room_alias
            )
        return None if row is None else RoomID(row["room_id"])

    async def get_aliases_for_room(self, room_id: RoomID) -> list[RoomAlias]:
        rows = await self._db.fetch(
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias",
            room_id,
        )
        return [RoomAlias(row["room_alias"]) for row in rows]

    async def move_aliases(self, old_room_id: RoomID, new_room_id: RoomID) -> None:
        """Point every alias of ``old_room_id`` at ``new_room_id`` (a room upgrade)."""
        await self._db.execute(
            "UPDATE room_aliases SET room_id = $2 WHERE room_id = $1", old_room_id, new_room_id
        )

    # Appservices' room lists -----------------------------------------------------------

    async def set_appservice_room(
        self, appservice_id: str, network_id: str, room_id: RoomID, published: bool
    ) -> None:
        """Publish (or unpublish) ``room_id`` in an appservice's list for ``network_id``."""
        if published:
            await self._db.execute(
                "INSERT INTO appservice_room_list (appservice_id, network_id, room_id)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                appservice_id,
                network_id,
                room_id,
            )
        else:
            await self._db.execute(
                "DELETE FROM appservice_room_list"
                " WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3",
                appservice_id,
                network_id,
                room_id,
            )

    async def get_appservice_room_lists(self) -> list[tuple[str, str, RoomID]]:
        """Every ``(appservice ID, network ID, room ID)`` published (a short table: what
        bridges chose to list)."""
        rows = await self._db.fetch(
            "SELECT appservice_id, network_id, room_id FROM appservice_room_list"
        )
        return [(r["appservice_id"], r["network_id"], RoomID(r["room_id"])) for r in rows]

    # User directory ------------------------------------------------------------------

    async def search_users(
        self, searcher: UserID, term: str, server_name: ServerName, limit: int
    ) -> list[UserDirectoryRow]:
        """Active local users whose localpart or display name contains ``term``
        (case-insensitive) and who share a room with ``searcher`` or are joined to a public
        room (the searcher too, but only through a public room, as in Synapse). Prefix
        matches first, then by name; at most ``limit``.

        A public room is one anyone may join or read (current ``join_rule`` ``public`` or
        ``history_visibility`` ``world_readable``), as in Synapse's user directory; being
        published in the room list does not count, so a user whose rooms are all private is
        found only by those who share one (Client-Server API, "User Directory").
        """
        needle = like_pattern(term.lower())
        if self._db.dialect == "postgres":
            join_rule = "(e.pdu::jsonb -> 'content' ->> 'join_rule')"
            visibility = "(e.pdu::jsonb -> 'content' ->> 'history_visibility')"
        else:
            join_rule = "json_extract(e.pdu, '$.content.join_rule')"
            visibility = "json_extract(e.pdu, '$.content.history_visibility')"
        public_rooms = (
            "SELECT s.room_id FROM current_state s JOIN events e ON e.event_id = s.event_id"
            " WHERE s.state_key = '' AND ("
            f"  (s.type = 'm.room.join_rules' AND {join_rule} = 'public')"
            f"  OR (s.type = 'm.room.history_visibility' AND {visibility} = 'world_readable'))"
        )
        rows = await self._db.fetch(
            "SELECT u.user_id, u.displayname, u.avatar_url FROM users u"
            " WHERE NOT u.deactivated"
            " AND (LOWER(u.user_id) LIKE $1 ESCAPE '\\'"
            "  OR LOWER(u.displayname) LIKE $2 ESCAPE '\\')"
            " AND EXISTS ("
            "  SELECT 1 FROM current_state m WHERE m.type = 'm.room.member'"
            "  AND m.state_key = u.user_id AND m.membership = 'join' AND ("
            f"   m.room_id IN ({public_rooms})"
            "   OR (u.user_id <> $3 AND m.room_id IN (SELECT room_id FROM current_state"
            "    WHERE type = 'm.room.member' AND state_key = $3 AND membership = 'join'))))"
            " ORDER BY CASE WHEN LOWER(u.user_id) LIKE $4 ESCAPE '\\'"
            "  OR LOWER(u.displayname) LIKE $5 ESCAPE '\\' THEN 0 ELSE 1 END,"
            "  LOWER(COALESCE(u.displayname, u.user_id)), u.user_id"
            " LIMIT $6",
            f"@%{needle}%:{like_pattern(server_name.lower())}",
            f"%{needle}%",
            searcher,
            f"@{needle}%",
            f"{needle}%",
            limit,
        )
        return [
            UserDirectoryRow(UserID(r["user_id"]), r["displayname"], r["avatar_url"]) for r in rows
        ]
