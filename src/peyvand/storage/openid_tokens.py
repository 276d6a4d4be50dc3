"""OpenID tokens (schema 041): the hash of each token, its user and its expiry. A user's
tokens go when the account is deactivated (``delete_all``), and only an active account's
token names its user."""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.types import UserID


class OpenIdTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token_hash: str, user_id: UserID, valid_until_ms: int, now_ms: int) -> None:
        """Store a new token and delete those expired by ``now_ms``, in one transaction."""
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM openid_tokens WHERE valid_until_ms < $1", now_ms)
            await txn.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, valid_until_ms) "
                "VALUES ($1, $2, $3)",
                token_hash,
                user_id,
                valid_until_ms,
            )

    async def user_for(self, token_hash: str, now_ms: int) -> UserID | None:
        """The user of a token still valid at ``now_ms``, else None; None too when the
        account is deactivated (a token issued while it was being deactivated)."""
        user_id = await self._db.fetchval(
            "SELECT t.user_id FROM openid_tokens t JOIN users u ON u.user_id = t.user_id "
            "WHERE t.token_hash = $1 AND t.valid_until_ms >= $2 AND u.deactivated = FALSE",
            token_hash,
            now_ms,
        )
        return None if user_id is None else UserID(user_id)

    async def delete_all(self, user_id: UserID) -> None:
        """Delete every token of ``user_id`` (deactivation; the user ID is personal data).
        Not indexed by user: the table holds at most an hour of tokens."""
        await self._db.execute("DELETE FROM openid_tokens WHERE user_id = $1", user_id)

    async def count(self) -> int:
        """How many tokens are stored, expired or not (for tests and metrics)."""
        return int(await self._db.fetchval("SELECT COUNT(*) FROM openid_tokens"))
