"""RelationStore on both backends: children (paged, filtered, recursive, loops bounded),
thread summaries, edit candidates, references; redacted children never count."""

from __future__ import annotations

from typing import Any

import orjson

from peyvand.storage.database import Database
from peyvand.storage.relations import ChildrenQuery, RelationStore
from peyvand.types import EventID, UserID

ROOM = "!room:test"


async def _event(
    db: Database,
    stream: int,
    event_id: str,
    *,
    sender: str = "@a:test",
    event_type: str = "m.room.message",
    relates: tuple[str, str] | None = None,
    content: dict[str, Any] | None = None,
    ts: int = 0,
    room: str = ROOM,
    redacted: bool = False,
) -> None:
    body = dict(content or {})
    if relates is not None:
        body["m.relates_to"] = {
            "rel_type": relates[1],
            "event_id": relates[0],
            **body.get("m.relates_to", {}),
        }
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
        " origin_server_ts, state_group, relates_to, rel_type, pdu, redacted_by)"
        " VALUES ($1, $2, $3, $4, $5, $1, $6, 0, $7, $8, $9, $10)",
        stream,
        event_id,
        room,
        event_type,
        sender,
        ts,
        relates[0] if relates else None,
        relates[1] if relates else None,
        orjson.dumps({"content": body}).decode(),
        "$redaction" if redacted else None,
    )


async def test_children_pages_filters_and_recursion(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$root")
    for i in range(2, 12):
        await _event(
            database, i, f"$r{i}", event_type="m.reaction", relates=("$root", "m.annotation")
        )
    await _event(database, 12, "$t1", relates=("$root", "m.thread"))
    await _event(database, 13, "$gone", relates=("$root", "m.thread"), redacted=True)
    await _event(database, 14, "$elsewhere", relates=("$root", "m.thread"), room="!other:test")
    await _event(database, 15, "$deep", event_type="m.reaction", relates=("$t1", "m.annotation"))
    root = EventID("$root")

    newest = await store.children(ChildrenQuery(root, ROOM), 3)
    assert [c.event_id for c in newest] == ["$t1", "$r11", "$r10"]
    older = await store.children(ChildrenQuery(root, ROOM, before=9), 100)
    assert [c.event_id for c in older] == [f"$r{i}" for i in range(9, 1, -1)]
    forwards = await store.children(ChildrenQuery(root, ROOM, after=9, newest_first=False), 100)
    assert [c.event_id for c in forwards] == ["$r10", "$r11", "$t1"]
    threads = await store.children(ChildrenQuery(root, ROOM, rel_type="m.thread"), 100)
    assert [c.event_id for c in threads] == ["$t1"]
    typed = await store.children(ChildrenQuery(root, ROOM, event_type="m.room.message"), 100)
    assert [c.event_id for c in typed] == ["$t1"]
    deep = await store.children(ChildrenQuery(root, ROOM, depth=3), 100)
    assert [c.event_id for c in deep][:2] == ["$deep", "$t1"]
    # Filters apply at every level: $deep relates through a message, not a reaction.
    reactions = await store.children(
        ChildrenQuery(root, ROOM, event_type="m.reaction", depth=3), 100
    )
    assert "$deep" not in [c.event_id for c in reactions]


async def test_relation_loops_end(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$a", relates=("$b", "m.reference"))
    await _event(database, 2, "$b", relates=("$a", "m.reference"))
    found = await store.children(ChildrenQuery(EventID("$a"), ROOM, depth=3), 100)
    assert sorted(c.event_id for c in found) == ["$a", "$b"]


async def test_thread_summaries(database: Database) -> None:
    store = RelationStore(database)
    alice, bob, eve = UserID("@alice:test"), UserID("@bob:test"), UserID("@eve:test")
    await _event(database, 1, "$root", sender=alice)
    await _event(database, 2, "$x1", sender=bob, relates=("$root", "m.thread"))
    await _event(database, 3, "$x2", sender=alice, relates=("$root", "m.thread"))
    await _event(database, 4, "$x3", sender=eve, relates=("$root", "m.thread"))
    await _event(database, 5, "$x4", sender=bob, relates=("$root", "m.thread"), redacted=True)
    await _event(database, 6, "$lonely")
    summaries = await store.thread_summaries([EventID("$root"), EventID("$lonely")], bob)
    assert set(summaries) == {"$root"}
    assert summaries[EventID("$root")].count == 3
    assert summaries[EventID("$root")].latest_event_id == "$x3"
    assert summaries[EventID("$root")].participated
    ignoring = await store.thread_summaries([EventID("$root")], UserID("@zed:test"), [eve])
    assert ignoring[EventID("$root")].count == 2
    assert ignoring[EventID("$root")].latest_event_id == "$x2"
    assert not ignoring[EventID("$root")].participated
    newest = await store.newest_thread_replies([EventID("$root")], 2, [])
    assert newest == {"$root": ["$x3", "$x2"]}


async def test_edit_candidates_and_references(database: Database) -> None:
    store = RelationStore(database)
    await _event(database, 1, "$orig", sender="@a:test")
    await _event(database, 2, "$e1", relates=("$orig", "m.replace"), ts=10)
    await _event(database, 3, "$e2", relates=("$orig", "m.replace"), ts=5)
    await _event(database, 4, "$e3b", relates=("$orig", "m.replace"), ts=10)
    await _event(database, 5, "$other", sender="@b:test", relates=("$orig", "m.replace"), ts=99)
    await _event(database, 6, "$e4", relates=("$orig", "m.replace"), ts=50, redacted=True)
    await _event(database, 7, "$ref1", relates=("$orig", "m.reference"))
    await _event(database, 8, "$ref2", sender="@b:test", relates=("$orig", "m.reference"))
    edits = await store.edit_candidates([EventID("$orig")], 10)
    assert edits == {"$orig": ["$e3b", "$e1", "$e2"]}
    assert await store.edit_candidates([EventID("$orig")], 1) == {"$orig": ["$e3b"]}
    assert await store.references([EventID("$orig")], []) == {"$orig": ["$ref1", "$ref2"]}
    assert await store.references([EventID("$orig")], [UserID("@b:test")]) == {"$orig": ["$ref1"]}


async def test_annotations_and_targets(database: Database) -> None:
    store = RelationStore(database)
    sender = UserID("@a:test")
    await _event(
        database,
        1,
        "$r",
        sender=sender,
        event_type="m.reaction",
        relates=("$parent", "m.annotation"),
        content={"m.relates_to": {"key": "👍"}},
    )
    await _event(
        database,
        2,
        "$gone",
        sender=sender,
        event_type="m.reaction",
        relates=("$parent", "m.annotation"),
        content={"m.relates_to": {"key": "👎"}},
        redacted=True,
    )
    parent = EventID("$parent")
    assert await store.has_annotated(parent, "m.reaction", "👍", sender)
    assert not await store.has_annotated(parent, "m.reaction", "👎", sender)
    assert not await store.has_annotated(parent, "m.reaction", "👍", UserID("@b:test"))
    assert await store.is_relation_target(parent)
    await _event(database, 3, "$parent")
    await _event(database, 4, "$lonely")
    bundled = ("m.thread", "m.replace", "m.reference")
    assert await store.parents_among([parent, EventID("$lonely")], bundled) == set()
    assert await store.parents_among([parent, EventID("$lonely")], ["m.annotation"]) == {parent}
    assert not await store.is_relation_target(EventID("$r"))
