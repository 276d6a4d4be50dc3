"""The timeline a joined member is sent of a room new to a connection, kept per user and
room between requests (issue 18: every fresh connection answers the same window again,
and the visibility checks of each room's newest events were most of its cost).

A room's newest ``limit`` events (the ``timeline_limit`` asked, or less when a
response's budget cut it, ``rooms.timeline_limits``) that a joined member may see
(MSC4186, "Room response": ``timeline``, ``limited``) change only when

- an event lands in the room: its newest position (``BumpStamps.stamps``) moves;
- its current state changes without one (a partial-state room's resync): its state
  group moves (current state events are visible to a member whatever the history
  visibility);
- the user's membership changes (an event, and part of the key);
- the users they ignore change (their events are left out);
- events are purged or their content deleted (``StateService.forget_epoch``);
- an event is redacted by a redaction that did not move the room's newest position (one
  received in backfill, at a position below zero): ``StateService.redaction_count``.

So a page read with the room at position P is kept while all of these are as they were,
and only if P is within the request's token (a page of a later request then holds the
same events) and the page is ``limited`` with every event at a positive position (older
history backfilled later cannot change it). Only short pages are kept, so a kept entry
holds a few events (mostly ones the state cache holds anyway).

When only the room's newest position moved (events landed, its state group the same),
the kept page is still ``limited`` (its older visible events are all still there and
visible) and the new page is the newest of its events and the new ones: ``moved``
hands it out for the caller to extend with the events after it (issue 18: the wake of
a long-poll whose room comes into view reads no storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peyvand.lru import LRU
from peyvand.storage.models import StoredEvent
from peyvand.types import RoomID, UserID

# Pages kept, and the longest page kept: at most 10,240 events held, as many as the
# state cache's events (most are the same objects), typically one or two per page.
_SIZE: Final = 2048
MAX_KEPT_LIMIT: Final = 5


@dataclass(frozen=True, slots=True)
class PageKey:
    """Whose page of which room: the user, their membership event, the page size."""

    user_id: UserID
    room_id: RoomID
    membership_position: int
    limit: int


@dataclass(frozen=True, slots=True)
class RoomMark:
    """What a kept page depends on: the room's newest position and state group, the
    events cache's epoch, the redactions stored and the users the reader ignores."""

    position: int
    state_group: int
    epoch: int
    redactions: int
    ignored: frozenset[UserID]


@dataclass(frozen=True, slots=True)
class _Page:
    mark: RoomMark
    events: tuple[StoredEvent, ...]


class InitialTimelines:
    def __init__(self, size: int = _SIZE) -> None:
        self._pages: LRU[PageKey, _Page] = LRU(size)

    def get(self, key: PageKey, mark: RoomMark) -> list[StoredEvent] | None:
        """The kept page (``limited``), if the room is still as it was read."""
        page = self._pages.get(key)
        if page is None or page.mark != mark:
            return None
        return list(page.events)

    def moved(self, key: PageKey, mark: RoomMark) -> tuple[list[StoredEvent], int] | None:
        """The kept page and the room's newest position it was read at, when the room
        is as it was but for events landed since (``mark`` the same but a later
        position)."""
        page = self._pages.get(key)
        if page is None or page.mark.position >= mark.position:
            return None
        kept = page.mark
        if (
            kept.state_group != mark.state_group
            or kept.epoch != mark.epoch
            or kept.redactions != mark.redactions
            or kept.ignored != mark.ignored
        ):
            return None
        return list(page.events), kept.position

    def put(
        self,
        key: PageKey,
        mark: RoomMark,
        events: Sequence[StoredEvent],
        *,
        limited: bool,
        end: int,
    ) -> None:
        """Keep a page read up to stream position ``end``, when it may be."""
        if (
            limited
            and key.limit <= MAX_KEPT_LIMIT
            and mark.position <= end
            and all(e.stream_ordering > 0 for e in events)
        ):
            self._pages.put(key, _Page(mark, tuple(events)))
