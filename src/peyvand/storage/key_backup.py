"""Server-side key backup storage: backup versions and the session keys stored in them.

Versions are integers counting up per user and never reused; a deleted version keeps a
tombstone row. Each version carries an ``etag`` (bumped on every change to its keys) and
``key_count``, maintained by the writes here so reading them never counts rows. The
caller (``services.key_backup``) serialises the writes of each user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from peyvand.storage.database import Database
from peyvand.types import JsonDict, UserID

# (room_id, session_id) pairs per existence lookup: two parameters each, well under the
# drivers' limits on bound parameters.
_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: JsonDict
    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class KeyMetadata:
    """What decides whether an uploaded key replaces a stored one."""

    is_verified: bool
    first_message_index: int
    forwarded_count: int


@dataclass(frozen=True, slots=True)
class RoomKey:
    room_id: str
    session_id: str
    metadata: KeyMetadata
    session_data: JsonDict


def _scope(room_id: str | None, session_id: str | None) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (after ``user_id = $1 AND version = $2``) selecting every key,
    a room's keys or one session's key, and its arguments."""
    if room_id is None:
        return "", ()
    if session_id is None:
        return " AND room_id = $3", (room_id,)
    return " AND room_id = $3 AND session_id = $4", (room_id, session_id)


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- versions -------------------------------------------------------------------------

    async def get_version(self, user_id: UserID, version: int | None) -> BackupVersion | None:
        """``version`` (the current one when None) unless it is deleted or never existed."""
        columns = "version, algorithm, auth_data, etag, key_count"
        if version is None:
            row = await self._db.fetchrow(
                f"SELECT {columns} FROM room_key_backup_versions"
                " WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1",
                user_id,
            )
        else:
            row = await self._db.fetchrow(
                f"SELECT {columns} FROM room_key_backup_versions"
                " WHERE user_id = $1 AND version = $2 AND NOT deleted",
                user_id,
                version,
            )
        if row is None:
            return None
        return BackupVersion(
            version=int(row["version"]),
            algorithm=row["algorithm"],
            auth_data=orjson.loads(row["auth_data"]),
            etag=int(row["etag"]),
            count=int(row["key_count"]),
        )

    async def create_version(self, user_id: UserID, algorithm: str, auth_data: JsonDict) -> int:
        """A new version numbered one past the user's highest, deleted ones included."""
        async with self._db.transaction() as txn:
            highest = await txn.fetchval(
                "SELECT MAX(version) FROM room_key_backup_versions WHERE user_id = $1", user_id
            )
            version = int(highest or 0) + 1
            await txn.execute(
                "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)"
                " VALUES ($1, $2, $3, $4)",
                user_id,
                version,
                algorithm,
                orjson.dumps(auth_data).decode(),
            )
        return version

    async def update_auth_data(self, user_id: UserID, version: int, auth_data: JsonDict) -> None:
        await self._db.execute(
            "UPDATE room_key_backup_versions SET auth_data = $3"
            " WHERE user_id = $1 AND version = $2 AND NOT deleted",
            user_id,
            version,
            orjson.dumps(auth_data).decode(),
        )

    async def delete_version(self, user_id: UserID, version: int) -> bool:
        """Mark ``version`` deleted and drop its keys; False if it never existed (deleting
        a deleted version again is a success)."""
        async with self._db.transaction() as txn:
            exists = await txn.fetchval(
                "SELECT 1 FROM room_key_backup_versions WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
            if exists is None:
                return False
            await txn.execute(
                "DELETE FROM room_key_backup_keys WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
            await txn.execute(
                "UPDATE room_key_backup_versions SET deleted = TRUE, key_count = 0"
                " WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
        return True

    # -- keys -----------------------------------------------------------------------------

    async def get_keys(
        self,
        user_id: UserID,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> list[RoomKey]:
        """Every key of ``version``, of one room, or of one session."""
        condition, args = _scope(room_id, session_id)
        rows = await self._db.fetch(
            "SELECT room_id, session_id, is_verified, first_message_index, forwarded_count,"
            " session_data FROM room_key_backup_keys"
            f" WHERE user_id = $1 AND version = $2{condition}",
            user_id,
            version,
            *args,
        )
        return [
            RoomKey(
                room_id=row["room_id"],
                session_id=row["session_id"],
                metadata=KeyMetadata(
                    is_verified=bool(row["is_verified"]),
                    first_message_index=int(row["first_message_index"]),
                    forwarded_count=int(row["forwarded_count"]),
                ),
                session_data=orjson.loads(row["session_data"]),
            )
            for row in rows
        ]

    async def get_metadata(
        self, user_id: UserID, version: int, sessions: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], KeyMetadata]:
        """The stored metadata of those ``(room_id, session_id)`` that have a key, in
        queries of ``_LOOKUP_CHUNK`` sessions each."""
        found: dict[tuple[str, str], KeyMetadata] = {}
        for start in range(0, len(sessions), _LOOKUP_CHUNK):
            chunk = sessions[start : start + _LOOKUP_CHUNK]
            pairs = ", ".join(f"(${2 * i + 3}, ${2 * i + 4})" for i in range(len(chunk)))
            # A join on the VALUES list (columns column1, column2 on both backends) makes
            # one primary-key lookup per session; a row-value IN would scan the backup.
            rows = await self._db.fetch(
                "SELECT k.room_id, k.session_id, k.is_verified, k.first_message_index,"
                f" k.forwarded_count FROM (VALUES {pairs}) AS wanted"
                " JOIN room_key_backup_keys AS k ON k.user_id = $1 AND k.version = $2"
                " AND k.room_id = wanted.column1 AND k.session_id = wanted.column2",
                user_id,
                version,
                *(value for pair in chunk for value in pair),
            )
            for row in rows:
                found[(row["room_id"], row["session_id"])] = KeyMetadata(
                    is_verified=bool(row["is_verified"]),
                    first_message_index=int(row["first_message_index"]),
                    forwarded_count=int(row["forwarded_count"]),
                )
        return found

    async def write_keys(
        self, user_id: UserID, version: int, keys: Sequence[RoomKey], added: int
    ) -> None:
        """Store ``keys`` (new or replacing), of which ``added`` are new, and bump the etag:
        one transaction, one batched statement for the keys."""
        async with self._db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id,"
                " is_verified, first_message_index, forwarded_count, session_data)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                " is_verified = excluded.is_verified,"
                " first_message_index = excluded.first_message_index,"
                " forwarded_count = excluded.forwarded_count,"
                " session_data = excluded.session_data",
                [
                    (
                        user_id,
                        version,
                        key.room_id,
                        key.session_id,
                        key.metadata.is_verified,
                        key.metadata.first_message_index,
                        key.metadata.forwarded_count,
                        orjson.dumps(key.session_data).decode(),
                    )
                    for key in keys
                ],
            )
            await txn.execute(
                "UPDATE room_key_backup_versions SET etag = etag + 1, key_count = key_count + $3"
                " WHERE user_id = $1 AND version = $2",
                user_id,
                version,
                added,
            )

    async def delete_keys(
        self,
        user_id: UserID,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Delete every key of ``version``, of one room, or of one session; return how
        many. The etag moves only if a key was deleted."""
        condition, args = _scope(room_id, session_id)
        async with self._db.transaction() as txn:
            deleted = int(
                await txn.fetchval(
                    "SELECT COUNT(*) FROM room_key_backup_keys"
                    f" WHERE user_id = $1 AND version = $2{condition}",
                    user_id,
                    version,
                    *args,
                )
            )
            if deleted:
                await txn.execute(
                    "DELETE FROM room_key_backup_keys"
                    f" WHERE user_id = $1 AND version = $2{condition}",
                    user_id,
                    version,
                    *args,
                )
                await txn.execute(
                    "UPDATE room_key_backup_versions"
                    " SET etag = etag + 1, key_count = key_count - $3"
                    " WHERE user_id = $1 AND version = $2",
                    user_id,
                    version,
                    deleted,
                )
        return deleted
