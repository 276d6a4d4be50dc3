"""FederationOutboxStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from peyvand.storage.database import Database
from peyvand.storage.federation_outbox import (
    FederationOutboxStore,
    OutboxRow,
    PendingEdu,
    PendingPdu,
)
from peyvand.types import ServerName

ONE = ServerName("one.example")
TWO = ServerName("two.example")


def pdu(destination: ServerName, n: int, room: str = "!r:here") -> OutboxRow:
    return OutboxRow.for_pdu(destination, room, f"$e{n}")


def edu(destination: ServerName, n: int) -> OutboxRow:
    return OutboxRow.for_edu(destination, "m.direct_to_device", {"n": n})


async def test_rows_commit_with_the_callers_transaction(database: Database) -> None:
    store = FederationOutboxStore(database)
    assert await store.destinations_with_pending() == []
    async with database.transaction() as txn:
        await store.add_in_txn(txn, [pdu(ONE, 1), pdu(TWO, 2)])
    with pytest.raises(RuntimeError):
        async with database.transaction() as txn:
            await store.add_in_txn(txn, [pdu(ONE, 3)])
            raise RuntimeError("the event commit failed")
    await store.add([edu(TWO, 4), pdu(ONE, 5)])
    await store.add_in_txn(database, [])
    await store.add([])
    assert await store.destinations_with_pending() == [ONE, TWO]
    # Numbered in the order queued; a rolled-back number is not used again.
    assert (await store.pending(ONE, 50, 100)).pdus == [
        PendingPdu(1, "!r:here", "$e1"),
        PendingPdu(5, "!r:here", "$e5"),
    ]
    assert [e.seq for e in (await store.pending(TWO, 0, 100)).edus] == [4]


async def test_a_second_store_numbers_past_the_queued_rows(database: Database) -> None:
    """A restarted process (SQLite) or another process (PostgreSQL's sequence) never
    reuses a queued row's number."""
    await FederationOutboxStore(database).add([pdu(ONE, 1), pdu(ONE, 2)])
    await FederationOutboxStore(database).add([pdu(ONE, 3)])
    assert [p.seq for p in (await FederationOutboxStore(database).pending(ONE, 9, 0)).pdus] == [
        1,
        2,
        3,
    ]


async def test_pending_is_oldest_first_per_kind_and_limited(database: Database) -> None:
    store = FederationOutboxStore(database)
    rows = [edu(ONE, s) if s % 3 == 0 else pdu(ONE, s) for s in range(1, 31)]
    await store.add([*rows, pdu(TWO, 31)])
    batch = await store.pending(ONE, 5, 3)
    assert [p.seq for p in batch.pdus] == [1, 2, 4, 5, 7]
    assert batch.edus == [
        PendingEdu(s, {"edu_type": "m.direct_to_device", "content": {"n": s}}) for s in (3, 6, 9)
    ]
    assert (await store.pending(ONE, 0, 0)).pdus == []
    assert await store.count_pdus(ONE) == 20
    assert await store.count_pdus(ServerName("nobody.example")) == 0


async def test_delete_removes_exactly_the_given_rows_in_batches(database: Database) -> None:
    store = FederationOutboxStore(database)
    await store.add([pdu(ONE, s) for s in range(1, 1_301)] + [pdu(TWO, 1)])
    await store.delete(ONE, list(range(1, 1_201)))
    await store.delete(ONE, [])
    assert [p.seq for p in (await store.pending(ONE, 500, 0)).pdus] == list(range(1_201, 1_301))
    assert await store.count_pdus(TWO) == 1
    await store.delete_destination(ONE)
    assert await store.destinations_with_pending() == [TWO]


async def test_collapse_keeps_the_newest_pdu_per_room_and_every_edu(database: Database) -> None:
    store = FederationOutboxStore(database)
    rows = [pdu(ONE, s, f"!room{s % 3}:here") for s in range(1, 11)]
    await store.add([*rows, edu(ONE, 11), pdu(TWO, 12, "!room0:here"), pdu(TWO, 13, "!room0:here")])
    assert await store.collapse_to_latest_per_room(ONE) == 7
    batch = await store.pending(ONE, 50, 100)
    assert [(p.seq, p.room_id) for p in batch.pdus] == [
        (8, "!room2:here"),
        (9, "!room0:here"),
        (10, "!room1:here"),
    ]
    assert [e.seq for e in batch.edus] == [11]
    assert await store.collapse_to_latest_per_room(ONE) == 0
    assert await store.count_pdus(TWO) == 2


async def test_a_row_is_either_a_pdu_or_an_edu(database: Database) -> None:
    store = FederationOutboxStore(database)
    with pytest.raises(ValueError):
        await store.add([OutboxRow(ONE)])
    with pytest.raises(ValueError):
        await store.add([OutboxRow(ONE, event_id="$e", edu="{}", room_id="!r:here")])
    with pytest.raises(ValueError):
        await store.add([OutboxRow(ONE, event_id="$e")])
    assert await store.destinations_with_pending() == []
