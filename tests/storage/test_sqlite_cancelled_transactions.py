"""A write transaction on SQLite whose task is cancelled at any await (its BEGIN, a
statement, its ROLLBACK) leaves the writer usable: the next transaction begins and commits
(before, a BEGIN cancelled in flight left the writer inside a transaction and every later
write failed with "cannot start a transaction within a transaction")."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from peyvand.storage.sqlite import SqliteDatabase


async def _writes(db: SqliteDatabase, value: int, steps: int) -> None:
    async with db.transaction() as txn:
        for _ in range(steps):
            await txn.execute("INSERT INTO t (v) VALUES ($1)", value)


@pytest.mark.parametrize("yields_before_cancel", [0, 1, 2, 3, 5, 8])
async def test_a_cancelled_transaction_leaves_the_writer_usable(
    tmp_path: Path, yields_before_cancel: int
) -> None:
    db = await SqliteDatabase.open(str(tmp_path / "t.db"))
    try:
        await db.execute("CREATE TABLE t (v INTEGER)")
        task = asyncio.create_task(_writes(db, 1, 3))
        for _ in range(yields_before_cancel):
            await asyncio.sleep(0)
        task.cancel()
        for _ in range(2):  # a second cancellation while it rolls back or finishes
            await asyncio.sleep(0)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            await _writes(db, 2, 1)
        rows = await db.fetch("SELECT v FROM t ORDER BY v")
        # The cancelled transaction committed whole or not at all; the next one committed.
        assert [r["v"] for r in rows] in ([2], [1, 1, 1, 2])
    finally:
        await db.close()
