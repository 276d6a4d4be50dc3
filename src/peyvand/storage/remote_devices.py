"""Device lists over federation: each local user's ``m.device_list_update`` sequence, and
the cache of remote users' devices and cross-signing keys (Server-Server API, "Device
Management", "End-to-End Encryption").

The caller serialises the writes of one user, so a cache never mixes two updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peyvand.storage.database import Connection, Database
from peyvand.types import UserID


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    device_id: str
    display_name: str | None
    # The device's DeviceKeys as JSON text; None if it has no keys.
    keys_json: str | None


@dataclass(frozen=True, slots=True)
class RemoteDeviceList:
    """A remote user's devices as this server knows them."""

    user_id: UserID
    # The last update applied (None: never fetched).
    stream_id: int | None
    # An update was missed: fetch the list again before trusting it.
    stale: bool
    devices: tuple[RemoteDevice, ...]
    # key type ("master", "self_signing") -> the key's JSON text.
    cross_signing: tuple[tuple[str, str], ...]


class RemoteDeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Local users' sequences ------------------------------------------------------------

    async def get_local_stream_id(self, user_id: UserID) -> int:
        """The stream_id of the last update sent for ``user_id`` (0 if none)."""
        value = await self._db.fetchval(
            "SELECT stream_id FROM local_device_list_streams WHERE user_id = $1", user_id
        )
        return int(value or 0)

    async def allocate_local_stream_ids(self, user_id: UserID, count: int) -> int:
        """Take the next ``count`` stream IDs of ``user_id``; return the last one taken
        before them (0 if none): the new IDs are that + 1 ... that + ``count``."""
        async with self._db.transaction() as txn:
            last = await txn.fetchval(
                "INSERT INTO local_device_list_streams (user_id, stream_id) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO UPDATE"
                " SET stream_id = local_device_list_streams.stream_id + excluded.stream_id"
                " RETURNING stream_id",
                user_id,
                count,
            )
        return int(last) - count

    # Remote users' caches --------------------------------------------------------------

    async def get_device_list(self, user_id: UserID) -> RemoteDeviceList | None:
        row = await self._db.fetchrow(
            "SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1", user_id
        )
        if row is None:
            return None
        devices = await self._db.fetch(
            "SELECT device_id, display_name, keys FROM remote_devices WHERE user_id = $1"
            " ORDER BY device_id",
            user_id,
        )
        keys = await self._db.fetch(
            "SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = $1"
            " ORDER BY key_type",
            user_id,
        )
        return RemoteDeviceList(
            user_id,
            None if row["stream_id"] is None else int(row["stream_id"]),
            bool(row["stale"]),
            tuple(RemoteDevice(d["device_id"], d["display_name"], d["keys"]) for d in devices),
            tuple((k["key_type"], k["key_json"]) for k in keys),
        )

    async def get_stale_users(self, limit: int) -> list[UserID]:
        rows = await self._db.fetch(
            "SELECT user_id FROM remote_device_lists WHERE stale ORDER BY user_id LIMIT $1",
            limit,
        )
        return [UserID(row["user_id"]) for row in rows]

    async def mark_stale(self, user_id: UserID) -> None:
        """The cache of ``user_id`` missed an update (or was never fetched)."""
        await self._db.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale) VALUES ($1, NULL, TRUE)"
            " ON CONFLICT (user_id) DO UPDATE SET stale = TRUE",
            user_id,
        )

    async def apply_update(
        self, user_id: UserID, stream_id: int, device: RemoteDevice, *, deleted: bool
    ) -> None:
        """Apply one ``m.device_list_update``: replace (or delete) one device and move the
        user's last applied stream_id, in one transaction (the list's row locked first:
        ``replace_device_list``)."""
        async with self._db.transaction() as txn:
            if self._db.dialect == "postgres":
                await txn.execute(
                    "SELECT 1 FROM remote_device_lists WHERE user_id = $1 FOR UPDATE", user_id
                )
            await txn.execute(
                "DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2",
                user_id,
                device.device_id,
            )
            if not deleted:
                await _insert_devices(txn, user_id, [device])
            await txn.execute(
                "UPDATE remote_device_lists SET stream_id = $2 WHERE user_id = $1",
                user_id,
                stream_id,
            )

    async def set_cross_signing_keys(self, user_id: UserID, keys: Mapping[str, str]) -> None:
        """Replace some of the user's cross-signing keys (key type -> JSON text). A user
        not cached yet gets a stale entry: their devices are still to be fetched."""
        async with self._db.transaction() as txn:
            await txn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, stale)"
                " VALUES ($1, NULL, TRUE) ON CONFLICT (user_id) DO NOTHING",
                user_id,
            )
            await _upsert_cross_signing(txn, user_id, keys)

    async def forget_device_list(self, user_id: UserID) -> None:
        """Drop the cache of a user no local user shares a room with any more."""
        async with self._db.transaction() as txn:
            for table in ("remote_devices", "remote_cross_signing_keys", "remote_device_lists"):
                await txn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)

    async def replace_device_list(
        self,
        user_id: UserID,
        stream_id: int,
        devices: Sequence[RemoteDevice],
        cross_signing: Mapping[str, str],
    ) -> None:
        """Store a freshly fetched device list (GET /user/devices) in place of the cache,
        no longer stale, in one transaction; unless the cache holds a newer one, not
        stale (another process of a deployment applied an update while this one fetched):
        that one stays. The list's row is locked first, so an update and a replacement
        of the same user's list follow one another."""
        lock = " FOR UPDATE" if self._db.dialect == "postgres" else ""
        async with self._db.transaction() as txn:
            held = await txn.fetchrow(
                f"SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1{lock}",
                user_id,
            )
            if (
                held is not None
                and not held["stale"]
                and held["stream_id"] is not None
                and int(held["stream_id"]) > stream_id
            ):
                return
            await txn.execute("DELETE FROM remote_devices WHERE user_id = $1", user_id)
            await txn.execute("DELETE FROM remote_cross_signing_keys WHERE user_id = $1", user_id)
            await _insert_devices(txn, user_id, devices)
            await _upsert_cross_signing(txn, user_id, cross_signing)
            await txn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, stale)"
                " VALUES ($1, $2, FALSE) ON CONFLICT (user_id) DO UPDATE"
                " SET stream_id = excluded.stream_id, stale = FALSE",
                user_id,
                stream_id,
            )


async def _insert_devices(
    txn: Connection, user_id: UserID, devices: Sequence[RemoteDevice]
) -> None:
    if devices:
        await txn.executemany(
            "INSERT INTO remote_devices (user_id, device_id, display_name, keys)"
            " VALUES ($1, $2, $3, $4)",
            [(user_id, d.device_id, d.display_name, d.keys_json) for d in devices],
        )


async def _upsert_cross_signing(txn: Connection, user_id: UserID, keys: Mapping[str, str]) -> None:
    if keys:
        await txn.executemany(
            "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id, key_type) DO UPDATE"
            " SET key_json = excluded.key_json",
            [(user_id, key_type, key_json) for key_type, key_json in keys.items()],
        )
