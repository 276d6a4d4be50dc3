"""Each writing process's position in each stream (schema 048, issue 21): up to where
everything it wrote is committed. A position only moves forward.

One more row, ``PURGED_EVENTS``, is the highest events position deleted from storage (a
purged event, or an erased user's remote invite): the events stream resumes above it at
start (``EventStore.get_max_stream_ordering``), so deleting the newest positions never
lets a restart hand them out again, below the tokens clients already hold."""

from __future__ import annotations

from typing import Final

from peyvand.storage.database import Connection, Database
from peyvand.storage.leases import instance_lock_key

PURGED_EVENTS: Final = "events.purged"
_UPSERT: Final = (
    "INSERT INTO stream_positions (stream, instance, position) VALUES ($1, $2, $3)"
    " ON CONFLICT (stream, instance) DO UPDATE SET position = excluded.position"
    " WHERE stream_positions.position < excluded.position"
)


async def record_purged_events(txn: Connection, position: int) -> None:
    """Inside a purge's transaction: its events reached up to ``position``."""
    await txn.execute(_UPSERT, PURGED_EVENTS, "", position)


class StreamPositionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def advance(self, stream: str, instance: str, position: int) -> None:
        """Record ``instance``'s ``position`` in ``stream`` (a lower one than stored is
        ignored: a late write never moves a stream back)."""
        async with self._db.transaction() as txn:
            await txn.execute(_UPSERT, stream, instance, position)

    async def positions(self, stream: str) -> dict[str, int]:
        """Every writer's position in ``stream``."""
        rows = await self._db.fetch(
            "SELECT instance, position FROM stream_positions WHERE stream = $1", stream
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def advance_absent(self, stream: str, instance: str, position: int) -> bool:
        """Record ``position`` for ``instance`` only if no live process holds that
        instance name (PostgreSQL: its advisory lock, taken for the transaction so the
        process cannot start meanwhile; ``wiring.leased.InstanceName``). Whether it was
        recorded."""
        async with self._db.transaction() as txn:
            free = await txn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", instance_lock_key(instance)
            )
            if not free:
                return False
            await txn.execute(_UPSERT, stream, instance, position)
            return True


class StoodIn(RuntimeError):
    """Another event writer moved this one's position past a write in flight (it took
    this writer for absent): the write is refused, never stored below a position the
    readers passed."""


async def fence(txn: Connection, stream: str, instance: str, lowest: int) -> None:
    """Inside a writer's commit of positions from ``lowest`` up: refuse it (``StoodIn``)
    if ``instance``'s recorded position is already at or above ``lowest``. The row is
    read ``FOR SHARE``, so a stand-in's ``advance_absent`` waits for this commit, and one
    after it is refused."""
    position = await txn.fetchval(
        "SELECT position FROM stream_positions WHERE stream = $1 AND instance = $2 FOR SHARE",
        stream,
        instance,
    )
    if position is not None and int(position) >= lowest:
        raise StoodIn(
            f"{instance}'s {stream} position was moved to {position} by another writer, "
            f"past this commit's {lowest}"
        )
