"""The audit log on both backends: AuditStore (append-only rows, serialised appends) and
AuditLog over it (the hash chain, and verify finding every kind of tampering done by
editing the rows directly in the database). docs/compliance.md."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import canonicaljson
import pytest

from peyvand.compliance.audit import AuditAction, AuditLog
from peyvand.storage.audit import GENESIS_HASH, AuditEntry, AuditRow, AuditStore
from peyvand.storage.database import Database
from peyvand.storage.errors import StorageError

ADMIN = "@admin:example.org"
T0 = 1_700_000_000.0


class Clock:
    """Seconds, one more on every reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def expected_hash(row: AuditRow) -> str:
    """The documented hash, computed independently of peyvand's helpers."""
    payload = {
        "seq": row.seq,
        "ts": row.ts,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "reason": row.reason,
        "details": json.loads(row.details),
        "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(canonicaljson.encode_canonical_json(payload)).hexdigest()


async def all_rows(db: Database) -> list[AuditRow]:
    return await AuditStore(db).page(0, 1000)


async def record_five(log: AuditLog) -> None:
    await log.record(ADMIN, AuditAction.HOLD, "!room:example.org", reason="case 17")
    await log.record(
        ADMIN, AuditAction.EXPORT, "@bob:example.org", details={"rooms": 3, "format": "json"}
    )
    await log.record(ADMIN, AuditAction.QUARANTINE, "mxc://example.org/abc", reason="abuse")
    await log.record(ADMIN, AuditAction.RELEASE, "!room:example.org", reason="case closed")
    await log.record("@other:example.org", AuditAction.TOKEN_ISSUED, "token:x1", details={})


async def test_entries_are_numbered_from_one_and_chained(database: Database) -> None:
    log = AuditLog(AuditStore(database), Clock())
    seqs = [
        await log.record(ADMIN, "hold", "!a:example.org", reason="litigation"),
        await log.record(ADMIN, "export", "@bob:example.org", details={"rooms": 2}),
        await log.record("@eve:example.org", "purge", "!b:example.org"),
    ]
    assert seqs == [1, 2, 3]

    rows = await all_rows(database)
    assert [(r.seq, r.ts, r.actor, r.action, r.target, r.reason) for r in rows] == [
        (1, 1_700_000_001_000, ADMIN, "hold", "!a:example.org", "litigation"),
        (2, 1_700_000_002_000, ADMIN, "export", "@bob:example.org", None),
        (3, 1_700_000_003_000, "@eve:example.org", "purge", "!b:example.org", None),
    ]
    assert [r.details for r in rows] == ["{}", '{"rooms":2}', "{}"]
    assert rows[0].prev_hash == GENESIS_HASH == "0" * 64
    assert rows[1].prev_hash == rows[0].hash
    assert rows[2].prev_hash == rows[1].hash
    assert all(r.hash == expected_hash(r) for r in rows)
    assert len({r.hash for r in rows}) == 3

    result = await log.verify()
    assert (result.ok, result.entries, result.first_bad_seq, result.problem) == (
        True,
        3,
        None,
        None,
    )
    assert result.last_hash == rows[2].hash
    assert result.as_json() == {
        "ok": True,
        "entries": 3,
        "first_bad_seq": None,
        "problem": None,
        "last_hash": rows[2].hash,
    }


async def test_an_empty_log_verifies(database: Database) -> None:
    result = await AuditLog(AuditStore(database)).verify()
    assert (result.ok, result.entries, result.last_hash) == (True, 0, None)
    assert await AuditLog(AuditStore(database)).entries(0, 10) == []


async def test_entries_are_read_as_json_pages(database: Database) -> None:
    log = AuditLog(AuditStore(database), Clock())
    await record_five(log)

    page = await log.entries(1, 2)
    assert [e["seq"] for e in page] == [2, 3]
    assert page[0] == {
        "seq": 2,
        "ts": 1_700_000_002_000,
        "actor": ADMIN,
        "action": "export",
        "target": "@bob:example.org",
        "reason": None,
        "details": {"rooms": 3, "format": "json"},
        "prev_hash": page[0]["prev_hash"],
        "hash": page[0]["hash"],
    }
    assert page[1]["prev_hash"] == page[0]["hash"]
    assert page[1]["reason"] == "abuse"
    assert [e["seq"] for e in await log.entries(4, 10)] == [5]
    assert await log.entries(5, 10) == []


async def test_iterate_all_reads_every_row_in_batches(database: Database) -> None:
    store = AuditStore(database)
    await record_five(AuditLog(store, Clock()))
    batches = [[r.seq for r in rows] async for rows in store.iterate_all(batch=2)]
    assert batches == [[1, 2], [3, 4], [5]]
    assert [[r.seq for r in rows] async for rows in store.iterate_all(batch=5)] == [[1, 2, 3, 4, 5]]


async def test_concurrent_records_chain_correctly(database: Database) -> None:
    store = AuditStore(database)
    # Two logs over one store stand for two processes: only the database serialises
    # appends between them (the advisory lock on PostgreSQL), each log's lock within it.
    logs = [AuditLog(store, Clock()), AuditLog(store, Clock())]
    seqs = await asyncio.gather(
        *(logs[i % 2].record(ADMIN, "purge", f"!room{i}:example.org") for i in range(40))
    )
    assert sorted(seqs) == list(range(1, 41))

    rows = await all_rows(database)
    assert [r.seq for r in rows] == list(range(1, 41))
    assert sorted(r.target for r in rows) == sorted(f"!room{i}:example.org" for i in range(40))
    for previous, row in itertools.pairwise(rows):
        assert row.prev_hash == previous.hash
    assert all(r.hash == expected_hash(r) for r in rows)
    assert (await logs[0].verify()).entries == 40


async def test_append_uses_the_seal_for_the_next_number(database: Database) -> None:
    store = AuditStore(database)
    seen: list[tuple[int, str]] = []

    def seal(seq: int, prev_hash: str) -> str:
        seen.append((seq, prev_hash))
        return f"{seq:064x}"

    entry = AuditEntry(5, ADMIN, "purge", "!r:example.org", None, "{}")
    first = await store.append(entry, seal)
    second = await store.append(entry, seal)
    assert seen == [(1, GENESIS_HASH), (2, f"{1:064x}")]
    assert (first.seq, first.hash, second.seq, second.prev_hash) == (1, f"{1:064x}", 2, first.hash)
    assert await store.page(0, 10) == [first, second]


async def test_the_schema_refuses_updates_and_deletes(database: Database) -> None:
    log = AuditLog(AuditStore(database), Clock())
    await record_five(log)
    with pytest.raises(StorageError, match="append-only"):
        await database.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 2")
    with pytest.raises(StorageError, match="append-only"):
        await database.execute("DELETE FROM audit_log WHERE seq = 5")
    if database.dialect == "postgres":
        with pytest.raises(StorageError, match="append-only"):
            await database.execute("TRUNCATE audit_log")
    assert len(await all_rows(database)) == 5
    assert (await log.verify()).ok


async def test_details_must_be_canonical_json(database: Database) -> None:
    log = AuditLog(AuditStore(database), Clock())
    with pytest.raises(ValueError, match="float"):
        await log.record(ADMIN, "export", "@bob:example.org", details={"ratio": 0.5})
    assert await all_rows(database) == []


# Tampering, as someone with write access to the database would do it.


async def tamper(db: Database, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run ``statements`` in one transaction with the append-only triggers out of the way."""
    if db.dialect == "postgres":
        lift = ["ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"]
    else:
        lift = ["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"]
    async with db.transaction() as txn:
        for sql in lift:
            await txn.execute(sql)
        for sql, args in statements:
            await txn.execute(sql, *args)


def sql(text: str, *args: Any) -> tuple[str, tuple[Any, ...]]:
    return text, args


_INSERT = (
    "INSERT INTO audit_log (seq, ts, actor, action, target, reason, details, prev_hash, hash)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


async def forge_in_the_middle(db: Database, rows: list[AuditRow]) -> None:
    """Make room after entry 2 and insert a forged entry 3 whose own hash is right."""
    forged = dataclasses.replace(rows[1], seq=3, action="release", prev_hash=rows[1].hash)
    forged = dataclasses.replace(forged, hash=expected_hash(forged))
    await tamper(
        db,
        sql("UPDATE audit_log SET seq = -seq WHERE seq > 2"),
        sql("UPDATE audit_log SET seq = 1 - seq WHERE seq < 0"),
        sql(_INSERT, *dataclasses.astuple(forged)),
    )


async def forge_at_the_end(db: Database, rows: list[AuditRow]) -> None:
    """Append a forged entry 6, linked to entry 5 but with a made-up hash."""
    forged = dataclasses.replace(
        rows[4], seq=6, prev_hash=rows[4].hash, hash=hashlib.sha256(b"forged").hexdigest()
    )
    await tamper(db, sql(_INSERT, *dataclasses.astuple(forged)))


def statements(
    *items: tuple[str, tuple[Any, ...]],
) -> Callable[[Database, list[AuditRow]], Awaitable[None]]:
    async def run(db: Database, rows: list[AuditRow]) -> None:
        await tamper(db, *items)

    return run


HASH_MISMATCH = "hash does not match the entry's contents"

# (how, first bad seq, problem, intact entries before it)
TAMPERING = {
    "changed actor": (
        statements(sql("UPDATE audit_log SET actor = '@mallory:example.org' WHERE seq = 3")),
        3, HASH_MISMATCH, 2,
    ),
    "changed ts": (statements(sql("UPDATE audit_log SET ts = ts + 1 WHERE seq = 2")),
                   2, HASH_MISMATCH, 1),
    "changed action": (statements(sql("UPDATE audit_log SET action = 'release' WHERE seq = 1")),
                       1, HASH_MISMATCH, 0),
    "changed target": (statements(sql("UPDATE audit_log SET target = '!x:y' WHERE seq = 5")),
                       5, HASH_MISMATCH, 4),
    "reason removed": (statements(sql("UPDATE audit_log SET reason = NULL WHERE seq = 4")),
                       4, HASH_MISMATCH, 3),
    "changed details": (
        statements(sql("UPDATE audit_log SET details = $1 WHERE seq = 2", '{"rooms":1}')),
        2, HASH_MISMATCH, 1,
    ),
    "details not JSON": (
        statements(sql("UPDATE audit_log SET details = 'rooms: 3' WHERE seq = 2")),
        2, "details are not valid JSON", 1,
    ),
    "changed hash": (
        statements(sql("UPDATE audit_log SET hash = $1 WHERE seq = 3", "ab" * 32)),
        3, HASH_MISMATCH, 2,
    ),
    "changed prev_hash": (
        statements(sql("UPDATE audit_log SET prev_hash = $1 WHERE seq = 3", "ab" * 32)),
        3, "prev_hash is not the hash of entry 2", 2,
    ),
    "deleted row": (statements(sql("DELETE FROM audit_log WHERE seq = 3")),
                    3, "entry 3 is missing", 2),
    "deleted rows": (statements(sql("DELETE FROM audit_log WHERE seq IN (2, 3)")),
                     2, "entries 2 to 3 are missing", 1),
    "deleted first row": (statements(sql("DELETE FROM audit_log WHERE seq = 1")),
                          1, "entry 1 is missing", 0),
    "swapped rows": (
        statements(
            sql("UPDATE audit_log SET seq = -2 WHERE seq = 2"),
            sql("UPDATE audit_log SET seq = 2 WHERE seq = 3"),
            sql("UPDATE audit_log SET seq = 3 WHERE seq = -2"),
        ),
        2, "prev_hash is not the hash of entry 1", 1,
    ),
    "forged row at the end": (forge_at_the_end, 6, HASH_MISMATCH, 5),
    "forged row in the middle": (forge_in_the_middle, 4, "prev_hash is not the hash of entry 3", 3),
    "numbering starts at 0": (
        statements(
            sql("UPDATE audit_log SET seq = -seq"),
            sql("UPDATE audit_log SET seq = -seq - 1"),
        ),
        0, "entry number 0 out of sequence (expected 1)", 0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", TAMPERING)
async def test_verify_finds_tampering(database: Database, case: str) -> None:
    how, bad_seq, problem, intact = TAMPERING[case]
    await record_five(AuditLog(AuditStore(database), Clock()))
    rows = await all_rows(database)
    await how(database, rows)

    # A fresh log, as after a restart or from the command line; batches of two, so
    # breaks at and across batch boundaries are both covered.
    result = await AuditLog(AuditStore(database)).verify(batch=2)
    assert (result.ok, result.first_bad_seq, result.problem, result.entries) == (
        False,
        bad_seq,
        problem,
        intact,
    )
    # The last intact entry's hash: what an operator can compare with a copy kept elsewhere.
    now = await all_rows(database)
    assert result.last_hash == (now[intact - 1].hash if intact else None)


async def test_removed_tail_is_noticed_by_the_process_that_recorded_it(database: Database) -> None:
    log = AuditLog(AuditStore(database), Clock())
    await record_five(log)
    await tamper(database, sql("DELETE FROM audit_log WHERE seq >= 4"))

    result = await log.verify()
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 4, 3)
    assert result.problem == "entries 4 to 5 recorded by this server are missing"
    # Another process cannot tell from the chain alone (docs/compliance.md): the last hash
    # it reports is what to keep elsewhere and compare.
    other = await AuditLog(AuditStore(database)).verify()
    assert (other.ok, other.entries) == (True, 3)
    assert other.last_hash == (await all_rows(database))[2].hash
