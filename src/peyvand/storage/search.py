"""The full-text index of server-side search (migration 032; Client-Server API,
"Server Side Search").

``event_search`` holds the normalised text (``events.search_text``) of each searchable
timeline event. It changes only inside other writes' transactions: ``index_events`` in
the events' own commit (local, received over federation or backfilled: every timeline
event goes through ``EventStore.persist_events``), ``unindex_events`` where a redaction
takes effect (``storage.redactions``) and where a purge or an erasure removes content
(``storage.purge``: retention, disappearing messages, the redacted-content purge,
erasure). So the index never holds text the timeline no longer does.

Queries: SQLite matches the FTS5 table ``event_search_fts`` (rank: BM25), PostgreSQL the
GIN index over the stored ``vector``, ``to_tsvector('simple', value)`` (rank:
``ts_rank``). Each term is a word or, from ``MIN_PREFIX`` characters on, a word's
beginning; every term must match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from peyvand.events.search_text import SEARCH_KEYS, searchable_text
from peyvand.storage.database import Connection, Database, placeholders
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID

__all__ = ["SearchHit", "SearchQuery", "SearchStore", "index_events", "unindex_events"]

_CHUNK: Final = 500
# The shortest term that also matches the words it begins.
MIN_PREFIX: Final = 3
_SEARCHED_TYPES: Final = tuple(SEARCH_KEYS.values())

Order = Literal["rank", "recent"]


async def index_events(txn: Connection, batch: Sequence[EventToPersist]) -> None:
    """Index the searchable events of a group commit, after its redactions were applied
    (an event stored redacted, or redacted in the same commit, is not indexed)."""
    rows = [
        (e.pdu.event_id, e.stream_ordering, e.pdu.room_id, *found)
        for e in batch
        if e.redacted_by is None and (found := searchable_text(e.pdu.type, e.pdu.content))
    ]
    if rows:
        await txn.executemany(_INSERT, rows)


async def unindex_events(txn: Connection, event_ids: Sequence[EventID]) -> None:
    """Remove ``event_ids`` from the index (redacted, purged or erased)."""
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        await txn.execute(
            f"DELETE FROM event_search WHERE event_id IN ({placeholders(len(chunk))})", *chunk
        )


_INSERT: Final = (
    "INSERT INTO event_search (event_id, stream_ordering, room_id, key, value)"
    " SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM events"
    " WHERE event_id = $1 AND (redacted_by IS NOT NULL OR content_purged_ts IS NOT NULL))"
    " ON CONFLICT (event_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to look for: all ``terms`` (from ``events.search_text.search_terms``), in
    ``room_ids``, under ``keys``; senders limited to ``senders`` (None: anyone) and
    never ``not_senders``."""

    terms: tuple[str, ...]
    room_ids: tuple[RoomID, ...]
    keys: tuple[str, ...]
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: EventID
    room_id: RoomID
    stream_ordering: int
    # Higher is better.
    rank: float


class SearchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, query: SearchQuery, order: Order, *, position: int | None, limit: int
    ) -> list[SearchHit]:
        """Up to ``limit`` matches, best first (``rank``) or newest first (``recent``).
        ``position`` continues a previous page: for ``recent`` the stream position of
        the last match seen (exclusive), for ``rank`` how many matches were seen."""
        where, args = self._where(query)
        # The match's stream position; on SQLite the FTS5 rowid itself, which FTS5 reads
        # in order (newest first, stopping at the limit) instead of sorting every match.
        stream = "f.rowid" if self._db.dialect == "sqlite" else "s.stream_ordering"
        if order == "recent" and position is not None:
            args.append(position)
            where += f" AND {stream} < ${len(args)}"
        args.append(limit)
        tail = f"LIMIT ${len(args)}"
        if order == "rank" and position is not None:
            args.append(position)
            tail += f" OFFSET ${len(args)}"
        ordering = f"{stream} DESC" if order == "recent" else f"rank DESC, {stream} DESC"
        rows = await self._db.fetch(
            f"SELECT s.event_id, s.room_id, s.stream_ordering, {self._rank()} AS rank"
            f" FROM {self._source(query)} WHERE {where} ORDER BY {ordering} {tail}",
            *args,
        )
        return [
            SearchHit(
                EventID(r["event_id"]),
                RoomID(r["room_id"]),
                int(r["stream_ordering"]),
                float(r["rank"]),
            )
            for r in rows
        ]

    async def count(self, query: SearchQuery, *, at_most: int) -> int:
        """How many events match, counting no further than ``at_most`` (the work stays
        bounded for a word in most messages; before history visibility: an approximate
        count, as the spec allows)."""
        where, args = self._where(query)
        args.append(at_most)
        value = await self._db.fetchval(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self._source(query)} WHERE {where}"
            f" LIMIT ${len(args)}) AS matches",
            *args,
        )
        return int(value or 0)

    def _source(self, query: SearchQuery) -> str:
        """The tables read: the index, and the events only to filter by sender."""
        source = (
            "event_search_fts f JOIN event_search s ON s.stream_ordering = f.rowid"
            if self._db.dialect == "sqlite"
            else "event_search s"
        )
        if query.senders is not None or query.not_senders:
            source += " JOIN events e ON e.stream_ordering = s.stream_ordering"
        return source

    def _rank(self) -> str:
        if self._db.dialect == "sqlite":
            # BM25 is lower for better matches.
            return "-bm25(event_search_fts)"
        return "ts_rank(s.vector, to_tsquery('simple', $1))"

    def _where(self, query: SearchQuery) -> tuple[str, list[Any]]:
        sqlite = self._db.dialect == "sqlite"
        # A term of fewer than MIN_PREFIX characters matches whole words only: a prefix
        # of one or two letters would match most of the index.
        if sqlite:
            match = " ".join(
                f'"{term}"*' if len(term) >= MIN_PREFIX else f'"{term}"' for term in query.terms
            )
            conditions = ["event_search_fts MATCH $1"]
        else:
            match = " & ".join(
                f"'{term}':*" if len(term) >= MIN_PREFIX else f"'{term}'" for term in query.terms
            )
            conditions = ["s.vector @@ to_tsquery('simple', $1)"]
        args: list[Any] = [match]

        def one_of(column: str, values: Sequence[str], negate: bool = False) -> None:
            args.append(orjson.dumps(list(values)).decode() if sqlite else list(values))
            listed = (
                f"(SELECT value FROM json_each(${len(args)}))"
                if sqlite
                else f"(SELECT unnest(${len(args)}::text[]))"
            )
            conditions.append(f"{column} {'NOT IN' if negate else 'IN'} {listed}")

        one_of("s.room_id", query.room_ids)
        if set(query.keys) != set(SEARCH_KEYS):
            one_of("s.key", query.keys)
        if query.senders is not None:
            one_of("e.sender", query.senders)
        if query.not_senders:
            one_of("e.sender", query.not_senders, negate=True)
        return " AND ".join(conditions), args

    # -- events stored before migration 032 ---------------------------------------------

    async def index_earlier_events(self, limit: int) -> bool:
        """Index the next ``limit`` events (newest first) among those stored before the
        index existed; False once none are left. One transaction: on PostgreSQL the rows
        read are locked, so a redaction, purge or erasure committing meanwhile either
        happened before (its event is skipped) or waits and then removes the new row."""
        lock = " FOR UPDATE" if self._db.dialect == "postgres" else ""
        async with self._db.transaction() as txn:
            position = await txn.fetchval("SELECT next_position FROM event_search_backfill")
            if position is None:
                return False
            rows = await txn.fetch(
                "SELECT event_id, stream_ordering, room_id, type, pdu, redacted_by,"
                " content_purged_ts FROM events WHERE stream_ordering <= $1"
                f" ORDER BY stream_ordering DESC LIMIT $2{lock}",
                position,
                limit,
            )
            found = []
            for row in rows:
                if row["type"] not in _SEARCHED_TYPES or row["redacted_by"] is not None:
                    continue
                if row["content_purged_ts"] is not None:
                    continue
                content = orjson.loads(row["pdu"]).get("content")
                text = searchable_text(row["type"], content) if isinstance(content, dict) else None
                if text is not None:
                    found.append((row["event_id"], row["stream_ordering"], row["room_id"], *text))
            if found:
                await txn.executemany(_INSERT, found)
            if len(rows) < limit:
                await txn.execute("DELETE FROM event_search_backfill")
                return False
            await txn.execute(
                "UPDATE event_search_backfill SET next_position = $1",
                int(rows[-1]["stream_ordering"]) - 1,
            )
            return True
