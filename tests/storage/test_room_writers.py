"""Which event writer creates each writer's rooms (schema 051, issue 21: "the dead
process's rooms are taken over"): a live writer takes over the rooms of one that is not
running, never those of one that runs; a running owner gets them back; every commit of
room events is refused unless its writer holds the rooms, and a change of holder waits
for the commits in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from harness.postgres import PostgresCluster
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.timeline.absent_writers import commit_fence
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.storage.leases import instance_lock_key
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.room_writers import Holding, NotHolder, RoomWriterStore, fence_rooms
from peyvand.types import EventID, RoomID

WAIT_SECONDS = 10.0


@pytest.fixture
async def dsn(postgres_cluster: PostgresCluster) -> str:
    dsn = postgres_cluster.create_database("room_writers")
    db = await PostgresDatabase.open(dsn)
    await run_migrations(db)
    await db.close()
    return dsn


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[PostgresDatabase]:
    db = await PostgresDatabase.open(dsn)
    yield db
    await db.close()


class Running:
    """Writers that run: each holds its instance name's lock on a connection of its own
    (``wiring.leased.InstanceName``)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._held: dict[str, asyncpg.Connection] = {}

    async def start(self, name: str) -> None:
        conn = await asyncpg.connect(self._dsn)
        await conn.execute("SELECT pg_advisory_lock($1)", instance_lock_key(name))
        self._held[name] = conn

    async def kill(self, name: str) -> None:
        await self._held.pop(name).close()

    async def close(self) -> None:
        for name in list(self._held):
            await self.kill(name)


@pytest.fixture
async def running(dsn: str) -> AsyncIterator[Running]:
    running = Running(dsn)
    yield running
    await running.close()


def _holders(**holders: tuple[str, int]) -> dict[str, Holding]:
    return {owner: Holding(*holding) for owner, holding in holders.items()}


async def test_rooms_go_to_a_live_writer_and_back_to_their_owner(
    db: PostgresDatabase, running: Running
) -> None:
    store = RoomWriterStore(db)
    for name in ("w1", "w2", "w3"):
        await running.start(name)
        await store.register(name)
    assert await store.holders() == _holders(w1=("w1", 0), w2=("w2", 0), w3=("w3", 0))
    # Running writers keep their rooms.
    assert not await store.take("w2", "w1")
    await running.kill("w2")
    assert await store.take("w2", "w1")
    assert await store.holders() == _holders(w1=("w1", 0), w2=("w1", 1), w3=("w3", 0))
    # Their holder runs: nobody else takes them, and it does not hand them back yet.
    assert not await store.take("w2", "w3")
    assert not await store.hand_back("w2", "w1")
    # The holder dies too: another live writer takes them.
    await running.kill("w1")
    assert await store.take("w2", "w3")
    assert await store.take("w1", "w3")
    # The owner runs again: it takes them back from a dead holder; a live holder hands
    # them back once the owner serves (only the holder can).
    await running.start("w1")
    await running.start("w2")
    await store.register("w2")
    assert not await store.hand_back("w2", "w3")
    await store.want_back("w2")
    assert not await store.hand_back("w2", "w1")
    assert await store.hand_back("w2", "w3")
    assert not await store.take("w1", "w2")
    await store.want_back("w1")
    assert await store.hand_back("w1", "w3")
    assert await store.holders() == _holders(w1=("w1", 2), w2=("w2", 3), w3=("w3", 0))


async def test_a_writer_never_registered_is_taken_over(
    db: PostgresDatabase, running: Running
) -> None:
    store = RoomWriterStore(db)
    await running.start("w1")
    assert await store.holders() == {}
    assert await store.take("w2", "w1")
    assert await store.holders() == _holders(w2=("w1", 1))
    await running.start("w2")
    await store.register("w2")  # its row stays: the holder hands the rooms back
    assert await store.holders() == _holders(w2=("w1", 1))
    await store.want_back("w2")
    # Wanted back by a run that died: the next run asks again once it serves.
    await running.kill("w2")
    await running.start("w2")
    await store.register("w2")
    assert not await store.hand_back("w2", "w1")
    await store.want_back("w2")
    assert await store.hand_back("w2", "w1")


async def test_only_the_holder_commits_and_a_takeover_waits_for_its_commit(
    db: PostgresDatabase, running: Running
) -> None:
    store = RoomWriterStore(db)
    await running.start("w1")
    for name in ("w1", "w2"):
        await store.register(name)
    async with db.transaction() as txn:
        await fence_rooms(txn, "w2", {"w2": 0})
        await fence_rooms(txn, "w1", {"w1": 0})
        with pytest.raises(NotHolder):
            await fence_rooms(txn, "w1", {"w1": 0, "w2": 0})
    async with db.transaction() as txn:
        # w2's commit in flight (w2 died meanwhile, its name free): the takeover waits.
        await fence_rooms(txn, "w2", {"w2": 0})
        taking = asyncio.create_task(store.take("w2", "w1"))
        await asyncio.sleep(0.3)
        assert not taking.done()
    async with asyncio.timeout(WAIT_SECONDS):
        assert await taking
    async with db.transaction() as txn:
        with pytest.raises(NotHolder):
            await fence_rooms(txn, "w2", {"w2": 0})
        # A writer that missed the change (holding them at an older generation).
        with pytest.raises(NotHolder):
            await fence_rooms(txn, "w1", {"w2": 0})
        await fence_rooms(txn, "w1", {"w1": 0, "w2": 1})


def _event(room_id: str, position: int, holding: int | None) -> EventToPersist:
    pdu = Pdu({"type": "m.room.message", "room_id": room_id}, EventID(f"$e{position}"),
              KNOWN_ROOM_VERSIONS["11"])  # fmt: skip
    return replace(EventToPersist(pdu, position, 1, None, None, None, None, ()), holding=holding)


async def test_an_event_built_before_a_change_of_holder_is_refused_after_it(
    db: PostgresDatabase, running: Running
) -> None:
    """w1 built an event of w2's room while holding them (generation 1); the rooms went
    to another writer and came back to w1 (generation 3) before the commit: built on
    a view of the room that may be stale, it is refused; one built since commits."""
    store = RoomWriterStore(db)
    await running.start("w1")
    for _ in range(3):
        assert await store.take("w2", "w1")
        async with db.transaction() as txn:
            await txn.execute("UPDATE room_writers SET holder = 'w3' WHERE owner = 'w2'")
    assert await store.take("w2", "w1")
    owners = RoomOwners(("w1", "w2"))
    owners.update(await store.holders())
    generation = owners.holding("w2").generation
    room = next(f"!{c}:test" for c in "abcdefgh" if owners.shard(RoomID(f"!{c}:test")) == "w2")
    fence = commit_fence("w1", owners)
    for batch, refused in (
        ([_event(room, 2, generation - 2)], True),
        ([_event(room, 2, generation - 2), _event(room, 4, generation)], True),
        ([_event(room, 4, generation)], False),
        ([_event(room, 4, None)], False),
    ):
        write = await fence(batch)
        assert write is not None
        async with db.transaction() as txn:
            if refused:
                with pytest.raises(NotHolder):
                    await write(txn)
            else:
                await write(txn)
