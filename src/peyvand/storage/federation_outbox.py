"""The federation sender's durable per-destination queue. Schema: 015_federation_outbox.sql.

A row is one PDU (by event ID) or one durable EDU still to be sent to one destination
(Server-Server API, "Transactions"). Rows are numbered (``seq``) as they are inserted; the
sender reads a destination's oldest rows into a transaction and deletes exactly those rows
once the destination answered 200. PDU rows are written by the event writers' group
commits (``add_in_txn``), so an event and the rows that send it commit together.

On PostgreSQL the numbers come from the sequence ``federation_outbox_seq`` (schema
052), so every process of a deployment can queue rows; a row committed after one with a
higher number is still sent, as the sender reads whatever is queued, oldest first. On
SQLite (one process) they are counted in memory from the highest queued at first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from peyvand.storage.database import Connection, Database, iter_chunks, placeholders
from peyvand.types import JsonDict, ServerName

# Seqs per DELETE statement: well under both backends' parameter limits.
_CHUNK = 500

_INSERT_POSTGRES = (
    "INSERT INTO federation_outbox (destination, seq, room_id, event_id, edu)"
    " VALUES ($1, nextval('federation_outbox_seq'), $2, $3, $4)"
)
_INSERT_SQLITE = (
    "INSERT INTO federation_outbox (destination, seq, room_id, event_id, edu)"
    " VALUES ($1, $2, $3, $4, $5)"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A row to queue: a PDU (``room_id`` and ``event_id``) or an EDU (``edu``, the JSON
    text of ``{"edu_type", "content"}``). Build them with ``for_pdu`` / ``for_edu``."""

    destination: ServerName
    room_id: str | None = None
    event_id: str | None = None
    edu: str | None = None

    @classmethod
    def for_pdu(cls, destination: ServerName, room_id: str, event_id: str) -> OutboxRow:
        return cls(destination, room_id=room_id, event_id=event_id)

    @classmethod
    def for_edu(cls, destination: ServerName, edu_type: str, content: JsonDict) -> OutboxRow:
        edu = orjson.dumps({"edu_type": edu_type, "content": content}).decode()
        return cls(destination, edu=edu)


@dataclass(frozen=True, slots=True)
class PendingPdu:
    seq: int
    room_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class PendingEdu:
    seq: int
    # The EDU as sent: {"edu_type", "content"}.
    edu: JsonDict


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A destination's oldest queued rows, each list in seq order."""

    pdus: list[PendingPdu]
    edus: list[PendingEdu]


def _check(rows: Sequence[OutboxRow]) -> None:
    for row in rows:
        if (row.event_id is None) == (row.edu is None) or (
            row.event_id is not None and row.room_id is None
        ):
            raise ValueError(f"an outbox row is a PDU or an EDU: {row!r}")


class FederationOutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # SQLite: the next seq (None until the first insert reads the highest queued).
        self._next_seq: int | None = None

    async def add_in_txn(self, conn: Connection, rows: Sequence[OutboxRow]) -> None:
        """Queue ``rows``, numbered in their order, inside ``conn``'s transaction (the
        events' own group commit)."""
        if not rows:
            return
        _check(rows)
        if self._db.dialect == "postgres":
            values = [(r.destination, r.room_id, r.event_id, r.edu) for r in rows]
            await conn.executemany(_INSERT_POSTGRES, values)
            return
        if self._next_seq is None:
            self._next_seq = await self._max_seq(conn) + 1
        first, self._next_seq = self._next_seq, self._next_seq + len(rows)
        numbered = [
            (r.destination, seq, r.room_id, r.event_id, r.edu)
            for seq, r in enumerate(rows, start=first)
        ]
        await conn.executemany(_INSERT_SQLITE, numbered)

    async def add(self, rows: Sequence[OutboxRow]) -> None:
        """Queue ``rows``, numbered in their order, in a transaction of their own."""
        if rows:
            async with self._db.transaction() as txn:
                await self.add_in_txn(txn, rows)

    @staticmethod
    async def _max_seq(conn: Connection) -> int:
        """The highest queued seq (0 if nothing is queued). Rows are deleted once sent, so
        this may go back; new rows only need seqs above every row still queued."""
        return int(await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM federation_outbox"))

    async def destinations_with_pending(self) -> list[ServerName]:
        """Every destination with at least one queued row, sorted."""
        # One index probe per destination (a skip scan of the primary key), not a pass
        # over every queued row: a dead server's rows pile up.
        rows = await self._db.fetch(
            "WITH RECURSIVE d(destination) AS ("
            "SELECT MIN(destination) FROM federation_outbox"
            " UNION ALL SELECT (SELECT MIN(destination) FROM federation_outbox"
            " WHERE destination > d.destination) FROM d WHERE d.destination IS NOT NULL"
            ") SELECT destination FROM d WHERE destination IS NOT NULL"
        )
        return [ServerName(row["destination"]) for row in rows]

    async def pending(
        self, destination: ServerName, limit_pdus: int, limit_edus: int
    ) -> PendingBatch:
        """The oldest ``limit_pdus`` PDU rows and ``limit_edus`` EDU rows of ``destination``."""
        pdus: list[PendingPdu] = []
        edus: list[PendingEdu] = []
        if limit_pdus > 0:
            rows = await self._db.fetch(
                "SELECT seq, room_id, event_id FROM federation_outbox"
                " WHERE destination = $1 AND event_id IS NOT NULL ORDER BY seq LIMIT $2",
                destination,
                limit_pdus,
            )
            pdus = [PendingPdu(int(r["seq"]), r["room_id"], r["event_id"]) for r in rows]
        if limit_edus > 0:
            rows = await self._db.fetch(
                "SELECT seq, edu FROM federation_outbox"
                " WHERE destination = $1 AND edu IS NOT NULL ORDER BY seq LIMIT $2",
                destination,
                limit_edus,
            )
            edus = [PendingEdu(int(r["seq"]), orjson.loads(r["edu"])) for r in rows]
        return PendingBatch(pdus, edus)

    async def count_pdus(self, destination: ServerName) -> int:
        """How many PDU rows ``destination`` has queued (its backlog)."""
        return int(
            await self._db.fetchval(
                "SELECT COUNT(*) FROM federation_outbox"
                " WHERE destination = $1 AND event_id IS NOT NULL",
                destination,
            )
        )

    async def collapse_to_latest_per_room(self, destination: ServerName) -> int:
        """Catch-up: drop every PDU row of ``destination`` but the newest of each room (the
        receiver fetches the gap with /get_missing_events). EDU rows stay. Returns how many
        rows were dropped."""
        async with self._db.transaction() as txn:
            dropped = await txn.fetch(
                "DELETE FROM federation_outbox"
                " WHERE destination = $1 AND event_id IS NOT NULL AND seq NOT IN ("
                "SELECT MAX(seq) FROM federation_outbox"
                " WHERE destination = $1 AND event_id IS NOT NULL GROUP BY room_id"
                ") RETURNING seq",
                destination,
            )
        return len(dropped)

    async def delete(self, destination: ServerName, seqs: Sequence[int]) -> None:
        """Drop ``destination``'s rows at ``seqs`` (a sent transaction), in one transaction."""
        if not seqs:
            return
        async with self._db.transaction() as txn:
            async for chunk in iter_chunks(seqs, _CHUNK):
                await txn.execute(
                    "DELETE FROM federation_outbox"
                    f" WHERE destination = $1 AND seq IN ({placeholders(len(chunk), 2)})",
                    destination,
                    *chunk,
                )

    async def delete_destination(self, destination: ServerName) -> None:
        """Drop everything queued for ``destination`` (e.g. a server we may not talk to)."""
        await self._db.execute("DELETE FROM federation_outbox WHERE destination = $1", destination)
