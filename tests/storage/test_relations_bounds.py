"""RelationStore's bounds on both backends: a recursive listing reads at most its
``scan_limit`` related events (its first level newest first) and prunes at every level
what is past its upper bound; bundled references and thread replies stop at their
count however many children a parent has."""

from __future__ import annotations

import orjson

from peyvand.storage.database import Database
from peyvand.storage.relations import MAX_REFERENCES, ChildrenQuery, RelationStore
from peyvand.types import EventID

ROOM = "!room:test"


async def _event(
    db: Database, stream: int, event_id: str, parent: str | None, rel_type: str
) -> None:
    relates = {"rel_type": rel_type, "event_id": parent} if parent is not None else None
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
        " origin_server_ts, state_group, relates_to, rel_type, pdu)"
        " VALUES ($1, $2, $3, 'm.room.message', '@a:test', $1, 0, 0, $4, $5, $6)",
        stream,
        event_id,
        ROOM,
        parent,
        rel_type if parent is not None else None,
        orjson.dumps({"content": {"m.relates_to": relates} if relates else {}}).decode(),
    )


async def test_recursion_reads_at_most_its_scan_limit(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$root", None, "")
    for i in range(10):
        await _event(database, 10 + i, f"$reply{i}", "$root", "m.thread")
    for i in range(10):
        await _event(database, 30 + i, f"$on{i}", f"$reply{i}", "m.reference")
    root = EventID("$root")

    everything = await store.children(ChildrenQuery(root, ROOM, depth=3), 100)
    assert len(everything) == 20
    # Five rows read: the five newest replies, none of the level below.
    capped = await store.children(ChildrenQuery(root, ROOM, depth=3, scan_limit=5), 100)
    assert [c.event_id for c in capped] == [f"$reply{i}" for i in range(9, 4, -1)]
    # Twelve: the ten replies, then two references.
    twelve = await store.children(ChildrenQuery(root, ROOM, depth=3, scan_limit=12), 100)
    assert len(twelve) == 12 and {f"$reply{i}" for i in range(10)} <= {c.event_id for c in twelve}


async def test_recursion_prunes_past_the_upper_bound(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$root", None, "")
    await _event(database, 10, "$late", "$root", "m.thread")
    # Stored before its parent (a backfilled child, say): below the bound, but reached
    # only through an event past it.
    await _event(database, 5, "$early", "$late", "m.reference")
    await _event(database, 6, "$direct", "$root", "m.reference")
    await _event(database, 20, "$after", "$direct", "m.reference")
    query = ChildrenQuery(EventID("$root"), ROOM, depth=3, before=7)
    assert [c.event_id for c in await store.children(query, 100)] == ["$direct"]
    # The lower bound only limits what is listed: $after's parent is before it.
    forwards = ChildrenQuery(EventID("$root"), ROOM, depth=3, after=7, newest_first=False)
    assert [c.event_id for c in await store.children(forwards, 100)] == ["$late", "$after"]


async def test_bundled_children_stop_at_their_count(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$parent", None, "")
    for i in range(MAX_REFERENCES + 5):
        await _event(database, 10 + i, f"$ref{i}", "$parent", "m.reference")
        await _event(database, 1000 + i, f"$reply{i}", "$parent", "m.thread")
    parent = EventID("$parent")
    references = await store.references([parent], [])
    assert references == {parent: [EventID(f"$ref{i}") for i in range(MAX_REFERENCES)]}
    newest = await store.newest_thread_replies([parent], 3, [])
    assert newest == {
        parent: [EventID(f"$reply{i}") for i in range(MAX_REFERENCES + 4, MAX_REFERENCES + 1, -1)]
    }


async def test_many_parents_at_once(database: Database) -> None:
    store = RelationStore(database)
    parents = [EventID(f"$parent{i}") for i in range(150)]
    for i, parent in enumerate(parents):
        await _event(database, 10 * i + 1, parent, None, "")
        await _event(database, 10 * i + 2, f"$a{i}", parent, "m.reference")
        await _event(database, 10 * i + 3, f"$b{i}", parent, "m.reference")
    references = await store.references(parents, [])
    assert references == {p: [EventID(f"$a{i}"), EventID(f"$b{i}")] for i, p in enumerate(parents)}
