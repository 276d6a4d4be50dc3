"""Each room's ``bump_stamp``: the stream position of its newest event of the types
that move a room up a client's list (MSC4186, "bump_stamp"; Synapse's
``SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES``), in memory.

Told of every commit by the dispatcher; a room not seen since start-up is read once,
together with every other such room of the request (one chunked query), so sorting a
user's 1,000 rooms costs no query per room and, once known, none at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

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
# Rooms whose stamp is held (a room without any bump event is held as 0).
_ROOMS = 200_000

# (rooms, event types, up to position) -> each room's newest such position.
LoadStamps = Callable[[Sequence[RoomID], Sequence[str], int], Awaitable[dict[RoomID, int]]]


class BumpStamps:
    def __init__(self, load: LoadStamps, current_position: Callable[[], int]) -> None:
        self._load = load
        self._current_position = current_position
        self._stamps: LRU[RoomID, int] = LRU(_ROOMS)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """A committed batch (a dispatcher listener); backfilled history is not news."""
        for persisted in batch:
            pdu = persisted.pdu
            # The newest bump event of its room, whether the room was held or not.
            if persisted.stream_ordering > 0 and pdu.type in _BUMP_TYPES:
                held = self._stamps.peek(pdu.room_id) or 0
                self._stamps.put(pdu.room_id, max(held, persisted.stream_ordering))

    async def stamps(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        """The bump stamp of each room that has one (rooms without are left out)."""
        found: dict[RoomID, int] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            held = self._stamps.get(room_id)
            if held is None:
                missing.append(room_id)
            elif held:
                found[room_id] = held
        if missing:
            loaded = await self._load(missing, BUMP_EVENT_TYPES, self._current_position())
            for room_id in missing:
                stamp = max(loaded.get(room_id, 0), self._stamps.peek(room_id) or 0)
                self._stamps.put(room_id, stamp)
                if stamp:
                    found[room_id] = stamp
        return found
