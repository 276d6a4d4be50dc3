"""Registration tokens created through the admin API, and the registrations using them.

A token's ``pending`` count is the number of reservations (registrations in progress that
passed the ``m.login.registration_token`` stage) made after ``pending_since``; older ones
were left by a crash and no longer hold a use. Reserving a use is atomic: the token's row
is locked (PostgreSQL; SQLite runs one write transaction at a time) while the uses are
counted, so concurrent registrations never exceed ``uses_allowed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.storage.database import Database, Row

_SELECT = (
    "SELECT t.token, t.uses_allowed, t.completed, t.expiry_time, "
    "(SELECT COUNT(*) FROM registration_token_pending AS p "
    "WHERE p.token = t.token AND p.created_ts > $1) AS pending "
    "FROM registration_tokens AS t"
)


@dataclass(frozen=True, slots=True)
class RegistrationTokenRow:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def usable(self, now_ms: int) -> bool:
        """Whether a registration may start with this token now: not expired (the expiry
        time is the last valid moment) and not used up (``pending + completed`` below
        ``uses_allowed``; 0 allows no use)."""
        if self.expiry_time is not None and now_ms > self.expiry_time:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed


def _token(row: Row) -> RegistrationTokenRow:
    return RegistrationTokenRow(
        token=row["token"],
        uses_allowed=row["uses_allowed"],
        pending=int(row["pending"]),
        completed=int(row["completed"]),
        expiry_time=row["expiry_time"],
    )


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def any(self) -> bool:
        """Whether at least one token exists (usable or not)."""
        return await self._db.fetchval("SELECT 1 FROM registration_tokens LIMIT 1") is not None

    async def create(
        self, token: str, uses_allowed: int | None, expiry_time: int | None, now_ms: int
    ) -> bool:
        """Insert a token; False if it exists already."""
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_time, "
                "created_ts) VALUES ($1, $2, 0, $3, $4) ON CONFLICT (token) DO NOTHING "
                "RETURNING token",
                token,
                uses_allowed,
                expiry_time,
                now_ms,
            )
        return bool(rows)

    async def get(self, token: str, pending_since: int) -> RegistrationTokenRow | None:
        row = await self._db.fetchrow(f"{_SELECT} WHERE t.token = $2", pending_since, token)
        return None if row is None else _token(row)

    async def list(self, pending_since: int) -> list[RegistrationTokenRow]:
        """Every token, oldest first."""
        rows = await self._db.fetch(f"{_SELECT} ORDER BY t.created_ts, t.token", pending_since)
        return [_token(row) for row in rows]

    async def update(
        self,
        token: str,
        *,
        uses_allowed: int | None,
        set_uses_allowed: bool,
        expiry_time: int | None,
        set_expiry_time: bool,
    ) -> bool:
        """Change a token's limits (those flagged ``set_*``); False if there is no token."""
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "UPDATE registration_tokens SET "
                "uses_allowed = CASE WHEN $2 THEN $3 ELSE uses_allowed END, "
                "expiry_time = CASE WHEN $4 THEN $5 ELSE expiry_time END "
                "WHERE token = $1 RETURNING token",
                token,
                set_uses_allowed,
                uses_allowed,
                set_expiry_time,
                expiry_time,
            )
        return bool(rows)

    async def delete(self, token: str) -> RegistrationTokenRow | None:
        """Delete a token (registrations in progress with it still complete); the row as
        it was, or None if there was none."""
        async with self._db.transaction() as txn:
            row = await txn.fetchrow(
                "DELETE FROM registration_tokens WHERE token = $1 "
                "RETURNING token, uses_allowed, completed, expiry_time, 0 AS pending",
                token,
            )
            await txn.execute("DELETE FROM registration_token_pending WHERE token = $1", token)
        return None if row is None else _token(row)

    async def reserve(self, token: str, reservation: str, now_ms: int, pending_since: int) -> bool:
        """Hold one use of ``token`` for a registration in progress, if it is usable now;
        False otherwise (no such token, expired or used up)."""
        async with self._db.transaction() as txn:
            # Lock the row first, so two registrations cannot both take the last use.
            locked = await txn.fetchrow(
                "UPDATE registration_tokens SET completed = completed WHERE token = $1 "
                "RETURNING token",
                token,
            )
            if locked is None:
                return False
            await txn.execute(
                "DELETE FROM registration_token_pending WHERE token = $1 AND created_ts <= $2",
                token,
                pending_since,
            )
            row = await txn.fetchrow(f"{_SELECT} WHERE t.token = $2", pending_since, token)
            if row is None or not _token(row).usable(now_ms):
                return False
            await txn.execute(
                "INSERT INTO registration_token_pending (reservation, token, created_ts) "
                "VALUES ($1, $2, $3)",
                reservation,
                token,
                now_ms,
            )
        return True

    async def complete(self, reservation: str, token: str) -> None:
        """The registration holding ``reservation`` succeeded: count it as a use."""
        async with self._db.transaction() as txn:
            await txn.execute(
                "DELETE FROM registration_token_pending WHERE reservation = $1", reservation
            )
            await txn.execute(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1",
                token,
            )

    async def release(self, reservation: str) -> None:
        """The registration holding ``reservation`` failed: give the use back."""
        await self._db.execute(
            "DELETE FROM registration_token_pending WHERE reservation = $1", reservation
        )
