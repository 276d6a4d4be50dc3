"""A user's notifications, listed from the push rows (Client-Server API, "Push
Notifications", "Listing notifications": GET /notifications; and the pushers' catch-up
after a restart, ``services.push.delivery``).

No row is written per (user, event) that notifies (``storage.push_actions``): an event
whose *room outcome* notifies has one ``push_room_notifications`` row, and a member whose
outcome differs has a ``push_user_exceptions`` row. So user U's notifying events in room R
are, within the ranges U was joined to R (exceptions and room outcomes are only ever
evaluated for joined members):

- the room rows not sent by U, less those U ignores and those whose exception for U has
  ``notify = -1`` (a muted room, the master rule); highlight = the room's plus the
  exception's difference;
- plus U's exceptions with ``notify = 1`` (a mention, a keyword), which have no room row.

U's joined ranges come from U's membership events (index ``events_membership``), each
read and parsed once: what was read is kept per user (``_MEMBERSHIPS_CACHED`` users), and
a later call reads only the membership events after it. Events are committed in stream
order (one group commit at a time), so every membership event below the newest committed
position has been seen once read; only those are kept. Each
range is read newest first (or oldest first) with the primary keys of both tables, at most
``limit`` rows each, in one ``UNION ALL`` statement per ``_RANGES_PER_STATEMENT`` ranges;
the exception of a room row is a primary-key look-up. Nothing is scanned beyond the
window and the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from peyvand.lru import LRU
from peyvand.storage.database import Database, Row, placeholders
from peyvand.types import EventID, RoomID, UserID

_RANGES_PER_STATEMENT: Final = 50
_ROOMS_PER_STATEMENT: Final = 500
# Users whose memberships read so far are kept.
_MEMBERSHIPS_CACHED: Final = 10_000
# Stream positions are BIGINT: a window without a bound is closed by these.
_LOWEST: Final = -(2**63)
_HIGHEST: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Notification:
    """An event that notified ``user_id``, at stream position ``stream_ordering``."""

    room_id: RoomID
    stream_ordering: int
    event_id: EventID
    # 'main', or the thread root's event ID.
    thread_id: str
    highlight: bool
    # The event's origin_server_ts.
    ts: int


@dataclass(frozen=True, slots=True)
class JoinedRange:
    """``user_id`` was joined to ``room_id`` strictly between the two positions."""

    room_id: RoomID
    joined_at: int
    left_at: int


@dataclass(slots=True)
class _Memberships:
    """A user's membership events below ``upto``, folded: the ranges closed by a leave,
    and the rooms joined since (room -> the join's position)."""

    upto: int
    closed: list[JoinedRange] = field(default_factory=list)
    joined: dict[RoomID, int] = field(default_factory=dict)

    def fold(self, rows: Sequence[Row], upto: int) -> _Memberships:
        """These memberships followed by ``rows`` (oldest first, below ``upto``)."""
        closed, joined = list(self.closed), dict(self.joined)
        for row in rows:
            room_id = RoomID(row["room_id"])
            position = int(row["stream_ordering"])
            is_join = _membership(row["pdu"]) == "join"
            since = joined.get(room_id)
            if is_join and since is None:
                joined[room_id] = position
            elif not is_join and since is not None:
                closed.append(JoinedRange(room_id, since, position))
                del joined[room_id]
        return _Memberships(max(self.upto, upto), closed, joined)

    def ranges(self, before: int) -> list[JoinedRange]:
        """The ranges as the membership events before ``before`` (at most ``upto``) give
        them: those from a join at or after it dropped, those still open then ending
        there."""
        ranges = [
            JoinedRange(r.room_id, r.joined_at, min(r.left_at, before))
            for r in self.closed
            if r.joined_at < before
        ]
        ranges.extend(
            JoinedRange(room_id, since, before)
            for room_id, since in self.joined.items()
            if since < before
        )
        return ranges


class NotificationStore:
    def __init__(self, db: Database, committed_upto: Callable[[], int]) -> None:
        """``committed_upto``: the events position up to which every event is committed
        (the process's announced position: with several event writers, an event may
        still commit below the highest one stored)."""
        self._db = db
        self._committed_upto = committed_upto
        self._memberships: LRU[UserID, _Memberships] = LRU(_MEMBERSHIPS_CACHED)

    async def notifications_for_user(
        self,
        user_id: UserID,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int,
        only_highlight: bool = False,
        ignored: Collection[UserID] = (),
        oldest_first: bool = False,
    ) -> list[Notification]:
        """Up to ``limit`` events that notified ``user_id`` strictly between ``after``
        and ``before`` (None: unbounded), newest first (``oldest_first``: oldest first),
        only the highlighting ones with ``only_highlight``, leaving out events sent by
        ``ignored`` users."""
        if limit <= 0:
            return []
        low = _LOWEST if after is None else after
        high = _HIGHEST if before is None else before
        ranges = [
            r
            for r in await self.joined_ranges(user_id, before=high)
            if r.left_at > low + 1 and r.joined_at + 1 < high
        ]
        found: list[Notification] = []
        for start in range(0, len(ranges), _RANGES_PER_STATEMENT):
            chunk = ranges[start : start + _RANGES_PER_STATEMENT]
            found.extend(
                await self._read(
                    user_id, chunk, low, high, limit, only_highlight, ignored, oldest_first
                )
            )
        found.sort(key=lambda n: n.stream_ordering, reverse=not oldest_first)
        return found[:limit]

    async def joined_ranges(self, user_id: UserID, *, before: int) -> list[JoinedRange]:
        """The ranges of positions in which ``user_id`` was joined to each room, from
        their membership events before ``before`` (a range still open ends at
        ``before``)."""
        known = self._memberships.get(user_id) or _Memberships(_LOWEST)
        if known.upto >= before:
            return known.ranges(before)
        # Read first: every membership event at or below it is committed.
        newest = self._committed_upto()
        rows = await self._db.fetch(
            "SELECT room_id, stream_ordering, pdu FROM events"
            " WHERE type = 'm.room.member' AND state_key = $1 AND stream_ordering >= $2"
            " AND stream_ordering < $3 ORDER BY stream_ordering",
            user_id,
            known.upto,
            before,
        )
        safe = min(before, newest + 1)
        committed = [r for r in rows if int(r["stream_ordering"]) < safe]
        if safe > known.upto:
            known = known.fold(committed, safe)
            self._memberships.put(user_id, known)
        return known.fold(rows[len(committed) :], before).ranges(before)

    async def users_with_events(
        self, user_ids: Collection[UserID], after: int, up_to: int
    ) -> set[UserID]:
        """Those of ``user_ids`` with a membership (any, now) in a room that has an event
        in ``(after, up_to]``: only they can have a notification there. Reads the events
        in that window (primary key) and the rooms' member rows (primary key)."""
        users = sorted(user_ids)
        found: set[UserID] = set()
        for start in range(0, len(users), _ROOMS_PER_STATEMENT):
            chunk = users[start : start + _ROOMS_PER_STATEMENT]
            rows = await self._db.fetch(
                "SELECT DISTINCT c.state_key FROM (SELECT DISTINCT room_id FROM events"
                " WHERE stream_ordering > $1 AND stream_ordering <= $2) AS r"
                " JOIN current_state AS c ON c.room_id = r.room_id"
                " AND c.type = 'm.room.member'"
                f" AND c.state_key IN ({placeholders(len(chunk), 3)})",
                after,
                up_to,
                *chunk,
            )
            found.update(UserID(row["state_key"]) for row in rows)
        return found

    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[tuple[RoomID, str], int]:
        """(room_id, thread) -> how far ``user_id`` has read: ``''`` the whole room (their
        unthreaded ``m.read`` / ``m.read.private`` receipt, or their room-wide read mark),
        ``'main'`` the main timeline, a root's event ID that thread (receipts there, and
        read marks from their own events; Client-Server API, "Threaded read receipts");
        keys absent: nothing read."""
        read: dict[tuple[RoomID, str], int] = {}
        for start in range(0, len(room_ids), _ROOMS_PER_STATEMENT):
            chunk = room_ids[start : start + _ROOMS_PER_STATEMENT]
            rooms = placeholders(len(chunk), 2)
            rows = await self._db.fetch(
                "SELECT room_id, thread_id, MAX(event_stream_ordering) AS position"
                " FROM receipts WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private')"
                f" AND room_id IN ({rooms}) GROUP BY room_id, thread_id"
                " UNION ALL SELECT room_id, thread_id, stream_ordering AS position"
                f" FROM push_read_marks WHERE user_id = $1 AND room_id IN ({rooms})",
                user_id,
                *chunk,
            )
            for row in rows:
                key = (RoomID(row["room_id"]), row["thread_id"])
                read[key] = max(read.get(key, 0), int(row["position"]))
        return read

    async def _read(
        self,
        user_id: UserID,
        ranges: Sequence[JoinedRange],
        low: int,
        high: int,
        limit: int,
        only_highlight: bool,
        ignored: Collection[UserID],
        oldest_first: bool,
    ) -> list[Notification]:
        order = "ASC" if oldest_first else "DESC"
        # $1 user, $2 limit, then the ignored senders, then per range (room, low, high).
        args: list[Any] = [user_id, limit, *ignored]
        not_ignored = (
            f" AND {{alias}}.sender NOT IN ({placeholders(len(ignored), 3)})" if ignored else ""
        )
        parts = []
        for r in ranges:
            n = len(args)
            room, lo, hi = f"${n + 1}", f"${n + 2}", f"${n + 3}"
            args.extend((r.room_id, max(low, r.joined_at), min(high, r.left_at)))
            room_highlight = "p.highlight + COALESCE(x.highlight, 0)"
            parts.append(
                "SELECT * FROM (SELECT p.room_id, p.stream_ordering, p.event_id, p.thread_id,"
                f" {room_highlight} AS highlight FROM push_room_notifications AS p"
                " LEFT JOIN push_user_exceptions AS x ON x.user_id = $1"
                " AND x.room_id = p.room_id AND x.stream_ordering = p.stream_ordering"
                f" WHERE p.room_id = {room} AND p.stream_ordering > {lo}"
                f" AND p.stream_ordering < {hi} AND p.sender <> $1"
                " AND COALESCE(x.notify, 0) >= 0"
                + (f" AND {room_highlight} > 0" if only_highlight else "")
                + not_ignored.format(alias="p")
                + f" ORDER BY p.stream_ordering {order} LIMIT $2) AS r{n}"
            )
            parts.append(
                "SELECT * FROM (SELECT x.room_id, x.stream_ordering, x.event_id, x.thread_id,"
                " x.highlight FROM push_user_exceptions AS x"
                f" WHERE x.user_id = $1 AND x.room_id = {room} AND x.stream_ordering > {lo}"
                f" AND x.stream_ordering < {hi} AND x.notify = 1 AND x.sender <> $1"
                + (" AND x.highlight > 0" if only_highlight else "")
                + not_ignored.format(alias="x")
                + f" ORDER BY x.stream_ordering {order} LIMIT $2) AS u{n}"
            )
        rows = await self._db.fetch(
            "SELECT n.room_id, n.stream_ordering, n.event_id, n.thread_id, n.highlight,"
            f" e.origin_server_ts FROM ({' UNION ALL '.join(parts)}) AS n"
            " JOIN events AS e ON e.stream_ordering = n.stream_ordering"
            f" ORDER BY n.stream_ordering {order} LIMIT $2",
            *args,
        )
        return [_notification(row) for row in rows]


def is_read(notification: Notification, read: Mapping[tuple[RoomID, str], int]) -> bool:
    """Whether ``notification`` is at or before how far the user has read its room, or
    its thread (``read``: from ``NotificationStore.read_positions``)."""
    room = notification.room_id
    position = max(read.get((room, ""), 0), read.get((room, notification.thread_id), 0))
    return notification.stream_ordering <= position


def _membership(pdu: str) -> str | None:
    content = json.loads(pdu).get("content")
    membership = content.get("membership") if isinstance(content, dict) else None
    return membership if isinstance(membership, str) else None


def _notification(row: Row) -> Notification:
    return Notification(
        RoomID(row["room_id"]),
        int(row["stream_ordering"]),
        EventID(row["event_id"]),
        row["thread_id"],
        int(row["highlight"]) > 0,
        int(row["origin_server_ts"]),
    )
