"""Two positions per room, in memory: its newest event of any type, by which lists are
sorted (Synapse 1.163's ``sort_rooms``: "the last event that the user should see in the
room", so a rename or a join moves a room up), and its ``bump_stamp``, the position of
its newest event of the types that tell activity (MSC4186, "bump_stamp"; Synapse's
``SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES``), which the room's answer carries.

Told of every commit by the dispatcher; a room not seen since start-up is read once,
together with every other such room of the request (one chunked query), so sorting a
user's 1,000 rooms costs no query per room and, once known, none at all. The last
moves of the first position are logged, so an order kept between requests
(``user_rooms.py``) catches up with what moved, not with every room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import islice

from peyvand.lru import LRU
from peyvand.storage.models import EventToPersist
from peyvand.types import RoomID

BUMP_EVENT_TYPES: tuple[str, ...] = (
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
)
_BUMP_TYPES = frozenset(BUMP_EVENT_TYPES)
# Rooms whose positions are held (a room without any such event is held as 0).
_ROOMS = 200_000
# Moves of rooms' newest positions logged (one per room per committed batch).
_MOVES = 4_096

# (rooms, event types or None for any, up to position) -> each room's newest such position.
LoadStamps = Callable[[Sequence[RoomID], Sequence[str] | None, int], Awaitable[dict[RoomID, int]]]


class _Newest:
    """Each room's newest position of some event types (None: any), held in memory."""

    def __init__(
        self, load: LoadStamps, types: Sequence[str] | None, current: Callable[[], int]
    ) -> None:
        self._load = load
        self._types = types
        self._current = current
        self._held: LRU[RoomID, int] = LRU(_ROOMS)

    def note(self, room_id: RoomID, position: int) -> None:
        held = self._held.peek(room_id) or 0
        self._held.put(room_id, max(held, position))

    async def get(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        found: dict[RoomID, int] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            held = self._held.get(room_id)
            if held is None:
                missing.append(room_id)
            elif held:
                found[room_id] = held
        if missing:
            loaded = await self._load(missing, self._types, self._current())
            for room_id in missing:
                stamp = max(loaded.get(room_id, 0), self._held.peek(room_id) or 0)
                self._held.put(room_id, stamp)
                if stamp:
                    found[room_id] = stamp
        return found


class BumpStamps:
    def __init__(
        self, load: LoadStamps, current_position: Callable[[], int], *, moves: int = _MOVES
    ) -> None:
        self._activity = _Newest(load, None, current_position)
        self._bumps = _Newest(load, BUMP_EVENT_TYPES, current_position)
        # (room, its newest position) per move, the newest last; ``_logged`` counts all.
        self._moves: deque[tuple[RoomID, int]] = deque(maxlen=moves)
        self._logged = 0

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """A committed batch (a dispatcher listener); backfilled history is not news."""
        newest: dict[RoomID, int] = {}
        for persisted in batch:
            if persisted.stream_ordering <= 0:
                continue
            pdu = persisted.pdu
            self._activity.note(pdu.room_id, persisted.stream_ordering)
            newest[pdu.room_id] = max(newest.get(pdu.room_id, 0), persisted.stream_ordering)
            if pdu.type in _BUMP_TYPES:
                self._bumps.note(pdu.room_id, persisted.stream_ordering)
        self._moves.extend(newest.items())
        self._logged += len(newest)

    @property
    def logged(self) -> int:
        """How many moves were logged so far: a mark to pass to ``moved_since``."""
        return self._logged

    def moved_since(self, mark: int) -> list[tuple[RoomID, int]] | None:
        """(room, newest position) of each move logged after ``mark``, the newest first;
        None when the log no longer reaches back to it."""
        count = self._logged - mark
        if count > len(self._moves):
            return None
        return list(islice(reversed(self._moves), count))

    async def stamps(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        """The position lists sort each room by: its newest event of any type (rooms
        without are left out)."""
        return await self._activity.get(room_ids)

    async def bump_stamps(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        """The ``bump_stamp`` of each room that has one (rooms without are left out)."""
        return await self._bumps.get(room_ids)
