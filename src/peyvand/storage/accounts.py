"""Accounts storage: users (with their profile), access tokens, devices and sync filters.

Every write that removes access tokens returns the removed token strings, so the auth
service can evict exactly those from its cache next to the write.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from unpaddedbase64 import encode_base64

from peyvand.storage.database import Connection, Database, Row, iter_chunks, placeholders
from peyvand.storage.errors import NotFoundError
from peyvand.types import DeviceID, JsonDict, UserID

# Rows per statement when deleting a list of devices (well under both backends' limits).
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: UserID
    password_hash: str | None
    is_admin: bool
    deactivated: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """What an access token resolves to."""

    token_id: int
    user_id: UserID
    device_id: DeviceID
    is_admin: bool
    deactivated: bool
    # Milliseconds after which the token is refused (admin "login as a user"), or None.
    valid_until_ms: int | None = None
    is_guest: bool = False


@dataclass(frozen=True, slots=True)
class DeviceRow:
    user_id: UserID
    device_id: DeviceID
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


def _user(row: Row) -> UserRow:
    return UserRow(
        user_id=UserID(row["user_id"]),
        password_hash=row["password_hash"],
        is_admin=bool(row["is_admin"]),
        deactivated=bool(row["deactivated"]),
        created_ts=row["created_ts"],
        displayname=row["displayname"],
        avatar_url=row["avatar_url"],
    )


def _device(row: Row) -> DeviceRow:
    return DeviceRow(
        user_id=UserID(row["user_id"]),
        device_id=DeviceID(row["device_id"]),
        display_name=row["display_name"],
        last_seen_ts=row["last_seen_ts"],
        last_seen_ip=row["last_seen_ip"],
    )


def _new_token_id() -> int:
    """A random positive 63-bit row id: the same on both backends, no sequence needed."""
    return secrets.randbits(63) or 1


async def _delete_tokens(
    conn: Connection, user_id: str, device_ids: Sequence[str] | None, *, keep: str | None = None
) -> list[str]:
    """Delete the tokens (all, or of ``device_ids``) of a user, except device ``keep``."""
    if device_ids is None:
        rows = await conn.fetch(
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2 RETURNING token",
            user_id,
            keep if keep is not None else "",
        )
        return [row["token"] for row in rows]
    removed: list[str] = []
    async for chunk in iter_chunks(device_ids, _CHUNK):
        rows = await conn.fetch(
            "DELETE FROM access_tokens WHERE user_id = $1 "
            f"AND device_id IN ({placeholders(len(chunk), 2)}) RETURNING token",
            user_id,
            *chunk,
        )
        removed.extend(row["token"] for row in rows)
    return removed


async def _delete_devices(
    conn: Connection, user_id: str, device_ids: Sequence[str] | None, *, keep: str | None = None
) -> list[str]:
    """Delete devices (all, or ``device_ids``, except ``keep``) and their tokens."""
    removed = await _delete_tokens(conn, user_id, device_ids, keep=keep)
    if device_ids is None:
        await conn.execute(
            "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2",
            user_id,
            keep if keep is not None else "",
        )
        return removed
    async for chunk in iter_chunks(device_ids, _CHUNK):
        await conn.execute(
            "DELETE FROM devices WHERE user_id = $1 "
            f"AND device_id IN ({placeholders(len(chunk), 2)})",
            user_id,
            *chunk,
        )
    return removed


def filter_id_for(filter_json: JsonDict) -> str:
    """The content-derived id of a filter: the same filter always gets the same id."""
    digest = hashlib.sha256(orjson.dumps(filter_json, option=orjson.OPT_SORT_KEYS)).digest()
    return encode_base64(digest[:12], urlsafe=True)


class AccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Users ---------------------------------------------------------------------------

    async def create_user(
        self, user_id: UserID, password_hash: str | None, *, is_admin: bool, created_ts: int
    ) -> None:
        """Insert a user; ``ConflictError`` if the ID is taken."""
        await self._db.execute(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts) "
            "VALUES ($1, $2, $3, FALSE, $4)",
            user_id,
            password_hash,
            is_admin,
            created_ts,
        )

    async def get_user(self, user_id: str) -> UserRow | None:
        row = await self._db.fetchrow(
            "SELECT user_id, password_hash, is_admin, deactivated, created_ts, displayname, "
            "avatar_url FROM users WHERE user_id = $1",
            user_id,
        )
        return None if row is None else _user(row)

    async def set_displayname(self, user_id: UserID, displayname: str | None) -> None:
        """Set (or with None clear) a user's display name."""
        await self._db.execute(
            "UPDATE users SET displayname = $2 WHERE user_id = $1", user_id, displayname
        )

    async def set_avatar_url(self, user_id: UserID, avatar_url: str | None) -> None:
        """Set (or with None clear) a user's avatar URL."""
        await self._db.execute(
            "UPDATE users SET avatar_url = $2 WHERE user_id = $1", user_id, avatar_url
        )

    async def set_password_hash(
        self, user_id: UserID, password_hash: str, *, keep_device: DeviceID | None
    ) -> list[str]:
        """Set a new password hash; with ``keep_device``, also delete every other device.

        Returns the access tokens removed.
        """
        async with self._db.transaction() as txn:
            await txn.execute(
                "UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
            )
            if keep_device is None:
                return []
            return await _delete_devices(txn, user_id, None, keep=keep_device)

    async def deactivate_user(self, user_id: UserID) -> list[str]:
        """Mark deactivated, forget the password, delete every device and token.

        Returns the access tokens removed.
        """
        async with self._db.transaction() as txn:
            await txn.execute(
                "UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1",
                user_id,
            )
            return await _delete_devices(txn, user_id, None)

    # Access tokens -------------------------------------------------------------------

    async def create_access_token(
        self,
        user_id: UserID,
        device_id: DeviceID,
        token: str,
        *,
        display_name: str | None,
        ip: str | None,
        now_ms: int,
    ) -> tuple[int, list[str]]:
        """Issue ``token`` for a device, creating the device if it is new.

        An existing device keeps its display name; its previous tokens are revoked
        (Client-Server API, "Relationship between access tokens and devices").
        Returns the new token's id and the tokens revoked.
        """
        token_id = _new_token_id()
        async with self._db.transaction() as txn:
            await txn.execute(
                "INSERT INTO devices "
                "(user_id, device_id, display_name, last_seen_ts, last_seen_ip) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id) DO UPDATE SET "
                "last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
                user_id,
                device_id,
                display_name,
                now_ms,
                ip,
            )
            revoked = await _delete_tokens(txn, user_id, [device_id])
            await txn.execute(
                "INSERT INTO access_tokens (id, token, user_id, device_id, created_ts) "
                "VALUES ($1, $2, $3, $4, $5)",
                token_id,
                token,
                user_id,
                device_id,
                now_ms,
            )
        return token_id, revoked

    async def create_deviceless_token(
        self,
        user_id: UserID,
        device_id: DeviceID,
        token: str,
        *,
        valid_until_ms: int | None,
        now_ms: int,
    ) -> int:
        """Issue ``token`` under a fresh ``device_id`` without creating the device (admin
        "login as a user"): the session is not in the user's device list. Logging it
        out, or any removal of the user's tokens, revokes it like any other."""
        token_id = _new_token_id()
        await self._db.execute(
            "INSERT INTO access_tokens (id, token, user_id, device_id, created_ts, "
            "valid_until_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            token_id,
            token,
            user_id,
            device_id,
            now_ms,
            valid_until_ms,
        )
        return token_id

    async def get_token_owner(self, token: str) -> TokenOwner | None:
        row = await self._db.fetchrow(
            "SELECT t.id, t.user_id, t.device_id, t.valid_until_ms, u.is_admin, u.deactivated, "
            "u.is_guest FROM access_tokens AS t JOIN users AS u ON u.user_id = t.user_id "
            "WHERE t.token = $1",
            token,
        )
        if row is None:
            return None
        return TokenOwner(
            token_id=row["id"],
            user_id=UserID(row["user_id"]),
            device_id=DeviceID(row["device_id"]),
            is_admin=bool(row["is_admin"]),
            deactivated=bool(row["deactivated"]),
            valid_until_ms=row["valid_until_ms"],
            is_guest=bool(row["is_guest"]),
        )

    # Devices -------------------------------------------------------------------------

    async def get_devices(self, user_id: UserID) -> list[DeviceRow]:
        rows = await self._db.fetch(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip "
            "FROM devices WHERE user_id = $1 ORDER BY device_id",
            user_id,
        )
        return [_device(row) for row in rows]

    async def get_device(self, user_id: UserID, device_id: str) -> DeviceRow | None:
        row = await self._db.fetchrow(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip "
            "FROM devices WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return None if row is None else _device(row)

    async def upsert_device(
        self, user_id: UserID, device_id: str, display_name: str | None
    ) -> bool:
        """Create a device without an access token (an application service managing its
        users' devices), or rename it if it exists and ``display_name`` is given.
        Returns whether the device was created."""
        async with self._db.transaction() as txn:
            created = await txn.fetch(
                "INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3) "
                "ON CONFLICT (user_id, device_id) DO NOTHING RETURNING device_id",
                user_id,
                device_id,
                display_name,
            )
            if not created and display_name is not None:
                await txn.execute(
                    "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                    user_id,
                    device_id,
                    display_name,
                )
        return bool(created)

    async def set_device_display_name(
        self, user_id: UserID, device_id: str, display_name: str | None
    ) -> None:
        """Rename a device; ``NotFoundError`` if the user has no such device."""
        async with self._db.transaction() as txn:
            rows = await txn.fetch(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2 "
                "RETURNING device_id",
                user_id,
                device_id,
                display_name,
            )
        if not rows:
            raise NotFoundError(f"no device {device_id} for {user_id}")

    async def delete_devices(self, user_id: UserID, device_ids: Sequence[str]) -> list[str]:
        """Delete devices and their tokens (unknown IDs are ignored); returns the tokens."""
        if not device_ids:
            return []
        async with self._db.transaction() as txn:
            return await _delete_devices(txn, user_id, device_ids)

    async def delete_all_devices(self, user_id: UserID) -> list[str]:
        """Delete every device and token of a user; returns the tokens."""
        async with self._db.transaction() as txn:
            return await _delete_devices(txn, user_id, None)

    # Filters (Client-Server API, "Filtering") ------------------------------------------

    async def add_filter(self, user_id: UserID, filter_json: JsonDict) -> str:
        """Store a filter and return its id; storing the same filter again returns the same id."""
        filter_id = filter_id_for(filter_json)
        await self._db.execute(
            "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id, filter_id) DO NOTHING",
            user_id,
            filter_id,
            orjson.dumps(filter_json).decode(),
        )
        return filter_id

    async def get_filter(self, user_id: UserID, filter_id: str) -> JsonDict | None:
        raw = await self._db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2",
            user_id,
            filter_id,
        )
        if raw is None:
            return None
        filter_json: JsonDict = orjson.loads(raw)
        return filter_json
