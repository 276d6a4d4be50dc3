"""The unread counts of the rooms a sliding sync response answers, kept per user and room
between requests (issue 18: every fresh connection answers the same window again).

A user's counts in a room (Client-Server API, "Receiving notifications": /sync's
``unread_notifications``, ``unread_thread_notifications``) are read from the push rows
(``storage.unread_counts``), and they change only when

- an event lands in the room: its push rows and its read marks are written in the
  event's own transaction, so the room's newest position (``BumpStamps.stamps``, told of
  every commit) moves with them;
- the user stores a receipt in the room (``receipt_stored``, a ``ReceiptService`` stored
  hook, called before anyone is woken);
- the users they ignore change (their events are taken out of the counts);
- events are purged or their content deleted (``StateService.forget_epoch``).

So counts read with the room at position P stay right while the room's newest position
is still P, no receipt of the user's in it was stored since, the ignored users and the
epoch are the same. The room's position is read before the counts, so an event landing
during the read leaves an entry that no longer matches; a receipt stored during a read
leaves no entry at all (a write counter, as ``read_positions.ReadPositionCache``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.lru import LRU
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import JsonDict, RoomID, UserID

# (user, room, per thread) entries kept: a few hundred bytes each.
_SIZE: Final = 10_000

# (user, rooms, per thread) -> each room with unread notifications -> its /sync fields.
UnreadSections = Callable[[UserID, Sequence[RoomID], bool], Awaitable[dict[RoomID, JsonDict]]]
# rooms -> each room's newest event position (rooms without are left out).
NewestPositions = Callable[[Iterable[RoomID]], Awaitable[dict[RoomID, int]]]
IgnoredBy = Callable[[UserID], Awaitable[frozenset[UserID]]]


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
        read: UnreadSections,
        newest: NewestPositions,
        ignored_by: IgnoredBy,
        forget_epoch: Callable[[], int],
        size: int = _SIZE,
    ) -> None:
        """``read`` counts from storage (``PushActionsService.unread_sections``)."""
        self._read = read
        self._newest = newest
        self._ignored_by = ignored_by
        self._forget_epoch = forget_epoch
        self._kept: LRU[tuple[UserID, RoomID, bool], _Kept] = LRU(size)
        self._receipts = 0

    async def sections(
        self, user_id: UserID, room_ids: Sequence[RoomID], per_thread: bool
    ) -> dict[RoomID, JsonDict]:
        """``UnreadSections``: the rooms whose counts are kept are not read again."""
        receipts = self._receipts
        epoch = self._forget_epoch()
        ignored = await self._ignored_by(user_id)
        positions = await self._newest(room_ids)
        found: dict[RoomID, JsonDict] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            kept = self._kept.get((user_id, room_id, per_thread))
            if (
                kept is None
                or kept.position != positions.get(room_id, 0)
                or kept.epoch != epoch
                or kept.ignored != ignored
            ):
                missing.append(room_id)
            elif kept.section is not None:
                found[room_id] = kept.section
        if not missing:
            return found
        loaded = await self._read(user_id, missing, per_thread)
        if receipts == self._receipts:
            for room_id in missing:
                kept = _Kept(positions.get(room_id, 0), epoch, ignored, loaded.get(room_id))
                self._kept.put((user_id, room_id, per_thread), kept)
        found.update(loaded)
        return found

    def receipt_stored(self, row: ReceiptRow, position: int) -> None:
        """A ``ReceiptService`` stored hook: the user's counts in the room may have gone
        down."""
        self._receipts += 1
        for per_thread in (False, True):
            self._kept.pop((row.user_id, row.room_id, per_thread))
