"""User directory search (Client-Server API, "User directory").

Searches this server's active users by user ID localpart and display name. Like
Synapse's default (``search_all_users: false``) a user is found only if they share a
room with the searcher or are joined to a public room. "Public" is what Synapse's user
directory means by it: a room anyone may join (``join_rule`` ``public``) or read
(``history_visibility`` ``world_readable``), whether or not it is published in the room
list. The search is one SQL query over current state; it reads each room's join rules
and history visibility, so its cost grows with the number of rooms (Synapse keeps a
precomputed table instead; one can be added if that ever shows).
"""

from __future__ import annotations

from typing import Final

from peyvand.services.accounts.profile import MAX_DISPLAYNAME_LEN
from peyvand.storage.directory import DirectoryStore
from peyvand.types import JsonDict, ServerName, UserID

# User IDs are at most 255 bytes (Appendices, "User Identifiers"), display names at most
# MAX_DISPLAYNAME_LEN characters.
_LONGEST_MATCHABLE: Final = max(255, MAX_DISPLAYNAME_LEN)


class UserDirectoryService:
    def __init__(self, server_name: ServerName, store: DirectoryStore) -> None:
        self._server_name = server_name
        self._store = store

    async def search(self, searcher: UserID, term: str, limit: int) -> JsonDict:
        """``{"results": [...], "limited": bool}`` for at most ``limit`` matching users.

        A term longer than any user ID or display name can be matches nobody, so it never
        reaches the database (SQLite refuses LIKE patterns of over 50,000 bytes).
        """
        term = term.strip()
        if len(term) > _LONGEST_MATCHABLE:
            return {"results": [], "limited": False}
        rows = await self._store.search_users(searcher, term, self._server_name, limit + 1)
        results = []
        for row in rows[:limit]:
            result: JsonDict = {"user_id": row.user_id}
            if row.displayname is not None:
                result["display_name"] = row.displayname
            if row.avatar_url is not None:
                result["avatar_url"] = row.avatar_url
            results.append(result)
        return {"results": results, "limited": len(rows) > limit}
