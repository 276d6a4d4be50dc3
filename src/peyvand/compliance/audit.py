"""The audit log (docs/compliance.md): every admin action, in a hash chain.

Each entry records who (``actor``), when (``ts``, milliseconds), what (``action``), to what
(``target``), why (``reason``) and any ``details`` (a JSON object). Entries are numbered
from 1 without gaps. An entry's ``hash`` is the SHA-256 (hex) of the canonical JSON of
``{seq, ts, actor, action, target, reason, details, prev_hash}``, where ``prev_hash`` is the
previous entry's hash (64 zeros for the first). So changing a stored field, removing a row,
swapping two or inserting one breaks the chain at that point, and ``verify`` reports the
first break.

What a chain alone cannot show: rows removed from the end, or a chain rewritten from some
entry on by someone who can write to the database and recompute the hashes. Within one
server process ``verify`` also notices missing entries it recorded itself; beyond that,
note the last hash ``verify`` reports somewhere else and compare later.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from peyvand.events.canonical_json import check_canonical_json_values, encode_canonical_json
from peyvand.storage.audit import GENESIS_HASH, AuditEntry, AuditRow, AuditStore
from peyvand.types import JsonDict


class AuditAction(StrEnum):
    """The actions recorded (``record``'s ``action``)."""

    EXPORT = "export"
    HOLD = "hold"
    RELEASE = "release"
    PURGE = "purge"
    ERASURE = "erasure"
    DEACTIVATE = "deactivate"
    QUARANTINE = "quarantine"
    UNQUARANTINE = "unquarantine"
    MEDIA_DELETE = "media_delete"
    MEDIA_PURGE = "media_purge"
    TOKEN_ISSUED = "token_issued"
    TOKEN_UPDATED = "token_updated"
    TOKEN_DELETED = "token_deleted"
    APPSERVICE_RETRY = "appservice_retry"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``entries`` counts the entries found intact (before the first break, if any);
    ``first_bad_seq`` is the number of the first entry that was changed, removed or put out
    of place. ``last_hash`` is the hash of the last intact entry (None for an empty log)."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None
    last_hash: str | None = None

    def as_json(self) -> JsonDict:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "last_hash": self.last_hash,
        }


def entry_hash(
    seq: int,
    ts: int,
    actor: str,
    action: str,
    target: str,
    reason: str | None,
    details: Any,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of the canonical JSON of the entry and the previous entry's hash."""
    payload = {
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "action": action,
        "target": target,
        "reason": reason,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(encode_canonical_json(payload)).hexdigest()


class AuditLog:
    def __init__(self, store: AuditStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        # Appends from this process, one at a time (the database serialises them too; this
        # keeps waiting appends from holding pool connections).
        self._lock = asyncio.Lock()
        # The highest seq this process appended: verify reports it missing if it is gone.
        self._last_recorded = 0

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one admin action; returns its seq. ``details`` must hold canonical JSON
        values only (no floats; ``ValueError`` otherwise)."""
        content = dict(details or {})
        check_canonical_json_values(content)
        ts = int(self._clock() * 1000)
        entry = AuditEntry(
            ts, actor, action, target, reason, encode_canonical_json(content).decode()
        )

        def seal(seq: int, prev_hash: str) -> str:
            return entry_hash(seq, ts, actor, action, target, reason, content, prev_hash)

        async with self._lock:
            row = await self._store.append(entry, seal)
            self._last_recorded = max(self._last_recorded, row.seq)
        return row.seq

    async def entries(self, after: int, limit: int) -> list[JsonDict]:
        """At most ``limit`` entries numbered above ``after``, oldest first, as JSON."""
        return [_entry_json(row) for row in await self._store.page(after, limit)]

    async def verify(self, batch: int = 1000) -> VerifyResult:
        """Re-compute the chain from the first entry, ``batch`` rows at a time."""
        recorded = self._last_recorded  # all committed before the rows are read
        expected, prev_hash, count = 1, GENESIS_HASH, 0
        async with aclosing(self._store.iterate_all(batch)) as batches:
            async for rows in batches:
                for row in rows:
                    problem = _check(row, expected, prev_hash)
                    if problem is not None:
                        bad_seq, text = problem
                        return VerifyResult(False, count, bad_seq, text, _last(count, prev_hash))
                    expected, prev_hash, count = row.seq + 1, row.hash, count + 1
        if recorded >= expected:
            return VerifyResult(
                False,
                count,
                expected,
                f"{_entries(expected, recorded)} recorded by this server {_are(expected, recorded)}"
                " missing",
                _last(count, prev_hash),
            )
        return VerifyResult(True, count, None, None, _last(count, prev_hash))


def _check(row: AuditRow, expected: int, prev_hash: str) -> tuple[int, str] | None:
    """``(first bad seq, problem)`` if ``row`` does not continue the chain at ``expected``."""
    if type(row.seq) is not int:
        return expected, f"entry numbered {row.seq!r}, not an integer"
    if row.seq < expected:
        return row.seq, f"entry number {row.seq} out of sequence (expected {expected})"
    if row.seq > expected:
        return expected, f"{_entries(expected, row.seq - 1)} {_are(expected, row.seq - 1)} missing"
    if row.prev_hash != prev_hash:
        previous = "the genesis hash" if expected == 1 else f"the hash of entry {expected - 1}"
        return row.seq, f"prev_hash is not {previous}"
    try:
        details = orjson.loads(row.details)
    except (ValueError, TypeError):
        return row.seq, "details are not valid JSON"
    try:
        computed = entry_hash(
            row.seq, row.ts, row.actor, row.action, row.target, row.reason, details, row.prev_hash
        )
    except (ValueError, TypeError):
        return row.seq, "a field holds a value that is not JSON"
    if computed != row.hash:
        return row.seq, "hash does not match the entry's contents"
    return None


def _entries(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first} to {last}"


def _are(first: int, last: int) -> str:
    return "is" if first == last else "are"


def _last(count: int, prev_hash: str) -> str | None:
    return prev_hash if count else None


def _entry_json(row: AuditRow) -> JsonDict:
    try:
        details: Any = orjson.loads(row.details)
    except (orjson.JSONDecodeError, TypeError):
        details = row.details  # shown as stored; verify reports it
    return {
        "seq": row.seq,
        "ts": row.ts,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "reason": row.reason,
        "details": details,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }
