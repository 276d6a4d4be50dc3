"""What a connection was sent of each room by a room extension (``account_data``,
``receipts``): Synapse 1.163's ``HaveSentRoom`` of its connection store.

MSC4186 ("Extensions") leaves it to the server; Synapse keeps, per extension and room,
one of three statuses, and so does Peyvand (``RoomStatuses``):

- never sent (absent): the room gets all its data when it comes into view;
- ``LIVE`` (None): sent up to the previous response's position, so the changes since
  that position are what is new;
- ``PREVIOUSLY`` (a position): changed while out of view after that position, so the
  changes since that position are what is new when it comes back.

A room in view is ``LIVE`` after the response. A ``LIVE`` room out of view that changed
between the previous response and this one becomes ``PREVIOUSLY`` at the previous
response's position; one that did not change stays ``LIVE`` (nothing to catch up on).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from peyvand.types import RoomID

# Per room: None (LIVE) or the position after which its changes were not sent.
RoomStatuses = Mapping[RoomID, int | None]


@dataclass(frozen=True, slots=True)
class RoomSplit:
    """The rooms in view of a room extension, by what is new to the connection."""

    # All their data.
    initial: frozenset[RoomID]
    # The changes since the previous response.
    live: frozenset[RoomID]
    # The changes since their own position.
    previously: Mapping[RoomID, int]

    @property
    def oldest(self) -> int | None:
        """The earliest position a ``previously`` room missed changes after."""
        return min(self.previously.values()) if self.previously else None


def split(
    rooms: AbstractSet[RoomID],
    statuses: RoomStatuses,
    initial_rooms: AbstractSet[RoomID],
    *,
    first: bool,
) -> RoomSplit:
    """``rooms`` (in view) split by their statuses; ``initial_rooms`` (sent ``initial``
    in this response) and, on a connection's ``first`` response, all are initial."""
    if first:
        return RoomSplit(frozenset(rooms), frozenset(), {})
    initial: set[RoomID] = set()
    live: set[RoomID] = set()
    previously: dict[RoomID, int] = {}
    for room_id in rooms:
        if room_id in initial_rooms or room_id not in statuses:
            initial.add(room_id)
        elif (position := statuses[room_id]) is None:
            live.add(room_id)
        else:
            previously[room_id] = position
    return RoomSplit(frozenset(initial), frozenset(live), previously)


def live_out_of_view(statuses: RoomStatuses, rooms: AbstractSet[RoomID]) -> list[RoomID]:
    """The ``LIVE`` rooms not in view: those whose changes now must be noted."""
    return sorted(r for r, position in statuses.items() if position is None and r not in rooms)


def advance(
    statuses: RoomStatuses,
    rooms: AbstractSet[RoomID],
    changed_out_of_view: Collection[RoomID],
    since: int | None,
) -> dict[RoomID, int | None]:
    """The statuses after a response that sent ``rooms`` everything new, where the
    ``LIVE`` rooms ``changed_out_of_view`` had changes after ``since`` it did not send."""
    after: dict[RoomID, int | None] = dict(statuses)
    if since is not None:
        for room_id in changed_out_of_view:
            if room_id not in rooms and room_id in after and after[room_id] is None:
                after[room_id] = since
    after.update(dict.fromkeys(rooms))
    return after
