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

Each recently active room also keeps its *arrivals*: the events committed after a
position its newest event was known to be at (``arrivals``), so a room's answer kept
at that position can be brought up to date from the events that came after it, with
no read of storage (issue 18: the incremental wake).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from peyvand.events.pdu import Pdu
from peyvand.lru import LRU
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

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
# Rooms whose arrivals are kept, and arrivals kept per room (each a few fields, not the
# event: at most 16,384 small records).
_ARRIVAL_ROOMS = 1_024
_ARRIVALS = 16

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

    def peek(self, room_id: RoomID) -> int | None:
        """The held newest position (0: none), without loading; None: not held."""
        return self._held.peek(room_id)

    def note(self, room_id: RoomID, position: int) -> None:
        held = self._held.peek(room_id) or 0
        self._held.put(room_id, max(held, position))

    async def get(self, room_ids: Iterable[RoomID]) -> dict[RoomID, int]:
        room_ids = list(room_ids)
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
            # Every room as held now: rooms held before the load may have moved during
            # it, and a caller reads the announced position right after this returns.
            found = {r: held for r in room_ids if (held := self._held.peek(r))}
        return found


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event that landed, as much of it as a woken poll asks about: where it is
    (``position``), and who sent what (unread counts skip the user's own events and
    membership)."""

    position: int
    event_id: EventID
    sender: UserID
    type: str
    state_key: str | None


class _Arrivals:
    """A room's events after ``floor``, oldest first: every event of the room with a
    position above ``floor`` is among them."""

    __slots__ = ("events", "floor")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.events: list[Arrival] = []


class BumpStamps:
    def __init__(
        self, load: LoadStamps, current_position: Callable[[], int], *, moves: int = _MOVES
    ) -> None:
        self._activity = _Newest(load, None, current_position)
        self._bumps = _Newest(load, BUMP_EVENT_TYPES, current_position)
        # (room, its newest position) per move, the newest last; ``_logged`` counts all.
        self._moves: deque[tuple[RoomID, int]] = deque(maxlen=moves)
        self._logged = 0
        self._arrivals: LRU[RoomID, _Arrivals] = LRU(_ARRIVAL_ROOMS)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """A committed batch (a dispatcher listener); backfilled history is not news."""
        newest: dict[RoomID, int] = {}
        for persisted in batch:
            if persisted.stream_ordering <= 0:
                continue
            pdu = persisted.pdu
            self._arrive(pdu, persisted.stream_ordering)
            self._activity.note(pdu.room_id, persisted.stream_ordering)
            newest[pdu.room_id] = max(newest.get(pdu.room_id, 0), persisted.stream_ordering)
            if pdu.type in _BUMP_TYPES:
                self._bumps.note(pdu.room_id, persisted.stream_ordering)
        self._moves.extend(newest.items())
        self._logged += len(newest)

    def _arrive(self, pdu: Pdu, position: int) -> None:
        """Keep ``pdu`` among its room's arrivals when the room's newest position before
        it is known (held), so that they stay complete above their floor."""
        room_id = pdu.room_id
        before = self._activity.peek(room_id)
        kept = self._arrivals.get(room_id)
        if before is None or position <= before:
            # Not known, or a late event below the newest: nothing kept can be trusted.
            if kept is not None:
                self._arrivals.pop(room_id)
            return
        if kept is None:
            kept = _Arrivals(before)
            self._arrivals.put(room_id, kept)
        kept.events.append(
            Arrival(position, pdu.event_id, UserID(pdu.sender), pdu.type, pdu.state_key)
        )
        if len(kept.events) > _ARRIVALS:
            kept.floor = kept.events.pop(0).position

    def arrivals(self, room_id: RoomID, after: int, upto: int) -> list[Arrival] | None:
        """Every event of the room with ``after < position <= upto``, oldest first; None
        when that is not known here."""
        kept = self._arrivals.peek(room_id)
        if kept is None or kept.floor > after:
            return None
        return [a for a in kept.events if after < a.position <= upto]

    def latest(self, room_id: RoomID, upto: int, count: int) -> list[Arrival] | None:
        """The room's newest ``count`` events at or before ``upto`` (oldest first); None
        when fewer are known here."""
        kept = self._arrivals.peek(room_id)
        if kept is None:
            return None
        found = [a for a in kept.events if a.position <= upto][-count:] if count else []
        return found if len(found) == count else None

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
