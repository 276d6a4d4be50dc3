"""Unread notification counts read from the push tables that ``storage.push_actions``
writes (Client-Server API, "Receiving notifications"; "Threaded read receipts").

Every count is a difference of running counts: the notifying rows in (lo, hi] of a room
(or of one thread of it, or of one user's exceptions) are the running count at the last
row at or before ``hi`` less the running count just before the first row after ``lo``,
two index look-ups however many rows lie between. Per user and room:

- ``upto``: the later of the user's unthreaded read receipt (given by the caller) and
  their room-wide read mark (thread ''); everything up to it is read, in every thread.
- the main timeline is read up to the latest of ``upto``, the user's ``main`` receipts
  and ``main`` read mark (their own latest event there); thread T up to the latest of
  ``upto``, their receipt in T and their read mark in T (receipts and marks are read
  here, by primary key).

``count_unread`` gives the room's whole count: everything after ``upto``, less the main
timeline's rows read by the main receipt and each thread's read by its receipt or mark
(only threads the user has one in beyond ``upto``). ``count_unread_by_thread`` gives the
main timeline's count and each thread's, the threads found among those active after
``upto`` (``push_threads``, by latest position). The first statement per 500 rooms tells
which rooms need that second look; a user who never reads by thread costs one. Events of
ignored users are taken out after, from their rows' senders. Counts may be taken up to a
stream position (``at``): a sync answering at its token counts nothing committed after
it, so what it keeps can be brought forward by the events that come later.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from peyvand.storage.database import Database, Row, placeholders
from peyvand.types import RoomID, UserID

# Rooms per counting statement (two parameters each) and ignored senders per statement:
# together well under both backends' parameter limits.
_ROOM_CHUNK: Final = 500
_SENDER_CHUNK: Final = 500
_ROOMS: Final = "push_room_notifications"
_USERS: Final = "push_user_exceptions"
_MAIN: Final = "'main'"
# The receipt types that read events ("Receiving notifications"), as an SQL list.
_READ_TYPES: Final = "('m.read', 'm.read.private')"
# Statements kept per builder, by room count: building one is a few KiB of text, and a
# woken sync counts one room (issue 15, hot room).
_STATEMENTS: Final = 32
# ``at`` when every event counts: above any stream position, within a signed 64-bit int.
_UNBOUNDED: Final = 2**62


@dataclass(frozen=True, slots=True)
class UnreadCount:
    notifications: int
    highlights: int

    def __add__(self, other: UnreadCount) -> UnreadCount:
        return UnreadCount(
            self.notifications + other.notifications, self.highlights + other.highlights
        )

    def __sub__(self, other: UnreadCount) -> UnreadCount:
        return UnreadCount(
            self.notifications - other.notifications, self.highlights - other.highlights
        )

    def __bool__(self) -> bool:
        """Whether anything is unread."""
        return self.notifications > 0 or self.highlights > 0


_NONE: Final = UnreadCount(0, 0)


@dataclass(slots=True)
class ThreadedUnread:
    """A room's unread counts split per thread: the main timeline's, and each thread's
    that has any (by thread root)."""

    main: UnreadCount = _NONE
    threads: dict[str, UnreadCount] = field(default_factory=dict)


def _at(rooms: int) -> str:
    """The parameter after $1 (the user) and ``rooms`` (room, position) pairs: the
    position the counts are taken at."""
    return f"${2 + 2 * rooms}"


def _values(first: int, count: int) -> str:
    """A VALUES list of ``count`` (room ID, position) pairs from parameter ``first``."""
    return ", ".join(
        f"(CAST(${first + 2 * i} AS TEXT), CAST(${first + 2 * i + 1} AS BIGINT))"
        for i in range(count)
    )


def _receipt(room: str, thread: str, after: str) -> str:
    """The position of user $1's furthest read receipt in ``thread`` of ``room`` beyond
    ``after`` (NULL if none): two primary-key look-ups."""
    return (
        "(SELECT MAX(c.event_stream_ordering) FROM receipts AS c WHERE c.room_id = "
        f"{room} AND c.receipt_type IN {_READ_TYPES} AND c.user_id = $1"
        f" AND c.thread_id = {thread} AND c.event_stream_ordering > {after})"
    )


def _range(
    prefix: str,
    room: str,
    thread: str | None,
    lo: str,
    hi: str | None,
    at: str,
) -> str:
    """Select expressions for the rows in (``lo``, ``hi``] (``hi`` None: no bound) of
    ``room`` (of its ``thread`` if given) up to position ``at``, for the room rows and
    user $1's exceptions: ``{prefix}{r|u}{n|h}{1|0}``, the running count at the last row
    at or before ``hi`` and ``at`` (1) and just before the first row after ``lo`` (0); a
    range with no row up to ``at`` gives the same running count twice, nothing. A bounded
    range that is empty (``hi`` not after ``lo``: most users read their main timeline no
    further than the rest) looks nothing up: its expressions are NULL, which counts
    nothing."""
    if thread:
        notify, highlight = "thread_notify_seq", "thread_highlight_seq"
    else:
        notify, highlight = "notify_seq", "highlight_seq"
    in_thread = f" AND n.thread_id = {thread}" if thread else ""
    upper = f" AND n.stream_ordering <= {at}" + (f" AND n.stream_ordering <= {hi}" if hi else "")
    last = f"{upper} ORDER BY n.stream_ordering DESC LIMIT 1"
    after = f" AND n.stream_ordering > {lo} ORDER BY n.stream_ordering LIMIT 1"
    columns = []
    for table, key, where, own in (
        (_ROOMS, "r", f"n.room_id = {room}{in_thread}", "1"),
        (_USERS, "u", f"n.user_id = $1 AND n.room_id = {room}{in_thread}", "n.notify"),
    ):
        for count, column, own_count in (
            ("n", notify, own),
            ("h", highlight, "n.highlight"),
        ):
            name = f"{prefix}{key}{count}"
            for suffix, query in (
                ("1", f"SELECT n.{column} FROM {table} AS n WHERE {where}{last}"),
                ("0", f"SELECT n.{column} - {own_count} FROM {table} AS n WHERE {where}{after}"),
            ):
                value = f"CASE WHEN {hi} > {lo} THEN ({query}) END" if hi else f"({query})"
                columns.append(f"{value} AS {name}{suffix}")
    return ", ".join(columns)


def _difference(last: Any, base: Any) -> int:
    """A running count's growth over a range: nothing when no row is in it."""
    return 0 if last is None or base is None else int(last) - int(base)


def _counted(row: Row, prefix: str) -> UnreadCount:
    """The count of a ``_range`` of ``row``."""

    def grown(key: str) -> int:
        return _difference(row[f"{prefix}{key}1"], row[f"{prefix}{key}0"])

    return UnreadCount(grown("rn") + grown("un"), grown("rh") + grown("uh"))


def _later(value: str, than: str) -> str:
    """The later of position ``value`` (NULL: none) and ``than`` (never NULL)."""
    return f"CASE WHEN {value} > {than} THEN {value} ELSE {than} END"


def _positions_sql(rooms: int, columns: str, more: str) -> str:
    """Per room (parameters from $2: room, unthreaded receipt position): ``upto`` (the
    later of that and the room-wide read mark), ``main_upto`` (the latest of it, the
    main receipts and the main read mark, each joined by primary key), then ``columns``
    over them (alias ``r``) and ``more``, whether the room needs a look at its threads.
    $1 is the user."""
    main = [
        f" LEFT JOIN receipts AS {alias} ON {alias}.room_id = v.room_id"
        f" AND {alias}.receipt_type = '{receipt_type}' AND {alias}.user_id = $1"
        f" AND {alias}.thread_id = {_MAIN}"
        for alias, receipt_type in (("p", "m.read"), ("q", "m.read.private"))
    ]
    marks = [
        f" LEFT JOIN push_read_marks AS {alias} ON {alias}.user_id = $1"
        f" AND {alias}.room_id = v.room_id AND {alias}.thread_id = {thread}"
        for alias, thread in (("m", "''"), ("k", _MAIN))
    ]
    upto = _later("m.stream_ordering", "v.given")
    main_upto = _later("b.k", _later("b.q", _later("b.p", "b.upto")))
    return (
        f"WITH v (room_id, given) AS (VALUES {_values(2, rooms)}),"
        f" b (room_id, upto, p, q, k) AS (SELECT v.room_id, {upto},"
        " p.event_stream_ordering, q.event_stream_ordering, k.stream_ordering"
        f" FROM v{''.join(marks)}{''.join(main)}),"
        f" r (room_id, upto, main_upto) AS (SELECT b.room_id, b.upto, {main_upto} FROM b)"
        f" SELECT r.room_id, r.upto, r.main_upto, {columns}, {more} AS more FROM r"
    )


@lru_cache(maxsize=_STATEMENTS)
def _count_sql(rooms: int) -> str:
    """``count_unread``'s statement for ``rooms`` rooms."""
    at = _at(rooms)
    columns = ", ".join(
        (
            _range("a_", "r.room_id", None, "r.upto", None, at),
            _range("m_", "r.room_id", _MAIN, "r.upto", "r.main_upto", at),
        )
    )
    return _positions_sql(rooms, columns, _thread_receipts_after("r.room_id", "r.upto"))


@lru_cache(maxsize=_STATEMENTS)
def _count_main_sql(rooms: int) -> str:
    """``count_unread_by_thread``'s statement for ``rooms`` rooms."""
    columns = _range("m_", "r.room_id", _MAIN, "r.main_upto", None, _at(rooms))
    return _positions_sql(rooms, columns, _threads_active_after("r.room_id", "r.upto"))


def _thread_receipts_after(room: str, upto: str) -> str:
    """Whether user $1 has a receipt or a read mark in a thread of ``room`` beyond
    ``upto``."""
    return (
        f"(EXISTS (SELECT 1 FROM receipts AS c WHERE c.room_id = {room}"
        f" AND c.receipt_type IN {_READ_TYPES} AND c.user_id = $1"
        f" AND c.thread_id NOT IN ('', {_MAIN}) AND c.event_stream_ordering > {upto})"
        f" OR EXISTS (SELECT 1 FROM push_read_marks AS k WHERE k.user_id = $1"
        f" AND k.room_id = {room} AND k.thread_id NOT IN ('', {_MAIN})"
        f" AND k.stream_ordering > {upto}))"
    )


def _threads_active_after(room: str, upto: str) -> str:
    """Whether a thread of ``room`` has a push row beyond ``upto``."""
    return (
        f"EXISTS (SELECT 1 FROM push_threads AS h WHERE h.room_id = {room}"
        f" AND h.latest_stream_ordering > {upto})"
    )


@lru_cache(maxsize=_STATEMENTS)
def _read_threads_sql(rooms: int) -> str:
    """Per (room, thread) where user $1's receipt or read mark is beyond the room's
    ``upto`` (parameters from $2: room, upto): the rows read by the later of them,
    (upto, hi]."""
    columns = _range("c_", "t.room_id", "t.thread_id", "t.lo", "t.hi", _at(rooms))
    return (
        f"WITH r (room_id, upto) AS (VALUES {_values(2, rooms)}),"
        " s (room_id, thread_id, lo, hi) AS (SELECT c.room_id, c.thread_id, r.upto,"
        " c.event_stream_ordering FROM r JOIN receipts AS c ON c.room_id = r.room_id"
        f" AND c.receipt_type IN {_READ_TYPES} AND c.user_id = $1"
        " AND c.thread_id NOT IN ('', 'main') AND c.event_stream_ordering > r.upto"
        " UNION ALL SELECT k.room_id, k.thread_id, r.upto, k.stream_ordering FROM r"
        " JOIN push_read_marks AS k ON k.user_id = $1 AND k.room_id = r.room_id"
        " AND k.thread_id NOT IN ('', 'main') AND k.stream_ordering > r.upto),"
        " t (room_id, thread_id, lo, hi) AS (SELECT s.room_id, s.thread_id, s.lo,"
        " MAX(s.hi) FROM s GROUP BY s.room_id, s.thread_id, s.lo)"
        f" SELECT t.room_id, t.thread_id, t.hi, {columns} FROM t"
    )


@lru_cache(maxsize=_STATEMENTS)
def _unread_threads_sql(rooms: int) -> str:
    """Per thread active after its room's ``upto`` (parameters from $2: room, upto) and
    after user $1's receipt and read mark in it: the rows after the latest of the three
    (``lo``)."""
    receipt = _receipt("h.room_id", "h.thread_id", "r.upto")
    columns = _range("t_", "t.room_id", "t.thread_id", "t.lo", None, _at(rooms))
    return (
        f"WITH r (room_id, upto) AS (VALUES {_values(2, rooms)}),"
        " s (room_id, thread_id, latest, lo, mark) AS (SELECT h.room_id, h.thread_id,"
        f" h.latest_stream_ordering, COALESCE({receipt}, r.upto), k.stream_ordering"
        " FROM r JOIN push_threads AS h"
        " ON h.room_id = r.room_id AND h.latest_stream_ordering > r.upto"
        " LEFT JOIN push_read_marks AS k ON k.user_id = $1 AND k.room_id = h.room_id"
        " AND k.thread_id = h.thread_id),"
        " t (room_id, thread_id, latest, lo) AS (SELECT s.room_id, s.thread_id, s.latest,"
        f" {_later('s.mark', 's.lo')} FROM s)"
        f" SELECT t.room_id, t.thread_id, t.lo, {columns} FROM t WHERE t.latest > t.lo"
    )


def _ignored_sql(table: str, rooms: int, senders: int) -> str:
    """The rows of ``table`` sent by ``senders`` after each room's position and up to the
    last parameter (parameters: for the exceptions the user, then the rooms, the senders
    and that position), with their thread and what each adds."""
    per_room = table == _ROOMS
    notify, user = ("1", "") if per_room else ("n.notify", " AND n.user_id = $1")
    first = 1 if per_room else 2
    return (
        "SELECT n.room_id, n.thread_id, n.stream_ordering, "
        f"{notify} AS n, n.highlight AS h FROM {table} AS n"
        f" JOIN (VALUES {_values(first, rooms)}) AS r ON n.room_id = r.column1"
        " AND n.stream_ordering > r.column2"
        f" WHERE n.sender IN ({placeholders(senders, first + 2 * rooms)}){user}"
        f" AND n.stream_ordering <= ${first + 2 * rooms + senders}"
    )


@dataclass(frozen=True, slots=True)
class _ReadUpTo:
    """How far a user has read each room: ``upto`` everywhere, ``main`` the main
    timeline, ``threads`` the threads listed. A thread not listed is read up to ``upto``
    when ``unlisted_at_upto``, else wholly read."""

    upto: dict[RoomID, int]
    main: dict[RoomID, int]
    threads: dict[tuple[RoomID, str], int]
    unlisted_at_upto: bool

    def of(self, room_id: RoomID, thread: str) -> int | None:
        if thread == "main":
            return self.main[room_id]
        listed = self.threads.get((room_id, thread))
        if listed is None and self.unlisted_at_upto:
            return self.upto[room_id]
        return listed


async def _ignored_rows(
    db: Database,
    user_id: UserID,
    read: _ReadUpTo,
    ignored: Sequence[UserID],
    at: int,
) -> list[tuple[RoomID, str, UnreadCount]]:
    """What each unread event (by ``read``) of ``ignored`` senders up to position ``at``
    adds to its room's thread: (room, thread, its count)."""
    found = []
    upto = read.upto
    pairs = _flat(list(upto.items()))
    for start in range(0, len(ignored), _SENDER_CHUNK):
        senders = ignored[start : start + _SENDER_CHUNK]
        for table, first in ((_ROOMS, ()), (_USERS, (user_id,))):
            rows = await db.fetch(
                _ignored_sql(table, len(upto), len(senders)), *first, *pairs, *senders, at
            )
            for row in rows:
                room_id, thread = RoomID(row["room_id"]), str(row["thread_id"])
                position = read.of(room_id, thread)
                if position is not None and int(row["stream_ordering"]) > position:
                    found.append((room_id, thread, UnreadCount(int(row["n"]), int(row["h"]))))
    return found


def _chunks(
    read_positions: Mapping[RoomID, int],
) -> list[list[tuple[RoomID, int]]]:
    rooms = list(read_positions.items())
    return [rooms[i : i + _ROOM_CHUNK] for i in range(0, len(rooms), _ROOM_CHUNK)]


def _flat(pairs: Sequence[tuple[RoomID, int]]) -> list[object]:
    return [value for pair in pairs for value in pair]


async def count_unread(
    db: Database,
    user_id: UserID,
    read_positions: Mapping[RoomID, int],
    ignored: Collection[UserID] = (),
    at: int | None = None,
) -> dict[RoomID, UnreadCount]:
    """room_id -> the user's unread notifying events in the room, main timeline and
    threads together, ``read_positions`` being their unthreaded receipts (0: none),
    counting events up to position ``at`` only (None: every event); rooms without any
    are absent. Two statements per 500 rooms, and two more per 500 ignored senders if
    there are any."""
    bound = _UNBOUNDED if at is None else at
    counts: dict[RoomID, UnreadCount] = {}
    for chunk in _chunks(read_positions):
        rows = await db.fetch(_count_sql(len(chunk)), user_id, *_flat(chunk), bound)
        upto: dict[RoomID, int] = {}
        main_upto: dict[RoomID, int] = {}
        room_counts: dict[RoomID, UnreadCount] = {}
        threaded: list[tuple[RoomID, int]] = []
        for row in rows:
            room_id = RoomID(row["room_id"])
            upto[room_id], main_upto[room_id] = int(row["upto"]), int(row["main_upto"])
            room_counts[room_id] = _counted(row, "a_") - _counted(row, "m_")
            if row["more"]:
                threaded.append((room_id, upto[room_id]))
        read_threads: dict[tuple[RoomID, str], int] = {}
        if threaded:
            rows = await db.fetch(
                _read_threads_sql(len(threaded)), user_id, *_flat(threaded), bound
            )
        else:
            rows = []
        for row in rows:
            room_id, thread = RoomID(row["room_id"]), str(row["thread_id"])
            read_threads[(room_id, thread)] = int(row["hi"])
            room_counts[room_id] -= _counted(row, "c_")
        if ignored:
            read = _ReadUpTo(upto, main_upto, read_threads, unlisted_at_upto=True)
            for room_id, _, count in await _ignored_rows(db, user_id, read, list(ignored), bound):
                room_counts[room_id] -= count
        counts.update((room_id, count) for room_id, count in room_counts.items() if count)
    return counts


async def count_unread_by_thread(
    db: Database,
    user_id: UserID,
    read_positions: Mapping[RoomID, int],
    ignored: Collection[UserID] = (),
    at: int | None = None,
) -> dict[RoomID, ThreadedUnread]:
    """room_id -> the user's unread notifying events of the main timeline and of each
    thread that has any, ``read_positions`` being their unthreaded receipts (0: none),
    counting events up to position ``at`` only (None: every event); rooms without any
    are absent. Two statements per 500 rooms, and two more per 500 ignored senders if
    there are any."""
    bound = _UNBOUNDED if at is None else at
    counts: dict[RoomID, ThreadedUnread] = {}
    for chunk in _chunks(read_positions):
        rows = await db.fetch(_count_main_sql(len(chunk)), user_id, *_flat(chunk), bound)
        upto: dict[RoomID, int] = {}
        main_upto: dict[RoomID, int] = {}
        split: dict[RoomID, ThreadedUnread] = {}
        threaded: list[tuple[RoomID, int]] = []
        for row in rows:
            room_id = RoomID(row["room_id"])
            upto[room_id], main_upto[room_id] = int(row["upto"]), int(row["main_upto"])
            split[room_id] = ThreadedUnread(_counted(row, "m_"))
            if row["more"]:
                threaded.append((room_id, upto[room_id]))
        thread_upto: dict[tuple[RoomID, str], int] = {}
        if threaded:
            rows = await db.fetch(
                _unread_threads_sql(len(threaded)), user_id, *_flat(threaded), bound
            )
        else:
            rows = []
        for row in rows:
            room_id, thread = RoomID(row["room_id"]), str(row["thread_id"])
            thread_upto[(room_id, thread)] = int(row["lo"])
            split[room_id].threads[thread] = _counted(row, "t_")
        if ignored:
            read = _ReadUpTo(upto, main_upto, thread_upto, unlisted_at_upto=False)
            taken = await _ignored_rows(db, user_id, read, list(ignored), bound)
            for room_id, thread, count in taken:
                room = split[room_id]
                if thread == "main":
                    room.main -= count
                else:
                    room.threads[thread] -= count
        for room_id, room in split.items():
            room.threads = {t: c for t, c in room.threads.items() if c}
            if room.main or room.threads:
                counts[room_id] = room
    return counts
