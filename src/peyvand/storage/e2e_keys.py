"""End-to-end encryption keys storage (Client-Server API, "End-to-End Encryption").

Device identity keys, one-time keys, fallback keys, cross-signing keys and the signatures
uploaded through ``/keys/signatures/upload``. Key objects are stored as the JSON text the
service hands over (canonical JSON); this module never interprets them.

Claiming is atomic per key on both backends: ``DELETE ... RETURNING`` hands a one-time
key to exactly one caller, however many claim at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peyvand.storage.database import Connection, Database, Row, iter_chunks, placeholders
from peyvand.types import DeviceID, UserID

# Rows per statement for IN-lists (well under both backends' parameter limits).
_CHUNK = 300
# Rounds of claiming: on PostgreSQL a claim that lost a race for a key retries with the
# device's next key rather than falling back while one-time keys remain.
_CLAIM_ROUNDS = 5

# (user, device, algorithm) of one /keys/claim request item.
ClaimKey = tuple[UserID, DeviceID, str]


@dataclass(frozen=True, slots=True)
class DeviceKeysRow:
    user_id: UserID
    device_id: DeviceID
    key_json: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class CrossSigningKeyRow:
    user_id: UserID
    key_type: str
    public_key: str
    key_json: str


@dataclass(frozen=True, slots=True)
class SignatureRow:
    """``user_id``'s key ``key_id`` signed ``target_device_id`` (a device ID or a
    cross-signing public key) of ``target_user_id``."""

    target_user_id: UserID
    target_device_id: str
    user_id: UserID
    key_id: str
    signature: str


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    key_id: str  # without the algorithm
    key_json: str
    fallback: bool


@dataclass(frozen=True, slots=True)
class NewKey:
    """A one-time or fallback key to store: ``<algorithm>:<key_id>`` and its JSON."""

    algorithm: str
    key_id: str
    key_json: str


def _signature(row: Row) -> SignatureRow:
    return SignatureRow(
        target_user_id=UserID(row["target_user_id"]),
        target_device_id=row["target_device_id"],
        user_id=UserID(row["user_id"]),
        key_id=row["key_id"],
        signature=row["signature"],
    )


def _values(count: int, width: int, start: int = 1) -> str:
    """``VALUES ($1, $2), ($3, $4), ...``: ``count`` tuples of ``width`` parameters."""
    rows = (f"({placeholders(width, start + i * width)})" for i in range(count))
    return "VALUES " + ", ".join(rows)


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Uploads -------------------------------------------------------------------------

    async def get_device_keys_json(self, user_id: UserID, device_id: DeviceID) -> str | None:
        """The stored identity keys of one device, or None."""
        value: str | None = await self._db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return value

    async def get_one_time_keys(
        self, user_id: UserID, device_id: DeviceID, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The stored JSON of those of ``keys`` ((algorithm, key_id) pairs) that exist."""
        found: dict[tuple[str, str], str] = {}
        async for chunk in iter_chunks(keys, _CHUNK):
            rows = await self._db.fetch(
                "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys "
                "WHERE user_id = $1 AND device_id = $2 "
                f"AND (algorithm, key_id) IN ({_values(len(chunk), 2, 3)})",
                user_id,
                device_id,
                *(value for pair in chunk for value in pair),
            )
            for row in rows:
                found[(row["algorithm"], row["key_id"])] = row["key_json"]
        return found

    async def count_one_time_keys(self, user_id: UserID, device_id: DeviceID) -> dict[str, int]:
        """Unclaimed one-time keys of a device per algorithm (one indexed query)."""
        rows = await self._db.fetch(
            "SELECT algorithm, COUNT(*) AS n FROM e2e_one_time_keys "
            "WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
            user_id,
            device_id,
        )
        return {row["algorithm"]: int(row["n"]) for row in rows}

    async def unused_fallback_key_types(self, user_id: UserID, device_id: DeviceID) -> list[str]:
        """The algorithms of the device's fallback keys not yet handed out."""
        rows = await self._db.fetch(
            "SELECT algorithm FROM e2e_fallback_keys "
            "WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm",
            user_id,
            device_id,
        )
        return [row["algorithm"] for row in rows]

    async def store_keys(
        self,
        user_id: UserID,
        device_id: DeviceID,
        *,
        device_keys_json: str | None,
        one_time_keys: Sequence[NewKey],
        fallback_keys: Sequence[NewKey],
        now_ms: int,
    ) -> None:
        """Store one /keys/upload in one transaction (all of it or nothing).

        One-time keys already stored are kept as they are. A fallback key replaces the
        device's key of its algorithm and is unused again, unless it is the same key.
        """
        async with self._db.transaction() as txn:
            if device_keys_json is not None:
                await txn.execute(
                    "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts_added_ms) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE "
                    "SET key_json = excluded.key_json, ts_added_ms = excluded.ts_added_ms",
                    user_id,
                    device_id,
                    device_keys_json,
                    now_ms,
                )
            if one_time_keys:
                await txn.executemany(
                    "INSERT INTO e2e_one_time_keys "
                    "(user_id, device_id, algorithm, key_id, key_json, ts_added_ms) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    [
                        (user_id, device_id, k.algorithm, k.key_id, k.key_json, now_ms)
                        for k in one_time_keys
                    ],
                )
            if fallback_keys:
                await txn.executemany(
                    "INSERT INTO e2e_fallback_keys "
                    "(user_id, device_id, algorithm, key_id, key_json, used) "
                    "VALUES ($1, $2, $3, $4, $5, FALSE) "
                    "ON CONFLICT (user_id, device_id, algorithm) DO UPDATE "
                    "SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE "
                    "WHERE e2e_fallback_keys.key_id <> excluded.key_id "
                    "OR e2e_fallback_keys.key_json <> excluded.key_json",
                    [
                        (user_id, device_id, k.algorithm, k.key_id, k.key_json)
                        for k in fallback_keys
                    ],
                )

    # Queries -------------------------------------------------------------------------

    async def get_device_keys(
        self, users: Sequence[UserID], devices: Sequence[tuple[UserID, DeviceID]]
    ) -> list[DeviceKeysRow]:
        """Identity keys of every device of ``users`` and of the ``devices`` listed.

        Only devices that still exist are returned (joined with ``devices``), with their
        display names.
        """
        select = (
            "SELECT k.user_id, k.device_id, k.key_json, d.display_name "
            "FROM e2e_device_keys AS k JOIN devices AS d "
            "ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE "
        )
        rows: list[Row] = []
        async for chunk in iter_chunks(users, _CHUNK):
            rows += await self._db.fetch(
                select + f"k.user_id IN ({placeholders(len(chunk))})", *chunk
            )
        async for pairs in iter_chunks(devices, _CHUNK):
            rows += await self._db.fetch(
                select + f"(k.user_id, k.device_id) IN ({_values(len(pairs), 2)})",
                *(value for pair in pairs for value in pair),
            )
        return [
            DeviceKeysRow(
                UserID(row["user_id"]),
                DeviceID(row["device_id"]),
                row["key_json"],
                row["display_name"],
            )
            for row in rows
        ]

    async def get_signatures(
        self, target_users: Sequence[UserID], viewer: UserID
    ) -> list[SignatureRow]:
        """Signatures on the keys of ``target_users`` made by their owners or ``viewer``."""
        rows: list[Row] = []
        async for chunk in iter_chunks(target_users, _CHUNK):
            rows += await self._db.fetch(
                "SELECT target_user_id, target_device_id, user_id, key_id, signature "
                "FROM e2e_cross_signing_signatures "
                f"WHERE target_user_id IN ({placeholders(len(chunk), 2)}) "
                "AND (user_id = target_user_id OR user_id = $1)",
                viewer,
                *chunk,
            )
        return [_signature(row) for row in rows]

    # Claims --------------------------------------------------------------------------

    async def claim_keys(self, claims: Sequence[ClaimKey]) -> dict[ClaimKey, ClaimedKey]:
        """Claim the oldest one-time key of each (user, device, algorithm), else its
        fallback key (marked used), in one transaction.

        Each one-time key is deleted by exactly one claim: ``DELETE ... RETURNING`` on
        SQLite's single writer and under PostgreSQL's row locks alike.
        """
        claimed: dict[ClaimKey, ClaimedKey] = {}
        if not claims:
            return claimed
        async with self._db.transaction() as txn:
            pending = list(dict.fromkeys(claims))
            for _ in range(_CLAIM_ROUNDS):
                got = await _claim_one_time_keys(txn, pending)
                claimed.update(got)
                pending = [c for c in pending if c not in got]
                if not pending or not await _have_one_time_keys(txn, pending):
                    break
            claimed.update(await _claim_fallback_keys(txn, pending))
        return claimed

    # Cross-signing -------------------------------------------------------------------

    async def get_cross_signing_keys(self, users: Sequence[UserID]) -> list[CrossSigningKeyRow]:
        rows: list[Row] = []
        async for chunk in iter_chunks(users, _CHUNK):
            rows += await self._db.fetch(
                "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys "
                f"WHERE user_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
        return [
            CrossSigningKeyRow(
                UserID(row["user_id"]), row["key_type"], row["public_key"], row["key_json"]
            )
            for row in rows
        ]

    async def set_cross_signing_keys(
        self, user_id: UserID, keys: Sequence[CrossSigningKeyRow], now_ms: int
    ) -> None:
        """Replace some of a user's cross-signing keys.

        Signatures made by a replaced key, and signatures of it, go with it: they can
        never verify against the new key.
        """
        async with self._db.transaction() as txn:
            for key in keys:
                old = await txn.fetchval(
                    "SELECT public_key FROM e2e_cross_signing_keys "
                    "WHERE user_id = $1 AND key_type = $2",
                    user_id,
                    key.key_type,
                )
                if old is not None and old != key.public_key:
                    await txn.execute(
                        "DELETE FROM e2e_cross_signing_signatures "
                        "WHERE (user_id = $1 AND key_id = $2) "
                        "OR (target_user_id = $1 AND target_device_id = $3)",
                        user_id,
                        f"ed25519:{old}",
                        old,
                    )
                await txn.execute(
                    "INSERT INTO e2e_cross_signing_keys "
                    "(user_id, key_type, public_key, key_json, ts_added_ms) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key_type) DO UPDATE "
                    "SET public_key = excluded.public_key, key_json = excluded.key_json, "
                    "ts_added_ms = excluded.ts_added_ms",
                    user_id,
                    key.key_type,
                    key.public_key,
                    key.key_json,
                    now_ms,
                )

    async def store_signatures(self, signatures: Iterable[SignatureRow]) -> None:
        """Add (or replace) signatures, all in one transaction."""
        rows = [
            (s.target_user_id, s.target_device_id, s.user_id, s.key_id, s.signature)
            for s in signatures
        ]
        if not rows:
            return
        async with self._db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO e2e_cross_signing_signatures "
                "(target_user_id, target_device_id, user_id, key_id, signature) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
                "(target_user_id, target_device_id, user_id, key_id) "
                "DO UPDATE SET signature = excluded.signature",
                rows,
            )

    # Deleted devices -----------------------------------------------------------------

    async def delete_keys_of_deleted_devices(self, user_id: UserID) -> bool:
        """Forget the keys of ``user_id``'s devices that no longer exist, and signatures
        of them or by them. True if a device's identity keys were among them."""
        gone = "NOT IN (SELECT device_id FROM devices WHERE user_id = $1)"
        async with self._db.transaction() as txn:
            removed = await txn.fetch(
                f"DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id {gone} "
                "RETURNING device_id",
                user_id,
            )
            for table in ("e2e_one_time_keys", "e2e_fallback_keys"):
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = $1 AND device_id {gone}", user_id
                )
            cross_signing = "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = $1"
            await txn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE "
                f"(target_user_id = $1 AND target_device_id {gone} "
                f"AND target_device_id NOT IN ({cross_signing})) "
                f"OR (user_id = $1 AND substr(key_id, 9) {gone} "
                f"AND substr(key_id, 9) NOT IN ({cross_signing}))",
                user_id,
            )
        return bool(removed)


async def _claim_one_time_keys(
    txn: Connection, claims: Sequence[ClaimKey]
) -> dict[ClaimKey, ClaimedKey]:
    claimed: dict[ClaimKey, ClaimedKey] = {}
    async for chunk in iter_chunks(claims, _CHUNK):
        rows = await txn.fetch(
            "DELETE FROM e2e_one_time_keys "
            "WHERE (user_id, device_id, algorithm, key_id) IN ("
            "SELECT user_id, device_id, algorithm, key_id FROM ("
            "SELECT user_id, device_id, algorithm, key_id, ROW_NUMBER() OVER ("
            "PARTITION BY user_id, device_id, algorithm ORDER BY ts_added_ms, key_id) AS n "
            "FROM e2e_one_time_keys "
            f"WHERE (user_id, device_id, algorithm) IN ({_values(len(chunk), 3)})"
            ") AS ranked WHERE n = 1) "
            "RETURNING user_id, device_id, algorithm, key_id, key_json",
            *(value for claim in chunk for value in claim),
        )
        for row in rows:
            key = (UserID(row["user_id"]), DeviceID(row["device_id"]), row["algorithm"])
            claimed[key] = ClaimedKey(row["key_id"], row["key_json"], fallback=False)
    return claimed


async def _have_one_time_keys(txn: Connection, claims: Sequence[ClaimKey]) -> bool:
    async for chunk in iter_chunks(claims, _CHUNK):
        found = await txn.fetchval(
            "SELECT 1 FROM e2e_one_time_keys "
            f"WHERE (user_id, device_id, algorithm) IN ({_values(len(chunk), 3)}) LIMIT 1",
            *(value for claim in chunk for value in claim),
        )
        if found is not None:
            return True
    return False


async def _claim_fallback_keys(
    txn: Connection, claims: Sequence[ClaimKey]
) -> dict[ClaimKey, ClaimedKey]:
    claimed: dict[ClaimKey, ClaimedKey] = {}
    async for chunk in iter_chunks(claims, _CHUNK):
        rows = await txn.fetch(
            "UPDATE e2e_fallback_keys SET used = TRUE "
            f"WHERE (user_id, device_id, algorithm) IN ({_values(len(chunk), 3)}) "
            "RETURNING user_id, device_id, algorithm, key_id, key_json",
            *(value for claim in chunk for value in claim),
        )
        for row in rows:
            key = (UserID(row["user_id"]), DeviceID(row["device_id"]), row["algorithm"])
            claimed[key] = ClaimedKey(row["key_id"], row["key_json"], fallback=True)
    return claimed
