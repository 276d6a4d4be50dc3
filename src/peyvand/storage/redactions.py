"""Redactions in storage: applying them, and keeping those not (yet) in effect aside.

Rooms v3+ "Handling redactions": a redaction is applied when both it and the event it
names are known and valid, and its sender has the redact level or is on the original
sender's server (``events.redaction.redaction_takes_effect``; rooms v1/v2: rule 11's
event ID domains). Until then it is not sent to clients: it waits in
``pending_redactions`` (migration 030) for the event it names, which is checked again
when it arrives, in the timeline (the caller decides it with ``effective_pending``
and stores the event with ``redacted_by`` set) or outside it (``apply_pending_to_outliers``,
in the outliers' own transaction). An event held outside the timeline is redacted in
``event_outliers.redacted_by``, which moves with it if it joins the timeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from peyvand.events.pdu import Pdu
from peyvand.events.redaction import redaction_takes_effect
from peyvand.storage.database import Connection, placeholders
from peyvand.storage.models import EventToPersist
from peyvand.storage.search import unindex_events
from peyvand.storage.threads import forget_events as forget_thread_events
from peyvand.types import EventID

_IN_LIST_CHUNK = 500


async def apply_redactions(txn: Connection, batch: Sequence[EventToPersist]) -> None:
    """The redactions of a group commit, after its events are inserted (so a redaction
    committed with its original applies too; the first one in effect wins).

    An event of the batch stored already redacted (``redacted_by``) frees its redaction
    from ``pending_redactions``. A redaction of the batch marks the event it names, in
    the timeline or outside it, where it takes effect; otherwise it is kept pending.
    """
    arrived = [e.redacted_by for e in batch if e.redacted_by is not None]
    for chunk in _chunks(arrived):
        await txn.execute(
            f"DELETE FROM pending_redactions WHERE event_id IN ({placeholders(len(chunk))})",
            *chunk,
        )
    redactions = [
        (e, target)
        for e in batch
        if e.pdu.type == "m.room.redaction" and (target := e.pdu.redacts) is not None
    ]
    if not redactions:
        return
    targets = list({target for _, target in redactions})
    originals: dict[str, tuple[str, str, str]] = {}
    outliers: dict[str, tuple[str, str, str]] = {}
    for chunk in _chunks(targets):
        rows = await txn.fetch(
            "SELECT event_id, room_id, sender, type FROM events"
            f" WHERE event_id IN ({placeholders(len(chunk))})",
            *chunk,
        )
        originals.update((r["event_id"], (r["room_id"], r["sender"], r["type"])) for r in rows)
    for chunk in _chunks([t for t in targets if t not in originals]):
        rows = await txn.fetch(
            "SELECT event_id, room_id, pdu FROM event_outliers"
            f" WHERE event_id IN ({placeholders(len(chunk))})",
            *chunk,
        )
        for row in rows:
            data = orjson.loads(row["pdu"])
            outliers[row["event_id"]] = (row["room_id"], str(data["sender"]), str(data["type"]))
    applied: list[tuple[EventID, EventID]] = []
    applied_outside: list[tuple[EventID, EventID]] = []
    pending: list[tuple[EventID, str, EventID, bool]] = []
    for e, target in redactions:
        if _takes_effect(e.pdu, e.redaction_by_power, originals.get(target)):
            applied.append((e.pdu.event_id, target))
        elif _takes_effect(e.pdu, e.redaction_by_power, outliers.get(target)):
            applied_outside.append((e.pdu.event_id, target))
        else:
            pending.append((e.pdu.event_id, e.pdu.room_id, target, e.redaction_by_power))
    for table, rows_to_mark in (("events", applied), ("event_outliers", applied_outside)):
        if rows_to_mark:
            await txn.executemany(
                f"UPDATE {table} SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL",
                rows_to_mark,
            )
    # Redacted text leaves the search index with the redaction (storage.search), and a
    # redacted reply its thread (storage.threads).
    await unindex_events(txn, [target for _, target in applied])
    await forget_thread_events(txn, [target for _, target in applied])
    if pending:
        await txn.executemany(
            "INSERT INTO pending_redactions (event_id, room_id, redacts, by_power)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
            pending,
        )


async def keep_outlier_redactions(txn: Connection, batch: Sequence[EventToPersist]) -> None:
    """Events of the batch that were held outside the timeline keep the redaction applied
    to them there (before their outlier rows are deleted)."""
    promoted = [e.pdu.event_id for e in batch if e.was_outlier and e.redacted_by is None]
    for chunk in _chunks(promoted):
        await txn.execute(
            "UPDATE events SET redacted_by = (SELECT o.redacted_by FROM event_outliers o"
            " WHERE o.event_id = events.event_id)"
            f" WHERE event_id IN ({placeholders(len(chunk))}) AND redacted_by IS NULL",
            *chunk,
        )


async def effective_pending(conn: Connection, originals: Iterable[Pdu]) -> dict[EventID, EventID]:
    """For arriving events, the pending redaction that takes effect on each (the oldest
    one, if several), by the event's ID."""
    by_id = {pdu.event_id: pdu for pdu in originals}
    found: dict[EventID, EventID] = {}
    for chunk in _chunks(list(by_id)):
        rows = await conn.fetch(
            "SELECT p.event_id, p.redacts, p.by_power, e.pdu FROM pending_redactions p"
            " JOIN events e ON e.event_id = p.event_id"
            f" WHERE p.redacts IN ({placeholders(len(chunk))}) ORDER BY e.stream_ordering",
            *chunk,
        )
        for row in rows:
            original = by_id[EventID(row["redacts"])]
            if original.event_id in found:
                continue
            redaction = Pdu(
                orjson.loads(row["pdu"]), EventID(row["event_id"]), original.room_version
            )
            if _takes_effect(
                redaction,
                bool(row["by_power"]),
                (original.room_id, original.sender, original.type),
            ):
                found[original.event_id] = redaction.event_id
    return found


async def apply_pending_to_outliers(txn: Connection, outliers: Iterable[Pdu]) -> None:
    """Redact the events just stored outside the timeline that a pending redaction takes
    effect on, and free those redactions."""
    applied = await effective_pending(txn, outliers)
    if not applied:
        return
    await txn.executemany(
        "UPDATE event_outliers SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL",
        [(redaction, target) for target, redaction in applied.items()],
    )
    await txn.executemany(
        "DELETE FROM pending_redactions WHERE event_id = $1",
        [(redaction,) for redaction in applied.values()],
    )


async def pending_among(conn: Connection, event_ids: Iterable[EventID]) -> set[EventID]:
    """The redactions among ``event_ids`` not in effect: not to be shown to clients."""
    found: set[EventID] = set()
    for chunk in _chunks(list(set(event_ids))):
        rows = await conn.fetch(
            "SELECT event_id FROM pending_redactions"
            f" WHERE event_id IN ({placeholders(len(chunk))})",
            *chunk,
        )
        found.update(EventID(row["event_id"]) for row in rows)
    return found


def _takes_effect(redaction: Pdu, by_power: bool, original: tuple[str, str, str] | None) -> bool:
    """``redaction_takes_effect`` on an original known as (room ID, sender, type)."""
    if original is None:
        return False
    room_id, sender, event_type = original
    return redaction_takes_effect(
        redaction,
        by_power=by_power,
        original_room_id=room_id,
        original_sender=sender,
        original_type=event_type,
    )


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    return (items[i : i + _IN_LIST_CHUNK] for i in range(0, len(items), _IN_LIST_CHUNK))
