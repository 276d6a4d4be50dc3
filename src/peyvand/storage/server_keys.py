"""Other servers' signing keys (Server-Server API, "Retrieving server keys").

One row per (server, key ID): the public key, until when it verifies signatures, when it
was fetched and the signed key response it came from. The key ring decides validity
(capping, old keys); this module stores what it is given. A key's ``valid_until_ts`` only
moves forward: a stale response (a notary's older copy, say) never shortens what a fresher
one promised.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from peyvand.storage.database import Database, iter_chunks, placeholders
from peyvand.types import ServerName

# (server, key ID) pairs per statement: two parameters each, well under both backends' limits.
_CHUNK = 300


@dataclass(frozen=True, slots=True)
class ServerKey:
    """``key`` is the unpadded Base64 public key of ``key_id`` (``ed25519:<version>``)."""

    server_name: ServerName
    key_id: str
    key: str
    valid_until_ts: int
    fetched_ts: int


@dataclass(frozen=True, slots=True)
class KeyResponse:
    """The keys from one signed key response, and that response's JSON text."""

    keys: Sequence[ServerKey]
    response_json: str


_UPSERT = (
    "INSERT INTO server_keys"
    " (server_name, key_id, verify_key, valid_until_ts, fetched_ts, key_json)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (server_name, key_id) DO UPDATE SET"
    " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
    " fetched_ts = excluded.fetched_ts, key_json = excluded.key_json"
    " WHERE server_keys.valid_until_ts <= excluded.valid_until_ts"
)


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store_responses(self, responses: Iterable[KeyResponse]) -> None:
        """Upsert the keys of several key responses (a notary's answer); one transaction.

        A row already valid until later than the new one is kept as it is."""
        rows = [
            (k.server_name, k.key_id, k.key, k.valid_until_ts, k.fetched_ts, r.response_json)
            for r in responses
            for k in r.keys
        ]
        if not rows:
            return
        async with self._db.transaction() as txn:
            await txn.executemany(_UPSERT, rows)

    async def get_keys(
        self, pairs: Collection[tuple[ServerName, str]]
    ) -> dict[tuple[ServerName, str], ServerKey]:
        """The stored keys among ``(server_name, key_id)`` pairs; unknown pairs are absent.

        One statement per 300 pairs."""
        found: dict[tuple[ServerName, str], ServerKey] = {}
        async for chunk in iter_chunks(list(set(pairs)), _CHUNK):
            values = ", ".join(f"(${2 * i + 1}, ${2 * i + 2})" for i in range(len(chunk)))
            rows = await self._db.fetch(
                "SELECT server_name, key_id, verify_key, valid_until_ts, fetched_ts"
                f" FROM server_keys WHERE (server_name, key_id) IN (VALUES {values})",
                *(item for pair in chunk for item in pair),
            )
            for row in rows:
                key = ServerKey(
                    ServerName(row["server_name"]),
                    row["key_id"],
                    row["verify_key"],
                    int(row["valid_until_ts"]),
                    int(row["fetched_ts"]),
                )
                found[(key.server_name, key.key_id)] = key
        return found

    async def get_responses(
        self, server_names: Collection[ServerName]
    ) -> dict[ServerName, list[str]]:
        """The distinct signed key responses stored for each server (JSON text), newest
        fetch first; servers without any are absent. One statement per 300 servers."""
        found: dict[ServerName, list[str]] = {}
        async for chunk in iter_chunks(list(set(server_names)), _CHUNK):
            rows = await self._db.fetch(
                "SELECT server_name, key_json, MAX(fetched_ts) AS last_fetched FROM server_keys"
                f" WHERE server_name IN ({placeholders(len(chunk))})"
                " GROUP BY server_name, key_json ORDER BY server_name, last_fetched DESC",
                *chunk,
            )
            for row in rows:
                found.setdefault(ServerName(row["server_name"]), []).append(row["key_json"])
        return found
