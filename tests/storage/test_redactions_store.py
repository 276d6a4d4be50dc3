"""``storage.redactions`` on both backends: redactions not in effect are kept pending
(rooms v3+ "Handling redactions"), and applied when the event they name arrives outside
the timeline; an event held outside the timeline keeps its redaction when it joins it."""

from __future__ import annotations

from typing import Any

import orjson

from harness.stored_pdus import stored_pdu
from peyvand.events.pdu import Pdu
from peyvand.storage.database import Database
from peyvand.storage.models import EventToPersist
from peyvand.storage.redactions import (
    apply_pending_to_outliers,
    apply_redactions,
    keep_outlier_redactions,
    pending_among,
)
from peyvand.types import EventID

ROOM = "!room:here.test"


def _pdu(event_id: str, sender: str, event_type: str, **extra: Any) -> Pdu:
    return stored_pdu(event_id, ROOM, sender, event_type, **extra)


def _persisted(pdu: Pdu, stream: int, **extra: Any) -> EventToPersist:
    return EventToPersist(pdu, stream, 1, None, None, None, None, (pdu.event_id,), **extra)


async def _insert(db: Database, stream: int, pdu: Pdu) -> None:
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
        " origin_server_ts, state_group, pdu) VALUES ($1, $2, $3, $4, $5, 2, 1000, 1, $6)",
        stream,
        pdu.event_id,
        ROOM,
        pdu.type,
        pdu.sender,
        orjson.dumps(dict(pdu.data)).decode(),
    )


async def _redacted_by(db: Database, table: str, event_id: str) -> Any:
    return await db.fetchval(f"SELECT redacted_by FROM {table} WHERE event_id = $1", event_id)


async def test_redactions_wait_for_their_original_and_follow_it(database: Database) -> None:
    alice_words = _pdu("$words", "@alice:here.test", "m.room.message")
    await _insert(database, 1, alice_words)
    # Another server's user without the redact level: never in effect, kept pending.
    refused = _pdu("$refused", "@bob:there.test", "m.room.redaction", redacts="$words")
    # bob's own event, not received yet: pending until it is.
    early = _pdu("$early", "@bob:there.test", "m.room.redaction", redacts="$late")
    for stream, redaction in ((2, refused), (3, early)):
        await _insert(database, stream, redaction)
    async with database.transaction() as txn:
        await apply_redactions(txn, [_persisted(refused, 2), _persisted(early, 3)])
    assert await _redacted_by(database, "events", "$words") is None
    assert await pending_among(database, [EventID("$refused"), EventID("$early")]) == {
        "$refused",
        "$early",
    }

    # bob's event arrives outside the timeline: redacted there, the redaction freed.
    late = _pdu("$late", "@bob:there.test", "m.room.message")
    async with database.transaction() as txn:
        await txn.execute(
            "INSERT INTO event_outliers (event_id, room_id, status, pdu)"
            " VALUES ($1, $2, 'outlier', $3)",
            "$late",
            ROOM,
            orjson.dumps(dict(late.data)).decode(),
        )
        await apply_pending_to_outliers(txn, [late])
    assert await _redacted_by(database, "event_outliers", "$late") == "$early"
    assert await pending_among(database, [EventID("$refused"), EventID("$early")]) == {"$refused"}

    # It joins the timeline: the redaction comes with it.
    await _insert(database, 4, late)
    async with database.transaction() as txn:
        await keep_outlier_redactions(txn, [_persisted(late, 4, was_outlier=True)])
    assert await _redacted_by(database, "events", "$late") == "$early"


async def test_a_redaction_of_an_event_held_outside_the_timeline_applies_there(
    database: Database,
) -> None:
    held = _pdu("$held", "@bob:there.test", "m.room.member", state_key="@bob:there.test")
    await database.execute(
        "INSERT INTO event_outliers (event_id, room_id, status, pdu)"
        " VALUES ($1, $2, 'outlier', $3)",
        "$held",
        ROOM,
        orjson.dumps(dict(held.data)).decode(),
    )
    redaction = _pdu("$redaction", "@bob:there.test", "m.room.redaction", redacts="$held")
    await _insert(database, 1, redaction)
    async with database.transaction() as txn:
        await apply_redactions(txn, [_persisted(redaction, 1)])
    assert await _redacted_by(database, "event_outliers", "$held") == "$redaction"
    assert await pending_among(database, [EventID("$redaction")]) == set()
