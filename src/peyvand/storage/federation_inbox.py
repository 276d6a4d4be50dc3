"""Inbound transactions already processed (Server-Server API, "Transactions": a server
retries a transaction with the same txnId until it gets an answer, so the answer is kept
and given again)."""

from __future__ import annotations

import orjson

from peyvand.storage.database import Database
from peyvand.types import JsonDict, ServerName


class FederationInboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_response(self, origin: ServerName, txn_id: str) -> JsonDict | None:
        row = await self._db.fetchrow(
            "SELECT response FROM federation_received_txns WHERE origin = $1 AND txn_id = $2",
            origin,
            txn_id,
        )
        return None if row is None else dict(orjson.loads(row["response"]))

    async def put_response(
        self, origin: ServerName, txn_id: str, response: JsonDict, received_ts: int
    ) -> None:
        await self._db.execute(
            "INSERT INTO federation_received_txns (origin, txn_id, received_ts, response)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
            origin,
            txn_id,
            received_ts,
            orjson.dumps(response).decode(),
        )

    async def prune(self, before_ts: int) -> None:
        """Forget answers older than ``before_ts`` (retries stop long before)."""
        await self._db.execute(
            "DELETE FROM federation_received_txns WHERE received_ts < $1", before_ts
        )
