"""The audit log's rows (docs/compliance.md): append-only, numbered from 1 without gaps.

This module keeps the rows and serialises appends; what a row's hash covers is the audit
log's business (``peyvand.compliance.audit``), handed to ``append`` as ``seal``. An append
reads the last row and inserts the next one in one transaction that holds the log's write
lock: on SQLite the single writer (``BEGIN IMMEDIATE``) is that lock; on PostgreSQL a
transaction-scoped advisory lock is taken first. (``SELECT ... FOR UPDATE`` on the last row
would not do: a second appender waiting on it reads that same row once it is released, not
the row inserted meanwhile, and picks the same number.)

The schema refuses ``UPDATE`` and ``DELETE`` (triggers); nothing here offers either.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from peyvand.storage.database import Database, Row

# ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64

# The key of the PostgreSQL advisory lock that serialises appends ("PEYVAUDT").
_APPEND_LOCK_KEY = 0x5045595641554454
# Below any seq, even a tampered one: verification must see every row.
_BEFORE_ALL = -(2**63)

_COLUMNS = "seq, ts, actor, action, target, reason, details, prev_hash, hash"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action, before it has a place in the chain. ``ts`` in milliseconds;
    ``details`` is the canonical JSON text of an object."""

    ts: int
    actor: str
    action: str
    target: str
    reason: str | None
    details: str


@dataclass(frozen=True, slots=True)
class AuditRow:
    """A stored entry: its number, contents, the previous entry's hash and its own."""

    seq: int
    ts: int
    actor: str
    action: str
    target: str
    reason: str | None
    details: str
    prev_hash: str
    hash: str


# ``seal(seq, prev_hash)``: the hash of the entry being appended at ``seq``.
Seal = Callable[[int, str], str]


class AuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, entry: AuditEntry, seal: Seal) -> AuditRow:
        """Append ``entry`` after the last row (seq 1 and ``GENESIS_HASH`` for the first),
        hashed by ``seal``; one transaction, serialised with every other append."""
        async with self._db.transaction() as txn:
            if self._db.dialect == "postgres":
                await txn.execute(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK_KEY})")
            last = await txn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            if last is None:
                seq, prev_hash = 1, GENESIS_HASH
            else:
                seq, prev_hash = int(last["seq"]) + 1, str(last["hash"])
            row = AuditRow(
                seq,
                entry.ts,
                entry.actor,
                entry.action,
                entry.target,
                entry.reason,
                entry.details,
                prev_hash,
                seal(seq, prev_hash),
            )
            await txn.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                row.seq,
                row.ts,
                row.actor,
                row.action,
                row.target,
                row.reason,
                row.details,
                row.prev_hash,
                row.hash,
            )
        return row

    async def page(self, after_seq: int, limit: int) -> list[AuditRow]:
        """At most ``limit`` rows numbered above ``after_seq``, in order."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        return [_row(r) for r in rows]

    async def iterate_all(self, batch: int = 1000) -> AsyncGenerator[list[AuditRow], None]:
        """Every row in order of ``seq``, ``batch`` rows per statement."""
        after = _BEFORE_ALL
        while True:
            rows = await self.page(after, batch)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            after = rows[-1].seq


def _row(row: Row) -> AuditRow:
    # As stored, unconverted: a tampered value must reach verification, not raise here.
    return AuditRow(
        row["seq"],
        row["ts"],
        row["actor"],
        row["action"],
        row["target"],
        row["reason"],
        row["details"],
        row["prev_hash"],
        row["hash"],
    )
