"""Delivery progress of application services (schema 043; Application Service API,
"Pushing events").

Each appservice has the events-stream position up to which it acknowledged every event,
the (opaque) position of the ephemeral data sent with them, the last transaction ID used
and at most one pending transaction: the body built and not yet acknowledged, sent again
unchanged until the appservice answers 200. A transaction is acknowledged in the same
database transaction that stores the next one (or alone when none follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from peyvand.storage.database import Connection, Database, placeholders
from peyvand.types import EventID, JsonDict, RoomID

__all__ = ["AppServiceProgress", "AppServiceTxnStore", "InviteEvent", "PendingTxn", "StreamEvent"]


@dataclass(frozen=True, slots=True)
class PendingTxn:
    """A transaction built for an appservice: its ID and body, and the positions it
    carries the appservice to once acknowledged."""

    txn_id: int
    body: JsonDict
    events_position: int
    extras_position: str | None
    event_count: int


@dataclass(frozen=True, slots=True)
class AppServiceProgress:
    events_position: int
    extras_position: str | None
    last_txn_id: int
    last_success_ts: int | None
    pending: PendingTxn | None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What deciding an appservice's interest needs of a stored event."""

    stream_ordering: int
    event_id: EventID
    room_id: RoomID
    type: str
    state_key: str | None
    sender: str
    # The room state after the event (None: an invite from another server).
    state_group: int | None


@dataclass(frozen=True, slots=True)
class InviteEvent:
    """An invite from another server to a room this server is not in (migration 018)."""

    event_id: EventID
    room_version: str
    pdu: JsonDict
    invite_state: list[JsonDict]


class AppServiceTxnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_progress(self, appservice_ids: Sequence[str]) -> dict[str, AppServiceProgress]:
        """The stored progress of those of ``appservice_ids`` that have any (two queries)."""
        if not appservice_ids:
            return {}
        marks = placeholders(len(appservice_ids))
        rows = await self._db.fetch(
            "SELECT appservice_id, events_position, extras_position, last_txn_id,"
            f" last_success_ts FROM appservice_positions WHERE appservice_id IN ({marks})",
            *appservice_ids,
        )
        pending_rows = await self._db.fetch(
            "SELECT appservice_id, txn_id, body, events_position, extras_position, event_count"
            f" FROM appservice_txns WHERE appservice_id IN ({marks})",
            *appservice_ids,
        )
        pending = {
            r["appservice_id"]: PendingTxn(
                int(r["txn_id"]),
                orjson.loads(r["body"]),
                int(r["events_position"]),
                r["extras_position"],
                int(r["event_count"]),
            )
            for r in pending_rows
        }
        return {
            r["appservice_id"]: AppServiceProgress(
                int(r["events_position"]),
                r["extras_position"],
                int(r["last_txn_id"]),
                r["last_success_ts"],
                pending.get(r["appservice_id"]),
            )
            for r in rows
        }

    async def add(self, appservice_ids: Sequence[str], events_position: int) -> None:
        """Progress rows for appservices seen for the first time, starting at
        ``events_position``; those that have one keep it."""
        await self._db.executemany(
            "INSERT INTO appservice_positions (appservice_id, events_position, last_txn_id)"
            " VALUES ($1, $2, 0) ON CONFLICT (appservice_id) DO NOTHING",
            [(appservice_id, events_position) for appservice_id in appservice_ids],
        )

    async def store_pending(
        self,
        appservice_id: str,
        txn: PendingTxn,
        answered: tuple[PendingTxn, int] | None = None,
    ) -> None:
        """Keep ``txn`` as the appservice's pending transaction and its ID as the last
        used; with ``answered`` (the transaction before it and when the appservice
        answered it 200), acknowledge that one in the same database transaction."""
        async with self._db.transaction() as conn:
            if answered is not None:
                await _acknowledge(conn, appservice_id, *answered)
            await conn.execute(
                "INSERT INTO appservice_txns (appservice_id, txn_id, body, events_position,"
                " extras_position, event_count) VALUES ($1, $2, $3, $4, $5, $6)",
                appservice_id,
                txn.txn_id,
                orjson.dumps(txn.body).decode(),
                txn.events_position,
                txn.extras_position,
                txn.event_count,
            )
            await conn.execute(
                "UPDATE appservice_positions SET last_txn_id = $2 WHERE appservice_id = $1",
                appservice_id,
                txn.txn_id,
            )

    async def acknowledge(self, appservice_id: str, txn: PendingTxn, now_ms: int) -> None:
        """The appservice answered 200 to ``txn`` at ``now_ms``: it is no longer pending
        and its positions become the appservice's."""
        async with self._db.transaction() as conn:
            await _acknowledge(conn, appservice_id, txn, now_ms)

    async def events_after(self, after: int, up_to: int, limit: int) -> list[StreamEvent]:
        """The stored events in ``(after, up_to]`` in stream order, at most ``limit``,
        with the invites from other servers kept apart (migration 018; not those held as
        message requests) among them."""
        rows = await self._db.fetch(
            "SELECT stream_ordering, event_id, room_id, type, state_key, sender, state_group"
            " FROM events"
            " WHERE stream_ordering > $1 AND stream_ordering <= $2"
            " ORDER BY stream_ordering LIMIT $3",
            after,
            up_to,
            limit,
        )
        invites = await self._db.fetch(
            "SELECT stream_ordering, event_id, room_id, 'm.room.member' AS type,"
            " user_id AS state_key, sender, NULL AS state_group FROM remote_invites"
            " WHERE stream_ordering > $1 AND stream_ordering <= $2"
            " AND membership = 'invite' AND NOT held ORDER BY stream_ordering LIMIT $3",
            after,
            up_to,
            limit,
        )
        found = [
            StreamEvent(
                int(r["stream_ordering"]),
                EventID(r["event_id"]),
                RoomID(r["room_id"]),
                r["type"],
                r["state_key"],
                r["sender"],
                None if r["state_group"] is None else int(r["state_group"]),
            )
            for r in [*rows, *invites]
        ]
        found.sort(key=lambda e: e.stream_ordering)
        return found[:limit]

    async def invites_at(self, positions: Sequence[int]) -> dict[int, InviteEvent]:
        """The invites from other servers kept at ``positions`` (those still there)."""
        if not positions:
            return {}
        rows = await self._db.fetch(
            "SELECT stream_ordering, event_id, room_version, pdu, invite_state"
            f" FROM remote_invites WHERE stream_ordering IN ({placeholders(len(positions))})",
            *positions,
        )
        return {
            int(r["stream_ordering"]): InviteEvent(
                EventID(r["event_id"]),
                r["room_version"],
                orjson.loads(r["pdu"]),
                orjson.loads(r["invite_state"]),
            )
            for r in rows
        }


async def _acknowledge(conn: Connection, appservice_id: str, txn: PendingTxn, now_ms: int) -> None:
    await conn.execute(
        "DELETE FROM appservice_txns WHERE appservice_id = $1 AND txn_id = $2",
        appservice_id,
        txn.txn_id,
    )
    await conn.execute(
        "UPDATE appservice_positions SET events_position = $2, extras_position = $3,"
        " last_success_ts = $4 WHERE appservice_id = $1",
        appservice_id,
        txn.events_position,
        txn.extras_position,
        now_ms,
    )
