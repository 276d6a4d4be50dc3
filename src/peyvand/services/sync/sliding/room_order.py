"""A user's listed rooms in list order, kept sorted as their positions move (MSC4186
"Lists"; Synapse 1.163's ``sort_rooms``: newest first, ties by room ID).

A move costs two binary searches and two shifts of a list (a C ``memmove``), not a sort
of every room, so an order kept between requests follows a new message in O(log rooms)
of Python, and a window of it is a slice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from peyvand.types import RoomID


class RoomOrder:
    """Room IDs sorted by descending position, then by room ID."""

    __slots__ = ("_ids", "_keys")

    def __init__(self, positions: Iterable[tuple[RoomID, int]]) -> None:
        # (-position, room) per room, ascending: the list order; ``_ids`` its rooms.
        self._keys = sorted((-position, room_id) for room_id, position in positions)
        self._ids = [room_id for _, room_id in self._keys]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> Sequence[RoomID]:
        """The rooms, newest first (held, not copied: it changes with ``move``)."""
        return self._ids

    def move(self, room_id: RoomID, old: int, new: int) -> None:
        """``room_id``, held at position ``old``, is now at ``new``."""
        index = bisect_left(self._keys, (-old, room_id))
        del self._keys[index]
        del self._ids[index]
        index = bisect_left(self._keys, (-new, room_id))
        self._keys.insert(index, (-new, room_id))
        self._ids.insert(index, room_id)

    def merged(
        self, extra: Iterable[tuple[RoomID, int]], hidden: frozenset[RoomID]
    ) -> list[RoomID]:
        """The rooms newest first with ``extra`` rooms (not held; room -> position) added
        and ``hidden`` ones left out: a new list, the held order unchanged."""
        keys = [key for key in self._keys if key[1] not in hidden] if hidden else list(self._keys)
        keys.extend((-position, room_id) for room_id, position in extra)
        keys.sort()
        return [room_id for _, room_id in keys]
