"""Which event writer creates each writer's rooms now (schema 051, issue 21: "the dead
process's rooms are taken over"): a row per owner (a configured event writer, whose rooms
``services.timeline.room_owners`` names) and its holder, the owner itself or a live
writer that took its rooms over while it was down. No row: the owner holds them.

Whether a writer is live is whether its instance name's advisory lock is held
(``wiring.leased.InstanceName``); each check takes that lock for its transaction, so the
writer cannot start in between. Every commit of room events reads its rooms' rows ``FOR
SHARE`` (``fence_rooms``), so a change of holder waits for the commits in flight and the
holder's later commits are refused: a room's events are created by one writer at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from peyvand.storage.database import Connection, Database
from peyvand.storage.leases import not_running

_ROW: str = (
    "INSERT INTO room_writers (owner, holder) VALUES ($1, $1) ON CONFLICT (owner) DO NOTHING"
)
_MOVE: str = (
    "UPDATE room_writers SET holder = $2, generation = generation + 1, wanted_back = FALSE"
    " WHERE owner = $1"
)


class Holding(NamedTuple):
    """Who creates an owner's rooms' events, and how many times that changed."""

    holder: str
    generation: int


class NotHolder(RuntimeError):
    """A writer's commit names rooms whose owner's rooms another writer holds now, or
    held since this writer last looked (it took them over, or handed them back): the
    commit is refused."""


class RoomWriterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, owner: str) -> None:
        """At a writer's start: its row, holding its own rooms unless another writer
        holds them already (handed back once it serves: ``want_back``). Before the
        writer's first commit, so every commit finds its rows to lock."""
        async with self._db.transaction() as txn:
            await txn.execute(_ROW, owner)
            await txn.execute(
                "UPDATE room_writers SET wanted_back = FALSE WHERE owner = $1 AND wanted_back",
                owner,
            )

    async def want_back(self, owner: str) -> None:
        """The owner serves requests now: the writer holding its rooms may hand them
        back (``hand_back``)."""
        await self._db.execute(
            "UPDATE room_writers SET wanted_back = TRUE WHERE owner = $1 AND holder <> owner",
            owner,
        )

    async def holders(self) -> dict[str, Holding]:
        """Each owner with a row: who holds its rooms."""
        rows = await self._db.fetch("SELECT owner, holder, generation FROM room_writers")
        return {str(row[0]): Holding(str(row[1]), int(row[2])) for row in rows}

    async def take(self, owner: str, taker: str) -> bool:
        """Make ``taker`` the holder of ``owner``'s rooms if their holder is not running
        and either ``taker`` is the owner or the owner is not running either (a live
        owner takes its rooms back itself). Whether ``taker`` holds them now.

        The row is locked (which waits for the holder's commits) only once the writers
        are found not running: a check that finds them running holds no commit up."""
        async with self._db.transaction() as txn:
            await txn.execute(_ROW, owner)
            holder = await self._holder(txn, owner, lock=False)
            if holder == taker:
                return True
            for name in {holder, owner} - {taker}:
                if not await not_running(txn, name):
                    return False
            if await self._holder(txn, owner, lock=True) != holder:
                return False  # moved meanwhile: checked again next time
            await txn.execute(_MOVE, owner, taker)
            return True

    async def hand_back(self, owner: str, holder: str) -> bool:
        """Give ``owner``'s rooms back from ``holder`` if the owner runs and serves
        (``want_back``). Whether they were handed back."""
        async with self._db.transaction() as txn:
            wanted = await txn.fetchval(
                "SELECT wanted_back FROM room_writers WHERE owner = $1 AND holder = $2",
                owner,
                holder,
            )
            if not wanted or await not_running(txn, owner):
                return False
            if await self._holder(txn, owner, lock=True) != holder:
                return False
            await txn.execute(_MOVE, owner, owner)
            return True

    @staticmethod
    async def _holder(txn: Connection, owner: str, *, lock: bool) -> str:
        sql = "SELECT holder FROM room_writers WHERE owner = $1" + (" FOR UPDATE" if lock else "")
        return str(await txn.fetchval(sql, owner))


async def fence_rooms(txn: Connection, holder: str, owners: Mapping[str, int]) -> None:
    """Inside a commit of events in rooms of ``owners`` (each with the generation of its
    holding as the committing writer knows it): refuse it (``NotHolder``) unless
    ``holder`` holds each one's rooms, unchanged since. The rows are read ``FOR SHARE``:
    a change of holder waits for this commit."""
    rows = await txn.fetch(
        "SELECT owner, holder, generation FROM room_writers WHERE owner = ANY($1) FOR SHARE",
        list(owners),
    )
    found = {str(row[0]): Holding(str(row[1]), int(row[2])) for row in rows}
    refused = sorted(
        owner
        for owner, generation in owners.items()
        if found.get(owner, Holding(owner, 0)) != (holder, generation)
    )
    if refused:
        raise NotHolder(f"{holder} no longer creates the events of {', '.join(refused)}'s rooms")
