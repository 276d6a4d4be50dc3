"""The unread counts of the rooms a sync response answers, kept per user and room between
requests: sliding sync's (issue 18: every fresh connection answers the same window
again) and /sync's (issue 15: each woken long-poll of a busy room counted its room
again, a third of its CPU).

A user's counts in a room (Client-Server API, "Receiving notifications": /sync's
``unread_notifications``, ``unread_thread_notifications``) are read from the push rows
(``storage.unread_counts``), and they change only when

- an event lands in the room: its push rows and its read marks are written in the
  event's own transaction, so the room's newest position (``BumpStamps.stamps``, told of
  every commit) moves with them;
- the user stores a receipt in the room (``receipt_stored``, a ``ReceiptService`` stored
  hook, called before anyone is woken; ``receipts_elsewhere`` when another process of a
  deployment stored it);
- the users they ignore change (their events are taken out of the counts);
- events are purged or their content deleted (``StateService.forget_epoch``).

So counts read with the room at position P stay right while the room's newest position
is still P, no receipt of the user's in it was stored since, the ignored users and the
epoch are the same. The counts are read up to the stream position announced when the
room's position was read (``at``), no further: an event committed but not announced
yet (one below it is still in flight, or its commit is not yet back in the event loop)
is counted when it arrives, not twice; a receipt stored during a read leaves no entry
at all (a write counter, as ``read_positions.ReadPositionCache``), nor does one of the
user's in the room whose event is not announced yet (a client can learn of an event
before it is announced, from /notifications for one): that event, read by the receipt
but after ``at``, would be added when it arrives.

Counts kept at P whose room moved on are brought up to date without a read when every
event after P is known (``BumpStamps.arrivals``) with the rows its commit wrote
(``PushActionsService.counted``) and none is the user's own (sending reads up to it),
their membership, or a redaction (what it does to its target's count is storage's to
say): each such event is after the user's read position (nothing of theirs
moved it, and a receipt drops the entry), so it adds exactly what its rows hold, unless
its sender is ignored (issue 18: the wake of a long-poll whose room just changed). Counts
split by thread (``unread_thread_notifications``, which Element asks for) are brought up
to date the same way, each event's count going to its thread's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from peyvand.lru import LRU
from peyvand.services.sync.sliding.bump_stamps import Arrival
from peyvand.services.timeline.event_thread import MAIN_THREAD
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

# (user, room, per thread) entries kept: a few hundred bytes each.
_SIZE: Final = 10_000
# Receipts ahead of the announced position remembered, at most (they are rare: a client
# answering an event within the moment between its commit and its announcement).
_AHEAD: Final = 1_024
_MEMBER: Final = "m.room.member"
_REDACTION: Final = "m.room.redaction"

# (user, rooms, per thread) -> each room with unread notifications -> its /sync fields.
UnreadSections = Callable[[UserID, Sequence[RoomID], bool], Awaitable[dict[RoomID, JsonDict]]]
# The same, counting the events up to a stream position only.
UnreadSectionsAt = Callable[
    [UserID, Sequence[RoomID], bool, int], Awaitable[dict[RoomID, JsonDict]]
]
# rooms -> each room's newest event position (rooms without are left out).
NewestPositions = Callable[[Iterable[RoomID]], Awaitable[dict[RoomID, int]]]
IgnoredBy = Callable[[UserID], Awaitable[frozenset[UserID]]]
# (room, after, up to) -> every event of the room in (after, up to] as (position, pdu),
# oldest first; None: not known (``BumpStamps.arrivals``).
Arrivals = Callable[[RoomID, int, int], "list[Arrival] | None"]


class EventCounts(Protocol):
    """What one event's rows add to a user's counts, and in which thread."""

    @property
    def notifications(self) -> int: ...
    @property
    def highlights(self) -> int: ...
    @property
    def thread(self) -> str: ...


# (user, event) -> what the event's rows add to the user's counts; None: not known
# (``PushActionsService.counted``).
Counted = Callable[[UserID, EventID], "EventCounts | None"]


@dataclass(frozen=True, slots=True)
class _Kept:
    """A room's counts (None: nothing unread) and what they were read at."""

    position: int
    epoch: int
    ignored: frozenset[UserID]
    section: JsonDict | None


class UnreadCountCache:
    def __init__(
        self,
        read: UnreadSectionsAt,
        newest: NewestPositions,
        announced: Callable[[], int],
        ignored_by: IgnoredBy,
        forget_epoch: Callable[[], int],
        *,
        is_mine: Callable[[UserID], bool],
        arrivals: Arrivals,
        counted: Counted,
        size: int = _SIZE,
    ) -> None:
        """``read`` counts from storage (``PushActionsService.unread_sections``);
        ``announced`` is the events stream's announced position (``newest`` knows every
        event up to it)."""
        self._read = read
        self._announced = announced
        self._is_mine = is_mine
        self._arrivals = arrivals
        self._counted = counted
        self._newest = newest
        self._ignored_by = ignored_by
        self._forget_epoch = forget_epoch
        self._kept: LRU[tuple[UserID, RoomID, bool], _Kept] = LRU(size)
        self._receipts = 0
        # (user, room) -> the newest event position their receipts were stored at, when
        # it was ahead of the announced position.
        self._ahead: dict[tuple[UserID, RoomID], int] = {}
        # With ``_AHEAD`` of them remembered, any further one holds back every user's:
        # nothing is kept until the announced position passes this.
        self._ahead_of_all = 0

    async def sections(
        self, user_id: UserID, room_ids: Sequence[RoomID], per_thread: bool
    ) -> dict[RoomID, JsonDict]:
        """``UnreadSections``: the rooms whose counts are kept are not read again."""
        receipts = self._receipts
        epoch = self._forget_epoch()
        ignored = await self._ignored_by(user_id)
        positions = await self._newest(room_ids)
        at = self._announced()
        found: dict[RoomID, JsonDict] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            key = (user_id, room_id, per_thread)
            kept = self._kept.get(key)
            position = positions.get(room_id, 0)
            if kept is None or kept.epoch != epoch or kept.ignored != ignored:
                missing.append(room_id)
                continue
            if kept.position != position:
                moved = self._moved(user_id, room_id, kept, position, per_thread)
                if moved is None:
                    missing.append(room_id)
                    continue
                kept = moved
                self._kept.put(key, kept)
            if kept.section is not None:
                found[room_id] = kept.section
        if not missing:
            return found
        loaded = await self._read(user_id, missing, per_thread, at)
        if receipts == self._receipts:
            for room_id in missing:
                if self._read_ahead(user_id, room_id, at):
                    continue
                kept = _Kept(positions.get(room_id, 0), epoch, ignored, loaded.get(room_id))
                self._kept.put((user_id, room_id, per_thread), kept)
        found.update(loaded)
        return found

    def _moved(
        self, user_id: UserID, room_id: RoomID, kept: _Kept, position: int, per_thread: bool
    ) -> _Kept | None:
        """``kept`` brought up to the room's newest ``position`` from the events after
        it, when they are all known and none is the user's own, their membership or a
        redaction."""
        if kept.position > position:
            return None
        arrived = self._arrivals(room_id, kept.position, position)
        if arrived is None:
            return None
        section = kept.section or {}
        main = _pair(section.get("unread_notifications"))
        threads = {
            thread: _pair(counts)
            for thread, counts in section.get("unread_thread_notifications", {}).items()
        }
        for event in arrived:
            if event.sender == user_id or (event.type == _MEMBER and event.state_key == user_id):
                return None
            if event.type == _REDACTION:
                # What a redaction does to its target's count is storage's to say:
                # read again (rare, one read).
                return None
            added = self._counted(user_id, event.event_id)
            if added is None:
                return None
            if event.sender in kept.ignored:
                continue
            if per_thread and added.thread != MAIN_THREAD:
                into = threads.setdefault(added.thread, [0, 0])
            else:
                into = main
            into[0] += added.notifications
            into[1] += added.highlights
        unread: JsonDict | None = None
        unread_threads = {t: _json(c) for t, c in threads.items() if c[0] > 0 or c[1] > 0}
        if main[0] > 0 or main[1] > 0 or unread_threads:
            unread = {"unread_notifications": _json(main)}
            if unread_threads:
                unread["unread_thread_notifications"] = unread_threads
        return _Kept(position, kept.epoch, kept.ignored, unread)

    def receipts_elsewhere(self, keys: Sequence[Sequence[str]] | None) -> None:
        """Another process of a deployment stored receipts of these ``(user, room)``
        pairs (None: of any; ``ReadPositionCache.moved_elsewhere_hooks``): their counts
        are read again (issue 21)."""
        self._receipts += 1
        if keys is None:
            self._kept.clear()
            return
        for user_id, room_id in keys:
            for per_thread in (False, True):
                self._kept.pop((UserID(user_id), RoomID(room_id), per_thread))

    def _read_ahead(self, user_id: UserID, room_id: RoomID, at: int) -> bool:
        """Whether a receipt of the user's in the room read an event after ``at``."""
        if at < self._ahead_of_all:
            return True
        key = (user_id, room_id)
        ahead = self._ahead.get(key)
        if ahead is None:
            return False
        if ahead > at:
            return True
        del self._ahead[key]
        return False

    def receipt_stored(self, row: ReceiptRow, position: int) -> None:
        """A ``ReceiptService`` stored hook: the user's counts in the room may have gone
        down. ``position``: the receipt's event's."""
        self._receipts += 1
        announced = self._announced()
        if position > announced and self._is_mine(row.user_id):
            if len(self._ahead) >= _AHEAD:
                self._ahead = {k: p for k, p in self._ahead.items() if p > announced}
            key = (row.user_id, row.room_id)
            if len(self._ahead) < _AHEAD or key in self._ahead:
                self._ahead[key] = max(position, self._ahead.get(key, 0))
            else:
                self._ahead_of_all = max(self._ahead_of_all, position)
        for per_thread in (False, True):
            self._kept.pop((row.user_id, row.room_id, per_thread))


def _pair(counts: JsonDict | None) -> list[int]:
    """A section's counts as [notifications, highlights]."""
    if not counts:
        return [0, 0]
    return [counts.get("notification_count", 0), counts.get("highlight_count", 0)]


def _json(pair: list[int]) -> JsonDict:
    return {"notification_count": max(0, pair[0]), "highlight_count": max(0, pair[1])}
