"""Guest accounts (Client-Server API, "Guest Access"): a flag on ``users``."""

from __future__ import annotations

from collections.abc import Iterable

from peyvand.storage.database import Database, iter_chunks, placeholders
from peyvand.types import UserID

# User IDs per IN-list (well under both backends' bind-parameter limits).
_CHUNK = 500


class GuestStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_guest(self, user_id: UserID, created_ts: int) -> None:
        """Insert a guest without a password; ``ConflictError`` if the ID is taken."""
        await self._db.execute(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts, "
            "is_guest) VALUES ($1, NULL, FALSE, FALSE, $2, TRUE)",
            user_id,
            created_ts,
        )

    async def guests_among(self, user_ids: Iterable[UserID]) -> set[UserID]:
        found: set[UserID] = set()
        async for chunk in iter_chunks(sorted(set(user_ids)), _CHUNK):
            rows = await self._db.fetch(
                "SELECT user_id FROM users WHERE is_guest = $1 "
                f"AND user_id IN ({placeholders(len(chunk), 2)})",
                True,
                *chunk,
            )
            found.update(UserID(row["user_id"]) for row in rows)
        return found

    async def upgrade(self, user_id: UserID, password_hash: str) -> bool:
        """Make a guest a full user with a password; False if it is not a guest."""
        async with self._db.transaction() as txn:
            row = await txn.fetchrow(
                "UPDATE users SET is_guest = FALSE, password_hash = $2 "
                "WHERE user_id = $1 AND is_guest = TRUE AND deactivated = FALSE "
                "RETURNING user_id",
                user_id,
                password_hash,
            )
        return row is not None
