"""Server-side key backups (Client-Server API, "Server-side key backups").

A user's backups are numbered versions; only the newest one that is not deleted (the
current version) accepts keys, older ones stay readable until deleted. Each version has an
opaque ``etag`` that changes whenever its keys change, and a ``count`` of its keys. The
server never decrypts anything: ``auth_data`` and ``session_data`` are stored as given.
Like Synapse, any ``algorithm`` string is accepted, so new backup algorithms need no
server change.

Writes of one user (versions and keys) are serialised, so an upload's read of the stored
keys and its batched write see no other write in between.
"""

from __future__ import annotations

from typing import Any, Final

from peyvand.errors import Errcode, MatrixError, bad_json, invalid_param, missing_param, not_found
from peyvand.keyed_locks import KeyedLocks
from peyvand.storage.key_backup import BackupVersion, KeyBackupStore, KeyMetadata, RoomKey
from peyvand.types import JsonDict, UserID

# Canonical JSON integers end at 2**53 - 1 (appendices, "Canonical JSON").
_MAX_INT: Final = 2**53 - 1
# Room IDs are at most 255 bytes (appendices, "Room IDs"); session IDs (megolm public
# keys, 43 characters) get the same bound so every key fits the database's index.
_MAX_ID_BYTES: Final = 255
# Versions are positive integers below BIGINT's range; anything else names no version.
_MAX_VERSION_DIGITS: Final = 18


def parse_version(version: str) -> int | None:
    """The stored number of the version string ``version``; None if it cannot name one
    (the string form is exactly what ``POST /room_keys/version`` returned)."""
    if not version.isascii() or not version.isdigit() or len(version) > _MAX_VERSION_DIGITS:
        return None
    number = int(version)
    return number if number > 0 and str(number) == version else None


def is_better(new: KeyMetadata, old: KeyMetadata) -> bool:
    """Whether an uploaded key replaces the stored one ("Server-side key backups"): the
    verified key wins; then the lower ``first_message_index``; then the lower
    ``forwarded_count``. On a tie the stored key stays."""
    return (not new.is_verified, new.first_message_index, new.forwarded_count) < (
        not old.is_verified,
        old.first_message_index,
        old.forwarded_count,
    )


def _check_id(kind: str, value: str) -> None:
    if len(value.encode()) > _MAX_ID_BYTES:
        raise invalid_param(f"{kind} must not exceed {_MAX_ID_BYTES} bytes")


def _count(data: JsonDict, key: str, where: str) -> int:
    value = _field(data, key, where)
    # Past the canonical JSON range is malformed JSON, as everywhere else in the API.
    if isinstance(value, bool) or not isinstance(value, int) or value > _MAX_INT:
        raise bad_json(f"'{key}' of {where} must be an integer of canonical JSON")
    if value < 0:
        raise invalid_param(f"'{key}' of {where} must not be negative")
    return value


def _field(data: JsonDict, key: str, where: str) -> Any:
    if key not in data:
        raise missing_param(f"Missing parameter '{key}' in {where}")
    return data[key]


def _parse_key(room_id: str, session_id: str, data: Any) -> RoomKey:
    """One ``KeyBackupData`` (key_backup_data.yaml); every field is required."""
    where = f"session {session_id} of room {room_id}"
    _check_id("Session IDs", session_id)
    if not isinstance(data, dict):
        raise bad_json(f"The key data of {where} must be an object")
    is_verified = _field(data, "is_verified", where)
    if not isinstance(is_verified, bool):
        raise bad_json(f"'is_verified' of {where} must be a boolean")
    session_data = _field(data, "session_data", where)
    if not isinstance(session_data, dict):
        raise bad_json(f"'session_data' of {where} must be an object")
    metadata = KeyMetadata(
        is_verified=is_verified,
        first_message_index=_count(data, "first_message_index", where),
        forwarded_count=_count(data, "forwarded_count", where),
    )
    return RoomKey(room_id, session_id, metadata, session_data)


def parse_upload(rooms: JsonDict) -> list[RoomKey]:
    """The keys of an upload in its general form ``{roomId: {"sessions": {sessionId:
    KeyBackupData}}}`` (``PUT /room_keys/keys``), validated before anything is stored."""
    keys: list[RoomKey] = []
    for room_id, room in rooms.items():
        _check_id("Room IDs", room_id)
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id} is not a room ID")
        if not isinstance(room, dict):
            raise bad_json(f"The backup of room {room_id} must be an object")
        sessions = _field(room, "sessions", f"room {room_id}")
        if not isinstance(sessions, dict):
            raise bad_json(f"'sessions' of room {room_id} must be an object")
        keys.extend(_parse_key(room_id, sid, data) for sid, data in sessions.items())
    return keys


def _key_data(key: RoomKey) -> JsonDict:
    return {
        "first_message_index": key.metadata.first_message_index,
        "forwarded_count": key.metadata.forwarded_count,
        "is_verified": key.metadata.is_verified,
        "session_data": key.session_data,
    }


def _update_response(etag: int, count: int) -> JsonDict:
    """``RoomKeysUpdateResponse`` of key_backup.yaml."""
    return {"etag": str(etag), "count": count}


class KeyBackupService:
    def __init__(self, store: KeyBackupStore) -> None:
        self._store = store
        # Per-user write locks.
        self._locks = KeyedLocks()

    async def _existing(self, user_id: UserID, version: str) -> BackupVersion:
        """The version ``version`` of the user; 404 if it does not exist or is deleted."""
        number = parse_version(version)
        found = None if number is None else await self._store.get_version(user_id, number)
        if found is None:
            raise not_found("Unknown backup version")
        return found

    # -- versions -------------------------------------------------------------------------

    async def create_version(self, user_id: UserID, algorithm: str, auth_data: JsonDict) -> str:
        """``POST /room_keys/version``: the new version becomes the current one."""
        async with self._locks.hold(user_id):
            return str(await self._store.create_version(user_id, algorithm, auth_data))

    async def get_version(self, user_id: UserID, version: str | None) -> JsonDict:
        """``GET /room_keys/version[/{version}]``: the current version when ``version`` is
        None; 404 if there is none, or if ``version`` does not exist or was deleted."""
        if version is None:
            found = await self._store.get_version(user_id, None)
            if found is None:
                raise not_found("No current backup version")
        else:
            found = await self._existing(user_id, version)
        return {
            "algorithm": found.algorithm,
            "auth_data": found.auth_data,
            "count": found.count,
            "etag": str(found.etag),
            "version": str(found.version),
        }

    async def update_version(
        self,
        user_id: UserID,
        version: str,
        algorithm: str,
        auth_data: JsonDict,
        body_version: str | None,
    ) -> None:
        """``PUT /room_keys/version/{version}``: only ``auth_data`` changes; the algorithm,
        and the body's ``version`` if given, must match (400 M_INVALID_PARAM)."""
        if body_version is not None and body_version != version:
            raise invalid_param("Version in body does not match")
        async with self._locks.hold(user_id):
            found = await self._existing(user_id, version)
            if found.algorithm != algorithm:
                raise invalid_param("Algorithm does not match")
            await self._store.update_auth_data(user_id, found.version, auth_data)

    async def delete_version(self, user_id: UserID, version: str) -> None:
        """``DELETE /room_keys/version/{version}``: the version and its keys. Deleting a
        deleted version succeeds; one that never existed is a 404 (key_backup.yaml)."""
        number = parse_version(version)
        async with self._locks.hold(user_id):
            if number is None or not await self._store.delete_version(user_id, number):
                raise not_found("Unknown backup version")

    # -- keys -----------------------------------------------------------------------------

    async def upload_keys(self, user_id: UserID, version: str, rooms: JsonDict) -> JsonDict:
        """``PUT /room_keys/keys[/{roomId}[/{sessionId}]]``, in the general form (see
        ``parse_upload``). Only the current version takes keys: another existing version is
        403 M_WRONG_ROOM_KEYS_VERSION with ``current_version``, an unknown one 404. A key
        replaces a stored one only if it is better (``is_better``); the etag moves only if
        something was stored."""
        keys = parse_upload(rooms)
        async with self._locks.hold(user_id):
            current = await self._store.get_version(user_id, None)
            if current is None:
                raise not_found("Unknown backup version")
            if str(current.version) != version:
                await self._existing(user_id, version)
                raise MatrixError(
                    Errcode.WRONG_ROOM_KEYS_VERSION,
                    "Wrong backup version.",
                    current_version=str(current.version),
                )
            stored = await self._store.get_metadata(
                user_id, current.version, [(k.room_id, k.session_id) for k in keys]
            )
            changed = [
                key
                for key in keys
                if (old := stored.get((key.room_id, key.session_id))) is None
                or is_better(key.metadata, old)
            ]
            if not changed:
                return _update_response(current.etag, current.count)
            added = len(changed) - sum((k.room_id, k.session_id) in stored for k in changed)
            await self._store.write_keys(user_id, current.version, changed, added)
            return _update_response(current.etag + 1, current.count + added)

    async def get_all_keys(self, user_id: UserID, version: str) -> JsonDict:
        """``GET /room_keys/keys``: ``{"rooms": {roomId: {"sessions": {...}}}}``."""
        found = await self._existing(user_id, version)
        rooms: dict[str, JsonDict] = {}
        for key in await self._store.get_keys(user_id, found.version):
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = _key_data(
                key
            )
        return {"rooms": rooms}

    async def get_room_keys(self, user_id: UserID, version: str, room_id: str) -> JsonDict:
        """``GET /room_keys/keys/{roomId}``: ``{"sessions": {...}}``, empty if the room has
        no keys (key_backup.yaml)."""
        found = await self._existing(user_id, version)
        keys = await self._store.get_keys(user_id, found.version, room_id)
        return {"sessions": {key.session_id: _key_data(key) for key in keys}}

    async def get_session_key(
        self, user_id: UserID, version: str, room_id: str, session_id: str
    ) -> JsonDict:
        """``GET /room_keys/keys/{roomId}/{sessionId}``: the key data; 404 if none."""
        found = await self._existing(user_id, version)
        keys = await self._store.get_keys(user_id, found.version, room_id, session_id)
        if not keys:
            raise not_found("No room_keys found")
        return _key_data(keys[0])

    async def delete_keys(
        self,
        user_id: UserID,
        version: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        """``DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`` from any existing version
        (not only the current one): ``{"etag", "count"}`` after the deletion."""
        async with self._locks.hold(user_id):
            found = await self._existing(user_id, version)
            deleted = await self._store.delete_keys(user_id, found.version, room_id, session_id)
            etag = found.etag + 1 if deleted else found.etag
            return _update_response(etag, found.count - deleted)
