"""Local accounts in pages, for jobs that go through every user (a server notice to
everyone): active, non-guest accounts in user ID order."""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.types import UserID


class LocalUserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def active_users_after(self, after: str, limit: int) -> list[UserID]:
        """At most ``limit`` active (not deactivated, not guest) user IDs above ``after``
        (``""``: from the first), in order."""
        rows = await self._db.fetch(
            "SELECT user_id FROM users WHERE user_id > $1 AND deactivated = FALSE"
            " AND is_guest = FALSE ORDER BY user_id LIMIT $2",
            after,
            limit,
        )
        return [UserID(r["user_id"]) for r in rows]
