"""Push actions storage: what each room's events notify, and how each local user's
outcome differs, kept so that an unread count costs a few index look-ups whatever the
room's size. Schema: 029_room_push_counts.sql.

Four tables:

- ``push_room_notifications``: one row per event whose *room outcome* (the actions for a
  member with the default rules whom the event does not name) notifies, with the room's
  running counts up to it (``notify_seq``, ``highlight_seq``) and the same within its
  thread. The number of notifying events after position P is ``last.notify_seq -
  first.notify_seq + 1``, ``first`` being the room's first row after P: two index
  look-ups, however many events are unread. Rows before ``first`` never enter the sum,
  so deleting old rows changes no count.
- ``push_user_exceptions``: one row per (user, event) whose outcome for the user differs
  from the room outcome, holding the differences (-1, 0 or 1) and their running sums for
  the user in the room, counted the same way.
- ``push_threads``: per room and thread (not the main timeline), the position of its
  latest row of either table above: the threads a per-thread count looks at.
- ``push_read_marks``: how far a user has read a room, or one thread of it, by their own
  events or by leaving it (migration 039); receipts are the caller's (this module knows
  nothing of them).

Running counts are computed by the inserts themselves, from the row before in the same
room (or thread, or user and room), so they are right however the batches are split or
retried; they rely on a room's rows being inserted in stream order, which one writer
committing in queue order, with positions allocated under the room's lock, guarantees.
Purging an event deletes its rows and takes it out of the running counts of the rows
after it (``forget_events``, one statement per room however many are purged).

A purge runs beside the writer, and its fix-up must not interleave with an insert in the
same room: under PostgreSQL's READ COMMITTED an insert reading the room's last row before
the purge commits, or a purge updating the rows before the insert commits, leaves the new
row's counts off by the purged rows, and every later count with it. So both take the
room's lock first (``lock_rooms``: a transaction-scoped advisory lock per room on
PostgreSQL; SQLite's one writer orders all transactions already), and each statement
after it sees what the other committed. No deadlock: the writer takes them after storing
its events and then writes only push rows of the rooms it holds and rows of its new
events (expiry timers, the federation outbox); a purge takes them before it touches a
push row. So neither waits for a row the other holds while that one waits for a lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.storage.database import Connection, Database, Dialect, placeholders
from peyvand.storage.unread_counts import ThreadedUnread, count_unread, count_unread_by_thread
from peyvand.storage.unread_counts import UnreadCount as UnreadCount
from peyvand.types import EventID, RoomID, UserID

# The first key of the rooms' advisory locks ("PUSH"), the second being the room's hash:
# the two-key form, apart from the one-key locks of other modules (storage/audit.py).
_ROOM_LOCK_CLASS: Final = 0x50555348


@dataclass(frozen=True, slots=True)
class RoomNotification:
    """An event whose room outcome notifies (``highlight``: and highlights)."""

    room_id: RoomID
    stream_ordering: int
    event_id: EventID
    sender: UserID
    # 'main', or the thread root's event ID.
    thread_id: str
    highlight: bool


@dataclass(frozen=True, slots=True)
class UserException:
    """How ``user_id``'s outcome for an event differs from its room outcome: ``notify`` and
    ``highlight`` are the user's minus the room's (each -1, 0 or 1)."""

    user_id: UserID
    room_id: RoomID
    stream_ordering: int
    event_id: EventID
    sender: UserID
    thread_id: str
    notify: int
    highlight: int


@dataclass(frozen=True, slots=True)
class ReadUpTo:
    """Everything of ``user_id`` in ``room_id`` up to and including ``stream_ordering``
    has been read: in the whole room (``thread_id`` ''), or in its main timeline
    ('main') or one thread (its root's event ID) only."""

    user_id: UserID
    room_id: RoomID
    stream_ordering: int
    thread_id: str = ""


def _last(table: str, column: str, where: str) -> str:
    """The running count ``column`` of the latest row of ``table`` matching ``where``
    before position $2 (0 if none)."""
    return (
        f"COALESCE((SELECT p.{column} FROM {table} AS p WHERE {where}"
        " AND p.stream_ordering < $2 ORDER BY p.stream_ordering DESC LIMIT 1), 0)"
    )


_ROOM = "p.room_id = $1"
_THREAD = "p.room_id = $1 AND p.thread_id = $5"
_INSERT_ROOM = (
    "INSERT INTO push_room_notifications (room_id, stream_ordering, event_id, sender,"
    " thread_id, highlight, notify_seq, highlight_seq, thread_notify_seq,"
    " thread_highlight_seq) VALUES ($1, $2, $3, $4, $5, CAST($6 AS SMALLINT),"
    f" {_last('push_room_notifications', 'notify_seq', _ROOM)} + 1,"
    f" {_last('push_room_notifications', 'highlight_seq', _ROOM)} + CAST($6 AS SMALLINT),"
    f" {_last('push_room_notifications', 'thread_notify_seq', _THREAD)} + 1,"
    f" {_last('push_room_notifications', 'thread_highlight_seq', _THREAD)} + CAST($6 AS SMALLINT))"
    " ON CONFLICT (room_id, stream_ordering) DO NOTHING"
)
# Parameters: $1 room, $2 position, $3 event, $4 sender, $5 thread, $6 user, $7 notify,
# $8 highlight.
_USER = "p.room_id = $1 AND p.user_id = $6"
_USER_THREAD = "p.room_id = $1 AND p.user_id = $6 AND p.thread_id = $5"
_INSERT_EXCEPTION = (
    "INSERT INTO push_user_exceptions (room_id, stream_ordering, event_id, sender,"
    " thread_id, user_id, notify, highlight, notify_seq, highlight_seq, thread_notify_seq,"
    " thread_highlight_seq)"
    " VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS SMALLINT), CAST($8 AS SMALLINT),"
    f" {_last('push_user_exceptions', 'notify_seq', _USER)} + CAST($7 AS SMALLINT),"
    f" {_last('push_user_exceptions', 'highlight_seq', _USER)} + CAST($8 AS SMALLINT),"
    f" {_last('push_user_exceptions', 'thread_notify_seq', _USER_THREAD)} + CAST($7 AS SMALLINT),"
    f" {_last('push_user_exceptions', 'thread_highlight_seq', _USER_THREAD)}"
    " + CAST($8 AS SMALLINT))"
    " ON CONFLICT (user_id, room_id, stream_ordering) DO NOTHING"
)
_THREAD_ACTIVE = (
    "INSERT INTO push_threads (room_id, thread_id, latest_stream_ordering) VALUES ($1, $2, $3)"
    " ON CONFLICT (room_id, thread_id) DO UPDATE"
    " SET latest_stream_ordering = excluded.latest_stream_ordering"
    " WHERE excluded.latest_stream_ordering > push_threads.latest_stream_ordering"
)
_MARK_READ = (
    "INSERT INTO push_read_marks (user_id, room_id, stream_ordering, thread_id)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, thread_id)"
    " DO UPDATE SET stream_ordering = excluded.stream_ordering"
    " WHERE excluded.stream_ordering > push_read_marks.stream_ordering"
)


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self,
        txn: Connection,
        notifications: Sequence[RoomNotification],
        exceptions: Sequence[UserException],
        read: Sequence[ReadUpTo],
    ) -> None:
        """Add ``notifications`` and ``exceptions`` (each room's in stream order), then
        record ``read`` as read marks, inside ``txn`` (the events' own group commit), one
        statement each, after taking the rooms' locks (``lock_rooms``). Nothing read is
        deleted: counts start after the read position whatever lies before it, and
        GET /notifications lists read events as they notified (``storage.notifications``);
        rows go with their events (``forget_events``)."""
        rooms = {n.room_id for n in notifications} | {e.room_id for e in exceptions}
        await lock_rooms(txn, self._db.dialect, rooms | {r.room_id for r in read})
        if notifications:
            await txn.executemany(
                _INSERT_ROOM,
                [
                    (
                        n.room_id,
                        n.stream_ordering,
                        n.event_id,
                        n.sender,
                        n.thread_id,
                        int(n.highlight),
                    )
                    for n in notifications
                ],
            )
        if exceptions:
            await txn.executemany(
                _INSERT_EXCEPTION,
                [
                    (
                        e.room_id,
                        e.stream_ordering,
                        e.event_id,
                        e.sender,
                        e.thread_id,
                        e.user_id,
                        e.notify,
                        e.highlight,
                    )
                    for e in exceptions
                ],
            )
        latest: dict[tuple[RoomID, str], int] = {}
        rows: Iterable[RoomNotification | UserException] = (*notifications, *exceptions)
        for row in rows:
            if row.thread_id != "main":
                key = (row.room_id, row.thread_id)
                latest[key] = max(latest.get(key, 0), row.stream_ordering)
        if latest:
            await txn.executemany(
                _THREAD_ACTIVE, [(room, thread, at) for (room, thread), at in latest.items()]
            )
        if read:
            await txn.executemany(
                _MARK_READ, [(r.user_id, r.room_id, r.stream_ordering, r.thread_id) for r in read]
            )

    async def get_unread_counts(
        self,
        user_id: UserID,
        read_positions: Mapping[RoomID, int],
        ignored: Collection[UserID] = (),
        at: int | None = None,
    ) -> dict[RoomID, UnreadCount]:
        """room_id -> the user's notifying events after the later of the room's
        ``read_positions`` entry (their unthreaded receipt; 0: none read) and their read
        mark, less those their main and threaded receipts read, leaving out events sent
        by ``ignored`` users and events after position ``at`` (None: none); rooms
        without any are absent (``storage.unread_counts``)."""
        return await count_unread(self._db, user_id, read_positions, ignored, at)

    async def get_unread_counts_by_thread(
        self,
        user_id: UserID,
        read_positions: Mapping[RoomID, int],
        ignored: Collection[UserID] = (),
        at: int | None = None,
    ) -> dict[RoomID, ThreadedUnread]:
        """The same counts split into the main timeline's and each thread's."""
        return await count_unread_by_thread(self._db, user_id, read_positions, ignored, at)


def _room_lock_key(room_id: str) -> int:
    """The second key of ``room_id``'s advisory lock: a signed 32-bit hash of its ID (two
    rooms sharing one only wait for each other)."""
    digest = hashlib.blake2b(room_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_rooms(txn: Connection, dialect: Dialect, room_ids: Iterable[str]) -> None:
    """Hold the locks of ``room_ids``' running counts until ``txn`` ends, so that the
    rooms' inserts and purges follow one another. PostgreSQL: advisory locks taken in key
    order, so two transactions never wait for each other in a cycle. SQLite: nothing to
    take, its one writer runs one transaction at a time."""
    if dialect != "postgres":
        return
    keys = sorted({_room_lock_key(room_id) for room_id in room_ids})
    if keys:
        await txn.executemany(
            "SELECT pg_advisory_xact_lock($1, $2)", [(_ROOM_LOCK_CLASS, key) for key in keys]
        )


async def forget_events(txn: Connection, dialect: Dialect, event_ids: Sequence[EventID]) -> None:
    """Delete the rows of purged ``event_ids`` (inside the purge's transaction) and take
    them out of the running counts of the rows after them, so counts across them stay
    exact: one statement per room and table, each later row written once. Purged rows
    with no remaining row before them (the usual purge of a room's oldest history) change
    no later row: no count ever spans them. The rooms' locks (``lock_rooms``) are taken
    first, before any of their rows changes."""
    if not event_ids:
        return
    where = f"event_id IN ({placeholders(len(event_ids))})"
    if dialect == "postgres":
        rooms = await txn.fetch(
            f"SELECT room_id FROM push_room_notifications WHERE {where}"
            f" UNION SELECT room_id FROM push_user_exceptions WHERE {where}",
            *event_ids,
        )
        await lock_rooms(txn, dialect, [r["room_id"] for r in rooms])
    deleted = await txn.fetch(
        f"DELETE FROM push_room_notifications WHERE {where}"
        " RETURNING room_id, stream_ordering, thread_id, highlight",
        *event_ids,
    )
    users = await txn.fetch(
        f"DELETE FROM push_user_exceptions WHERE {where}"
        " RETURNING user_id, room_id, stream_ordering, thread_id, notify, highlight",
        *event_ids,
    )
    gone: dict[tuple[bool, str], list[_Gone]] = {}
    for r in deleted:
        gone.setdefault((True, r["room_id"]), []).append(
            ("", r["stream_ordering"], r["thread_id"], 1, int(r["highlight"]))
        )
    for u in users:
        gone.setdefault((False, u["room_id"]), []).append(
            (
                u["user_id"],
                u["stream_ordering"],
                u["thread_id"],
                int(u["notify"]),
                int(u["highlight"]),
            )
        )
    for (per_room, room_id), rows in gone.items():
        for start in range(0, len(rows), _GAP_CHUNK):
            chunk = rows[start : start + _GAP_CHUNK]
            await txn.execute(
                _close_gaps_sql(per_room, len(chunk)),
                room_id,
                *(value for row in chunk for value in row),
            )


# A deleted row: (user_id or '', stream_ordering, thread_id, notify, highlight).
_Gone = tuple[str, int, str, int, int]
# Deleted rows per statement (five parameters each).
_GAP_CHUNK: Final = 1000


def _close_gaps_sql(per_room: bool, count: int) -> str:
    """Subtract ``count`` deleted rows ``g`` (parameters from $2) of room $1 from the
    running counts of the remaining rows after them: of the room's rows, or of the same
    user's exceptions. ``h``: the deleted rows with a remaining row before them."""
    table = "push_room_notifications" if per_room else "push_user_exceptions"
    values = ", ".join(
        f"(CAST(${2 + 5 * i} AS TEXT), CAST(${3 + 5 * i} AS BIGINT), CAST(${4 + 5 * i} AS TEXT),"
        f" CAST(${5 + 5 * i} AS BIGINT), CAST(${6 + 5 * i} AS BIGINT))"
        for i in range(count)
    )
    same_user = "" if per_room else " AND q.user_id = g.user_id"
    own = "" if per_room else f" AND h.user_id = {table}.user_id"
    thread = f"{own} AND h.thread_id = {table}.thread_id"
    sets = [
        _subtract(table, "notify_seq", "notify", own),
        _subtract(table, "highlight_seq", "highlight", own),
        _subtract(table, "thread_notify_seq", "notify", thread),
        _subtract(table, "thread_highlight_seq", "highlight", thread),
    ]
    users = (
        ""
        if per_room
        else " AND user_id IN (SELECT h.user_id FROM h) AND EXISTS (SELECT 1 FROM h"
        f" WHERE h.so < {table}.stream_ordering{own})"
    )
    return (
        f"WITH g (user_id, so, thread_id, notify, highlight) AS (VALUES {values}),"
        " h AS (SELECT g.user_id, g.so, g.thread_id, g.notify, g.highlight FROM g"
        f" WHERE EXISTS (SELECT 1 FROM {table} AS q WHERE q.room_id = $1{same_user}"
        " AND q.stream_ordering < g.so))"
        f" UPDATE {table} SET {', '.join(sets)}"
        f" WHERE room_id = $1{users} AND stream_ordering > (SELECT MIN(h.so) FROM h)"
    )


def _subtract(table: str, target: str, column: str, match: str) -> str:
    """``target`` less what the deleted rows ``h`` before the row (and matching it as
    ``match`` says) added to it."""
    return (
        f"{target} = {target} - CAST((SELECT COALESCE(SUM(h.{column}), 0) FROM h"
        f" WHERE h.so < {table}.stream_ordering{match}) AS BIGINT)"
    )
