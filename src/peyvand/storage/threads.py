"""Threads storage (Client-Server API, "Threading"). Schema: 033_threads.sql.

- ``threads``: one row per (room, thread root) with the thread's latest event, the one
  with the highest stream position: ``GET /threads`` pages through a room's threads by
  that position, newest first, one index range scan (``threads_by_activity``). Unread
  counts per thread (``storage.push_actions``) find the threads active after a position
  the same way.
- ``thread_participants``: who sent an event in a thread; with the root's sender (read
  from ``events``) that is who "participated" in it.

Rows are written with the events, in their group commit (``write``); a backfilled event
(negative position) never replaces a later latest event. A purge or a redaction moves a
thread's latest event back to its newest remaining one, or removes the thread with its
last event (``forget_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.storage.database import Connection, Database, iter_chunks, placeholders
from peyvand.types import EventID, RoomID, UserID

# Room IDs per statement when reading many rooms (well under both backends' limits).
_CHUNK: Final = 500
# The receipt types that mark events as read (Client-Server API, "Receiving
# notifications": the more recent of m.read and m.read.private counts).
_READ_TYPES: Final = ("m.read", "m.read.private")


@dataclass(frozen=True, slots=True)
class ThreadEvent:
    """An event of thread ``thread_id`` (the root's event ID) being stored."""

    room_id: RoomID
    thread_id: EventID
    event_id: EventID
    stream_ordering: int
    sender: UserID


@dataclass(frozen=True, slots=True)
class ThreadRow:
    thread_id: EventID
    latest_event_id: EventID
    latest_stream_ordering: int


_UPSERT_THREAD: Final = (
    "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_stream_ordering)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, thread_id) DO UPDATE SET"
    " latest_event_id = excluded.latest_event_id,"
    " latest_stream_ordering = excluded.latest_stream_ordering"
    " WHERE threads.latest_stream_ordering < excluded.latest_stream_ordering"
)
_ADD_PARTICIPANT: Final = (
    "INSERT INTO thread_participants (room_id, thread_id, user_id) VALUES ($1, $2, $3)"
    " ON CONFLICT (room_id, thread_id, user_id) DO NOTHING"
)
# $1 room, $2 before (exclusive), $3 limit, $4 the participant.
_PARTICIPATED: Final = (
    " AND (EXISTS (SELECT 1 FROM thread_participants AS p WHERE p.room_id = t.room_id"
    " AND p.thread_id = t.thread_id AND p.user_id = $4)"
    " OR EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = t.thread_id AND e.sender = $4))"
)


async def forget_events(txn: Connection, event_ids: Sequence[EventID]) -> None:
    """Inside the transaction that purged or redacted ``event_ids`` (a redacted event
    relates to nothing): each thread whose latest event was one of them takes its newest
    remaining unredacted thread event, or is removed when none remains
    (``threads_by_latest_event``, then the replies by ``events_relates``)."""
    if not event_ids:
        return
    where = f"latest_event_id IN ({placeholders(len(event_ids))})"
    replies = (
        "FROM events AS e WHERE e.relates_to = threads.thread_id AND e.rel_type = 'm.thread'"
        " AND e.room_id = threads.room_id AND e.redacted_by IS NULL"
    )
    await txn.execute(
        f"DELETE FROM threads WHERE {where} AND NOT EXISTS (SELECT 1 {replies})", *event_ids
    )
    await txn.execute(
        f"UPDATE threads SET latest_event_id = (SELECT e.event_id {replies}"
        " ORDER BY e.stream_ordering DESC LIMIT 1),"
        f" latest_stream_ordering = (SELECT MAX(e.stream_ordering) {replies}) WHERE {where}",
        *event_ids,
    )


class ThreadStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(self, txn: Connection, events: Sequence[ThreadEvent]) -> None:
        """Record ``events`` (in stream order) in their threads, inside ``txn`` (the
        events' own group commit): one statement per table for the whole batch."""
        if not events:
            return
        await txn.executemany(
            _UPSERT_THREAD,
            [(e.room_id, e.thread_id, e.event_id, e.stream_ordering) for e in events],
        )
        participants = dict.fromkeys((e.room_id, e.thread_id, e.sender) for e in events)
        await txn.executemany(_ADD_PARTICIPANT, list(participants))

    async def get_threads(
        self,
        room_id: RoomID,
        *,
        before: int | None,
        limit: int,
        participant: UserID | None = None,
    ) -> list[ThreadRow]:
        """Up to ``limit`` of the room's threads whose latest event is before position
        ``before`` (None: any), latest first; with ``participant``, only the threads
        whose root or one of whose events they sent."""
        bound = before if before is not None else _MAX_POSITION
        where = _PARTICIPATED if participant is not None else ""
        rows = await self._db.fetch(
            "SELECT t.thread_id, t.latest_event_id, t.latest_stream_ordering FROM threads AS t"
            f" WHERE t.room_id = $1 AND t.latest_stream_ordering < $2{where}"
            " ORDER BY t.latest_stream_ordering DESC LIMIT $3",
            room_id,
            bound,
            limit,
            *((participant,) if participant is not None else ()),
        )
        return [ThreadRow(EventID(r[0]), EventID(r[1]), int(r[2])) for r in rows]

    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]:
        """room_id -> stream position of the event of the user's furthest unthreaded
        ``m.read``/``m.read.private`` receipt, which reads every thread up to it
        ("Threaded read receipts"; main-timeline and thread receipts are read with the
        counts, ``storage.unread_counts``); rooms without one are absent."""
        found: dict[RoomID, int] = {}
        async for chunk in iter_chunks(room_ids, _CHUNK):
            rows = await self._db.fetch(
                "SELECT room_id, MAX(event_stream_ordering) AS position FROM receipts"
                " WHERE user_id = $1 AND receipt_type IN ($2, $3) AND thread_id = ''"
                f" AND room_id IN ({placeholders(len(chunk), 4)}) GROUP BY room_id",
                user_id,
                *_READ_TYPES,
                *chunk,
            )
            found.update((RoomID(r["room_id"]), int(r["position"])) for r in rows)
        return found


# Above every stream position (the canonical JSON maximum integer).
_MAX_POSITION: Final = 2**53 - 1
