"""Relations between events (Client-Server API, "Forming relationships between events").

A relation is an event whose ``content["m.relates_to"]`` names a parent ``event_id`` and a
``rel_type``; both are copied to the ``events`` row when the event is stored (local,
received or backfilled) and indexed as ``events_relates (relates_to, rel_type)``. A
redacted child no longer relates to anything (its row keeps ``redacted_by``; every query
here leaves such rows out, as Synapse deletes a redacted event's relation row) and a
purged one is gone with its row. A child counts only in its parent's room.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from peyvand.storage.database import Database, placeholders
from peyvand.types import EventID, RoomID, UserID

_IN_LIST_CHUNK = 500
# Parents per UNION ALL statement (SQLite allows 500 terms in a compound SELECT).
_UNION_CHUNK = 100
# The ``m.reference`` children bundled with a parent ("Reference relations"), the oldest
# first as Synapse orders them (it bundles them all): a bound on what each served parent
# costs every /sync, /messages and /context; a client pages through the rest with
# /relations.
MAX_REFERENCES = 50
# The related events a recursive listing reads at most (breadth first, each parent's
# children newest first), whatever its limit: a bound on one request's work.
MAX_RECURSIVE_SCAN = 5000
# A child row is a relation only with a rel_type, not redacted, in its parent's room.
_LIVE_CHILD = "child.rel_type IS NOT NULL AND child.redacted_by IS NULL"


@dataclass(frozen=True, slots=True)
class RelatedEvent:
    """A child event found by ``RelationStore.children``."""

    event_id: EventID
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread root's summary ("Threading", "Server-side aggregation of ``m.thread``")."""

    # Replies (``rel_type`` ``m.thread``) not redacted, not from excluded senders.
    count: int
    # The newest of them by stream order (the server's topological view).
    latest_event_id: EventID
    # Whether the user asked about sent one of them (the root's sender is the caller's).
    participated: bool


@dataclass(frozen=True, slots=True)
class StoredRelation:
    """An event's room and the relation stored on its row: none (``rel_type`` and
    ``parent_id`` None) when it has none or is redacted."""

    room_id: RoomID
    rel_type: str | None = None
    parent_id: EventID | None = None


@dataclass(frozen=True, slots=True)
class ChildrenQuery:
    """What ``RelationStore.children`` lists: children of ``parent_id`` with
    ``after < stream_ordering <= before``, optionally of one ``rel_type`` and event
    type, following relations of relations ``depth`` levels deep (1: direct only)."""

    parent_id: EventID
    room_id: str
    rel_type: str | None = None
    event_type: str | None = None
    after: int | None = None
    before: int | None = None
    newest_first: bool = True
    depth: int = 1
    # The parent is redacted: its edits are not listed (they would leak its content).
    without_edits: bool = False
    # With ``depth`` > 1: the related events read at most.
    scan_limit: int = MAX_RECURSIVE_SCAN


class RelationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def relations_of(self, event_ids: Collection[EventID]) -> dict[EventID, StoredRelation]:
        """The room and relation of each of ``event_ids`` stored (a missing one is not
        stored): the columns only, one query per 500 events."""
        found: dict[EventID, StoredRelation] = {}
        ids = list(set(event_ids))
        for start in range(0, len(ids), _IN_LIST_CHUNK):
            chunk = ids[start : start + _IN_LIST_CHUNK]
            rows = await self._db.fetch(
                "SELECT event_id, room_id, rel_type, relates_to, redacted_by FROM events"
                f" WHERE event_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                room_id = RoomID(r["room_id"])
                live = r["redacted_by"] is None and r["rel_type"] is not None
                found[EventID(r["event_id"])] = (
                    StoredRelation(room_id, r["rel_type"], EventID(r["relates_to"]))
                    if live and r["relates_to"] is not None
                    else StoredRelation(room_id)
                )
        return found

    async def children(self, query: ChildrenQuery, limit: int) -> list[RelatedEvent]:
        """Up to ``limit`` children, in stream order (newest first if asked). With
        ``depth`` > 1 the filters apply at every level: a child reached only through a
        non-matching event is not listed (Client-Server API, "Relationships API")."""
        args: list[Any] = [query.parent_id, query.room_id]
        filters = [_LIVE_CHILD, "child.room_id = $2"]
        if query.rel_type is not None:
            args.append(query.rel_type)
            filters.append(f"child.rel_type = ${len(args)}")
        if query.event_type is not None:
            args.append(query.event_type)
            filters.append(f"child.type = ${len(args)}")
        matching = " AND ".join(filters)
        direct = matching + (" AND child.rel_type <> 'm.replace'" if query.without_edits else "")
        lower = upper = ""
        if query.after is not None:
            args.append(query.after)
            lower = f" AND stream_ordering > ${len(args)}"
        if query.before is not None:
            args.append(query.before)
            upper = f" AND child.stream_ordering <= ${len(args)}"
        order = f"ORDER BY stream_ordering {'DESC' if query.newest_first else 'ASC'}"
        if query.depth == 1:
            # Direct children: an index range (events_relates_stream), no recursion.
            args.append(limit)
            rows = await self._db.fetch(
                "SELECT child.event_id, child.stream_ordering FROM events AS child"
                f" WHERE child.relates_to = $1 AND {direct}{lower}{upper}"
                f" {order} LIMIT ${len(args)}",
                *args,
            )
            return [RelatedEvent(EventID(r["event_id"]), r["stream_ordering"]) for r in rows]
        # Bounded by depth, so a loop of relations (possible with room v1/v2 event IDs)
        # ends; UNION drops the rows a loop repeats at the same depth. The upper bound
        # applies at every level: a relation is stored after its parent, so the
        # descendants of an event past it are past it too. The lower bound only applies
        # to what is listed (an old child may have new children). The recursion stops
        # after ``scan_limit`` rows (evaluated lazily on both backends), its first level
        # newest first.
        args.append(query.depth)
        depth_arg = f"${len(args)}"
        args.append(query.scan_limit)
        scan_arg = f"${len(args)}"
        args.append(limit)
        rows = await self._db.fetch(
            "WITH RECURSIVE related (event_id, stream_ordering, depth) AS ("
            " SELECT event_id, stream_ordering, 1 FROM (SELECT child.event_id,"
            " child.stream_ordering FROM events AS child WHERE child.relates_to = $1"
            f" AND {direct}{upper} ORDER BY child.stream_ordering DESC LIMIT {scan_arg})"
            " AS first_level"
            " UNION"
            " SELECT child.event_id, child.stream_ordering, related.depth + 1"
            " FROM related JOIN events AS child ON child.relates_to = related.event_id"
            f" WHERE related.depth < {depth_arg} AND {matching}{upper}),"
            f" scanned AS (SELECT event_id, stream_ordering FROM related LIMIT {scan_arg})"
            f" SELECT DISTINCT event_id, stream_ordering FROM scanned WHERE TRUE{lower}"
            f" {order} LIMIT ${len(args)}",
            *args,
        )
        return [RelatedEvent(EventID(r["event_id"]), r["stream_ordering"]) for r in rows]

    async def parents_among(
        self, event_ids: Collection[EventID], rel_types: Collection[str]
    ) -> set[EventID]:
        """Those of ``event_ids`` with an unredacted child in their room of one of
        ``rel_types``. One query per 500 events."""
        found: set[EventID] = set()
        ids = list(set(event_ids))
        types = sorted(set(rel_types))
        for start in range(0, len(ids), _IN_LIST_CHUNK):
            chunk = ids[start : start + _IN_LIST_CHUNK]
            rows = await self._db.fetch(
                "SELECT DISTINCT child.relates_to FROM events AS child JOIN events AS parent"
                " ON parent.event_id = child.relates_to AND parent.room_id = child.room_id"
                f" WHERE child.relates_to IN ({placeholders(len(chunk))})"
                f" AND child.rel_type IN ({placeholders(len(types), 1 + len(chunk))})"
                f" AND {_LIVE_CHILD}",
                *chunk,
                *types,
            )
            found.update(EventID(r[0]) for r in rows)
        return found

    async def is_relation_target(self, event_id: EventID) -> bool:
        """Whether a stored, unredacted event relates to ``event_id`` (a parent this
        server may not hold: Synapse lets a client relate to it then)."""
        row = await self._db.fetchrow(
            f"SELECT 1 FROM events AS child WHERE child.relates_to = $1 AND {_LIVE_CHILD} LIMIT 1",
            event_id,
        )
        return row is not None

    async def has_annotated(
        self, parent_id: EventID, event_type: str, key: str, sender: UserID
    ) -> bool:
        """Whether ``sender`` already annotated ``parent_id`` with an unredacted
        ``event_type`` event of this ``key`` (Client-Server API, "Event annotations and
        reactions", "Avoiding duplicate annotations")."""
        rows = await self._db.fetch(
            "SELECT child.pdu FROM events AS child WHERE child.relates_to = $1"
            f" AND child.rel_type = 'm.annotation' AND {_LIVE_CHILD}"
            " AND child.type = $2 AND child.sender = $3",
            parent_id,
            event_type,
            sender,
        )
        for row in rows:
            relates = orjson.loads(row["pdu"]).get("content", {}).get("m.relates_to")
            if isinstance(relates, dict) and relates.get("key") == key:
                return True
        return False

    async def thread_summaries(
        self,
        root_ids: Collection[EventID],
        user_id: UserID | None,
        exclude_senders: Collection[UserID] = (),
    ) -> dict[EventID, ThreadSummary]:
        """For each root with replies: their count, the newest and whether ``user_id``
        sent one, leaving out replies from ``exclude_senders`` (the users the reader
        ignores: "Threading", ``count`` "does not include events sent by ignored users").
        Roots without replies are absent. One query per 500 roots."""
        found: dict[EventID, ThreadSummary] = {}
        roots = list(set(root_ids))
        excluded = sorted(set(exclude_senders))
        for start in range(0, len(roots), _IN_LIST_CHUNK):
            chunk = roots[start : start + _IN_LIST_CHUNK]
            args: list[Any] = [user_id or "", *chunk, *excluded]
            not_excluded = (
                f" AND child.sender NOT IN ({placeholders(len(excluded), 2 + len(chunk))})"
                if excluded
                else ""
            )
            rows = await self._db.fetch(
                "SELECT summary.root_id, summary.replies, summary.participated, latest.event_id"
                " FROM (SELECT child.relates_to AS root_id, COUNT(*) AS replies,"
                " MAX(child.stream_ordering) AS newest,"
                " MAX(CASE WHEN child.sender = $1 THEN 1 ELSE 0 END) AS participated"
                " FROM events AS child JOIN events AS root"
                " ON root.event_id = child.relates_to AND root.room_id = child.room_id"
                f" WHERE child.relates_to IN ({placeholders(len(chunk), 2)})"
                f" AND child.rel_type = 'm.thread' AND {_LIVE_CHILD}{not_excluded}"
                " GROUP BY child.relates_to) AS summary"
                " JOIN events AS latest ON latest.stream_ordering = summary.newest",
                *args,
            )
            for row in rows:
                found[EventID(row["root_id"])] = ThreadSummary(
                    count=row["replies"],
                    latest_event_id=EventID(row["event_id"]),
                    participated=bool(row["participated"]),
                )
        return found

    async def newest_thread_replies(
        self, root_ids: Collection[EventID], per_root: int, exclude_senders: Collection[UserID]
    ) -> dict[EventID, list[EventID]]:
        """Up to ``per_root`` newest replies of each thread, newest first (for a reader
        who may not see the newest one). One query per 500 roots."""
        return await self._children_of(root_ids, "m.thread", per_root, exclude_senders)

    async def edit_candidates(
        self, original_ids: Collection[EventID], per_original: int
    ) -> dict[EventID, list[EventID]]:
        """Up to ``per_original`` edits of each original that pass the checks storage
        can make ("Event replacements", "Validity of replacement events": same room,
        sender and type, neither a state event, the original no edit itself), newest
        first by ``origin_server_ts`` then ``event_id``. ``m.new_content`` is the
        caller's to check."""
        found: dict[EventID, list[EventID]] = {}
        originals = list(set(original_ids))
        for start in range(0, len(originals), _IN_LIST_CHUNK):
            chunk = originals[start : start + _IN_LIST_CHUNK]
            rows = await self._db.fetch(
                "SELECT original_id, edit_id FROM (SELECT original.event_id AS original_id,"
                " child.event_id AS edit_id, ROW_NUMBER() OVER (PARTITION BY original.event_id"
                " ORDER BY child.origin_server_ts DESC, child.event_id DESC) AS nth"
                " FROM events AS child JOIN events AS original"
                " ON original.event_id = child.relates_to"
                f" WHERE child.relates_to IN ({placeholders(len(chunk), 2)})"
                f" AND child.rel_type = 'm.replace' AND {_LIVE_CHILD}"
                " AND child.room_id = original.room_id AND child.sender = original.sender"
                " AND child.type = original.type"
                " AND child.state_key IS NULL AND original.state_key IS NULL"
                " AND (original.rel_type IS NULL OR original.rel_type <> 'm.replace'))"
                " AS ranked WHERE nth <= $1 ORDER BY original_id, nth",
                per_original,
                *chunk,
            )
            for row in rows:
                found.setdefault(EventID(row["original_id"]), []).append(EventID(row["edit_id"]))
        return found

    async def references(
        self, parent_ids: Collection[EventID], exclude_senders: Collection[UserID]
    ) -> dict[EventID, list[EventID]]:
        """The oldest ``MAX_REFERENCES`` unredacted ``m.reference`` children of each
        parent, oldest first (Synapse's order), leaving out those from
        ``exclude_senders`` ("Reference relations")."""
        return await self._children_of(
            parent_ids, "m.reference", MAX_REFERENCES, exclude_senders, newest_first=False
        )

    async def _children_of(
        self,
        parent_ids: Collection[EventID],
        rel_type: str,
        per_parent: int,
        exclude_senders: Collection[UserID],
        *,
        newest_first: bool = True,
    ) -> dict[EventID, list[EventID]]:
        """Children of one ``rel_type`` in the parent's room: the first ``per_parent`` of
        each in stream order (newest first if asked). One statement per 100 parents, a
        UNION ALL of one range of ``events_relates_stream`` per parent, each stopped
        after ``per_parent`` rows however many children the parent has."""
        found: dict[EventID, list[EventID]] = {}
        parents = list(set(parent_ids))
        excluded = sorted(set(exclude_senders))
        order = "DESC" if newest_first else "ASC"
        for start in range(0, len(parents), _UNION_CHUNK):
            chunk = parents[start : start + _UNION_CHUNK]
            not_excluded = (
                f" AND child.sender NOT IN ({placeholders(len(excluded), 3 + len(chunk))})"
                if excluded
                else ""
            )
            branches = [
                "SELECT * FROM (SELECT child.relates_to AS parent_id, child.event_id,"
                " child.stream_ordering FROM events AS child JOIN events AS parent"
                # ``|| ''``: not by the room's index (SQLite's choice without it).
                " ON parent.event_id = child.relates_to AND parent.room_id = child.room_id || ''"
                f" WHERE child.relates_to = ${3 + i} AND child.rel_type = $1"
                f" AND {_LIVE_CHILD}{not_excluded}"
                f" ORDER BY child.stream_ordering {order} LIMIT $2) AS parent{i}"
                for i in range(len(chunk))
            ]
            rows = await self._db.fetch(
                " UNION ALL ".join(branches) + f" ORDER BY parent_id, stream_ordering {order}",
                rel_type,
                per_parent,
                *chunk,
                *excluded,
            )
            for row in rows:
                found.setdefault(EventID(row["parent_id"]), []).append(EventID(row["event_id"]))
        return found
