"""Third-party identifiers (schema 040): the email addresses users have validated, and
the validation sessions that validate them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peyvand.storage.database import Database
from peyvand.storage.errors import ConflictError
from peyvand.types import UserID


@dataclass(frozen=True, slots=True)
class Threepid:
    user_id: UserID
    medium: str
    address: str
    validated_at: int
    added_at: int


@dataclass(frozen=True, slots=True)
class ValidationSession:
    sid: str
    client_secret: str
    medium: str
    address: str
    token_hash: str
    send_attempt: int
    expires_at: int
    validated_at: int | None
    next_link: str | None


_SESSION_COLUMNS = (
    "sid, client_secret, medium, address, token_hash, send_attempt, expires_at, validated_at,"
    " next_link"
)


def _session(r: Any) -> ValidationSession:
    return ValidationSession(
        r["sid"],
        r["client_secret"],
        r["medium"],
        r["address"],
        r["token_hash"],
        r["send_attempt"],
        r["expires_at"],
        r["validated_at"],
        r["next_link"],
    )


class ThreepidStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_threepids(self, user_id: UserID) -> list[Threepid]:
        rows = await self._db.fetch(
            "SELECT user_id, medium, address, validated_at, added_at FROM user_threepids"
            " WHERE user_id = $1 ORDER BY added_at, medium, address",
            user_id,
        )
        return [
            Threepid(
                UserID(r["user_id"]), r["medium"], r["address"], r["validated_at"], r["added_at"]
            )
            for r in rows
        ]

    async def get_owner(self, medium: str, address: str) -> UserID | None:
        owner = await self._db.fetchval(
            "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
            medium,
            address,
        )
        return None if owner is None else UserID(owner)

    async def add_threepid(self, threepid: Threepid) -> None:
        """Bind the address to the user (again, if already theirs); ``Conflict`` if it is
        another user's."""
        async with self._db.transaction() as txn:
            owner = await txn.fetchval(
                "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
                threepid.medium,
                threepid.address,
            )
            if owner is not None and owner != threepid.user_id:
                raise ConflictError("address bound to another user")
            if owner is None:
                await txn.execute(
                    "INSERT INTO user_threepids"
                    " (medium, address, user_id, validated_at, added_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    threepid.medium,
                    threepid.address,
                    threepid.user_id,
                    threepid.validated_at,
                    threepid.added_at,
                )

    async def delete_threepid(self, user_id: UserID, medium: str, address: str) -> bool:
        """Unbind; whether the user had it."""
        async with self._db.transaction() as txn:
            deleted = await txn.fetch(
                "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2"
                " AND address = $3 RETURNING address",
                user_id,
                medium,
                address,
            )
        return bool(deleted)

    async def delete_all(self, user_id: UserID) -> None:
        await self._db.execute("DELETE FROM user_threepids WHERE user_id = $1", user_id)

    async def latest_session(
        self, client_secret: str, medium: str, address: str
    ) -> ValidationSession | None:
        row = await self._db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
            " WHERE client_secret = $1 AND medium = $2 AND address = $3"
            " ORDER BY send_attempt DESC, expires_at DESC LIMIT 1",
            client_secret,
            medium,
            address,
        )
        return None if row is None else _session(row)

    async def get_session(self, sid: str, client_secret: str) -> ValidationSession | None:
        row = await self._db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
            " WHERE sid = $1 AND client_secret = $2",
            sid,
            client_secret,
        )
        return None if row is None else _session(row)

    async def upsert_session(self, session: ValidationSession) -> None:
        """Store a new session, or a new token and send attempt for an existing one."""
        await self._db.execute(
            f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (sid) DO UPDATE SET token_hash = excluded.token_hash,"
            " send_attempt = excluded.send_attempt, expires_at = excluded.expires_at,"
            " next_link = excluded.next_link",
            session.sid,
            session.client_secret,
            session.medium,
            session.address,
            session.token_hash,
            session.send_attempt,
            session.expires_at,
            session.validated_at,
            session.next_link,
        )

    async def set_validated(self, sid: str, validated_at: int) -> None:
        await self._db.execute(
            "UPDATE threepid_validation_sessions SET validated_at = $2"
            " WHERE sid = $1 AND validated_at IS NULL",
            sid,
            validated_at,
        )

    async def delete_expired_sessions(self, now: int) -> None:
        await self._db.execute(
            "DELETE FROM threepid_validation_sessions WHERE expires_at < $1", now
        )
