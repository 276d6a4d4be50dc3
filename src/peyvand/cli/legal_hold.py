"""``peyvand hold place|release|list``: legal holds from the command line (docs/compliance.md).

Works over a database connection of its own; the server may be running. Like
``register-user``, each command first brings the schema up to date. Holds placed or
released here are recorded in the audit log with the actor ``cli:hold``.

Dates are ISO 8601 in UTC unless they name an offset: ``2024-03-31`` or
``2024-03-31T18:00:00Z``. A bare date given as ``--until`` means the end of that day, so
``--since 2024-01-01 --until 2024-03-31`` holds all of the first quarter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from peyvand.app import open_database
from peyvand.cli.dates import format_ts, parse_date
from peyvand.cli.errors import CommandError
from peyvand.compliance.audit import AuditLog
from peyvand.compliance.legal_hold import Hold, LegalHolds
from peyvand.config.model import Config
from peyvand.errors import MatrixError
from peyvand.storage.audit import AuditStore
from peyvand.storage.legal_holds import LegalHoldStore
from peyvand.storage.migrations import run_migrations

ACTOR = "cli:hold"

_T = TypeVar("_T")


async def place_hold(
    config: Config,
    kind: str,
    target: str,
    case_id: str,
    reason: str,
    since: str | None = None,
    until: str | None = None,
) -> str:
    """Place a hold; the report names its ID."""
    since_ts = None if since is None else parse_date(since, end_of_day=False)
    until_ts = None if until is None else parse_date(until, end_of_day=True)
    hold = await _with_holds(
        config,
        lambda holds: holds.place(ACTOR, kind, target, case_id, reason, since_ts, until_ts),
    )
    return f"placed legal hold {hold.hold_id} on {hold.kind} {hold.target} (case {hold.case_id})"


async def release_hold(config: Config, hold_id: str, reason: str) -> str:
    hold = await _with_holds(config, lambda holds: holds.release(ACTOR, hold_id, reason))
    return f"released legal hold {hold.hold_id} on {hold.kind} {hold.target} (case {hold.case_id})"


async def list_holds(config: Config, *, include_released: bool) -> str:
    """The active holds (or all), oldest first, one block each."""
    holds = await _with_holds(config, lambda h: h.list(active_only=not include_released))
    if not holds:
        return "no legal holds" if include_released else "no active legal holds"
    return "\n\n".join(describe(h) for h in holds)


def describe(hold: Hold) -> str:
    """A hold as ``peyvand hold list`` shows it."""
    if hold.released_ts is None:
        status = "active"
    else:
        status = (
            f"released {format_ts(hold.released_ts)} by {hold.released_by}: {hold.release_reason}"
        )
    return "\n".join(
        [
            f"hold {hold.hold_id}: {hold.kind} {hold.target}, case {hold.case_id}",
            f"  reason: {hold.reason}",
            f"  covers: {_covers(hold)}",
            f"  placed: {format_ts(hold.created_ts)} by {hold.created_by}",
            f"  status: {status}",
        ]
    )


def _covers(hold: Hold) -> str:
    if hold.since_ts is None and hold.until_ts is None:
        return "all events"
    if hold.until_ts is None:
        return f"events sent from {format_ts(hold.since_ts or 0)}"
    if hold.since_ts is None:
        return f"events sent until {format_ts(hold.until_ts)}"
    return f"events sent from {format_ts(hold.since_ts)} to {format_ts(hold.until_ts)}"


async def _with_holds(config: Config, action: Callable[[LegalHolds], Awaitable[_T]]) -> _T:
    db = await open_database(config.database)
    try:
        await run_migrations(db)
        holds = LegalHolds(LegalHoldStore(db), AuditLog(AuditStore(db)))
        try:
            return await action(holds)
        except MatrixError as exc:
            raise CommandError(exc.message) from exc
    finally:
        await db.close()
