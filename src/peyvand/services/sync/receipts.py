"""Receipts and fully-read markers (Client-Server API, "Receipts" and "Read and unread
markers").

A receipt is kept per (room, receipt type, user, thread) and only ever moves forward, as
in Synapse. ``m.read`` receipts go to every member of the room; ``m.read.private`` ones
only to their owner ("Servers MUST NOT send the m.read.private receipt to any other
user"). ``m.fully_read`` is no receipt at all: it is the ``m.fully_read`` room account
data, moved here and only forward. Writes are serialised so the receipts stream's
positions commit in order.

Federation: ``apply_remote_receipt`` stores an ``m.read`` receipt received from another
server like a local one; ``listeners`` hear each local ``m.read`` receipt that moved
forward, to send it to the other servers in the room; ``read_listeners`` hear each local
``m.read`` or ``m.read.private`` receipt that moved forward (the user's unread counts may
have gone down: push badges); ``stored_hooks`` are called with every receipt stored,
local or remote, before anyone is woken (``read_positions.ReadPositionCache``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from peyvand.errors import forbidden, invalid_param, not_found
from peyvand.events.relations import relation_in
from peyvand.services.sync.account_data import FULLY_READ_EVENT_TYPE, AccountDataService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.event_thread import MAIN_THREAD, RelationLookup, walk_threads
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.storage.receipts import ReceiptRow, ReceiptStore
from peyvand.storage.relations import StoredRelation
from peyvand.types import EventID, JsonDict, RoomID, UserID

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE, FULLY_READ)


# Called with each local m.read receipt stored (not with private ones).
ReceiptListener = Callable[[ReceiptRow], Awaitable[None]]
# Called with each receipt stored and the stream position of its event.
StoredHook = Callable[[ReceiptRow, int], None]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


def receipt_event(rows: Sequence[ReceiptRow]) -> JsonDict:
    """One room's ``m.receipt`` ephemeral event: event ID -> receipt type -> user ->
    ``{"ts", "thread_id"?}``; ``thread_id`` is omitted for unthreaded receipts."""
    content: JsonDict = {}
    for row in rows:
        receipt: JsonDict = {"ts": row.ts}
        if row.thread_id:
            receipt["thread_id"] = row.thread_id
        content.setdefault(row.event_id, {}).setdefault(row.receipt_type, {})[row.user_id] = receipt
    return {"type": "m.receipt", "content": content}


class ReceiptService:
    def __init__(
        self,
        store: ReceiptStore,
        account_data: AccountDataService,
        state: StateService,
        notifier: Notifier,
        *,
        relations: RelationLookup,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        """``relations``: stored relations, to tell a threaded receipt's thread."""
        self._store = store
        self._relations = relations
        self._account_data = account_data
        self._state = state
        self._notifier = notifier
        self._wall_clock_ms = wall_clock_ms
        self._position = 0
        self._write_lock = asyncio.Lock()
        self._marker_lock = asyncio.Lock()
        self.listeners: list[ReceiptListener] = []
        self.read_listeners: list[ReceiptListener] = []
        self.stored_hooks: list[StoredHook] = []

    @property
    def current_position(self) -> int:
        return self._position

    async def start(self) -> None:
        """Resume the stream at its stored position."""
        self._position = await self._store.get_max_stream_id()
        self._notifier.advance(Stream.RECEIPTS, self._position, ())

    async def resume(self) -> None:
        """Write above what is stored or announced (``wiring.primary`` took the role)."""
        async with self._write_lock:
            stored = await self._store.get_max_stream_id()
            self._position = max(self._position, stored, self._notifier.current_token.receipts)

    async def stored_position(self) -> int:
        """The stream's position in the database, whichever process wrote it (a
        deployment's ``StreamRelay`` compares it with this process's: issue 21)."""
        return await self._store.get_max_stream_id()

    # -- requests -----------------------------------------------------------------------

    async def send_receipt(
        self,
        user_id: UserID,
        room_id: RoomID,
        receipt_type: str,
        event_id: EventID,
        thread_id: str | None = None,
    ) -> None:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``.

        ``thread_id`` (checked non-empty by the caller) must be ``main`` or the thread the
        event belongs to (receipts.yaml, 400). ``m.fully_read`` moves the fully read marker
        instead and takes no ``thread_id``.
        """
        if receipt_type not in RECEIPT_TYPES:
            raise invalid_param(f"Receipt type must be one of {', '.join(RECEIPT_TYPES)}")
        if receipt_type == FULLY_READ and thread_id is not None:
            raise invalid_param(f"thread_id is not compatible with {FULLY_READ} receipts.")
        event = await self._member_event(user_id, room_id, event_id)
        if receipt_type == FULLY_READ:
            await self._move_fully_read(user_id, room_id, event)
            return
        if thread_id is not None and not await self._in_thread(event, thread_id):
            raise invalid_param(f"event_id {event_id} is not related to thread {thread_id}")
        row = ReceiptRow(
            room_id, receipt_type, user_id, thread_id or "", event_id, self._wall_clock_ms()
        )
        if not await self._store_receipt(row, event):
            return
        if receipt_type == READ:
            for listener in self.listeners:
                await listener(row)
        for listener in self.read_listeners:
            await listener(row)

    async def apply_remote_receipt(
        self, user_id: UserID, room_id: RoomID, event_id: EventID, ts: int, thread_id: str | None
    ) -> bool:
        """An ``m.read`` receipt received over federation (the caller checked the user and
        the room): stored unless the event is unknown here or not in the room, or the
        user's receipt is already at a later event. Whether it was stored."""
        event = await self._state.get_event(event_id)
        if event is None or event.pdu.room_id != room_id:
            return False
        row = ReceiptRow(room_id, READ, user_id, thread_id or "", event_id, ts)
        return await self._store_receipt(row, event)

    async def set_read_markers(
        self,
        user_id: UserID,
        room_id: RoomID,
        fully_read: EventID | None,
        read: EventID | None,
        read_private: EventID | None,
    ) -> None:
        """``POST /rooms/{roomId}/read_markers``: each given position is set exactly as the
        matching ``/receipt/{receiptType}/{eventId}`` request would (unthreaded)."""
        for receipt_type, event_id in (
            (FULLY_READ, fully_read),
            (READ, read),
            (READ_PRIVATE, read_private),
        ):
            if event_id is not None:
                await self.send_receipt(user_id, room_id, receipt_type, event_id)

    # -- sync -----------------------------------------------------------------------------

    async def receipts_for_rooms(
        self, user_id: UserID, room_ids: Sequence[RoomID], since: int, until: int
    ) -> dict[RoomID, JsonDict]:
        """Each room's ``m.receipt`` ephemeral event with the receipts changed in
        ``(since, until]`` (all current receipts when ``since`` is 0) that ``user_id`` may
        see; rooms without any are absent.

        One event per room, as Synapse sends: should one user have receipts of one type in
        two threads on the same event, the later one is shown.
        """
        by_room: dict[RoomID, list[ReceiptRow]] = {}
        for row in await self._store.get_receipts_for_rooms(user_id, room_ids, since, until):
            by_room.setdefault(row.room_id, []).append(row)
        return {room_id: receipt_event(rows) for room_id, rows in by_room.items()}

    # -- internals ------------------------------------------------------------------------

    async def _member_event(
        self, user_id: UserID, room_id: RoomID, event_id: EventID
    ) -> StoredEvent:
        """The event, if the user is joined to the room and the event belongs to it."""
        room = await self._state.get_room(room_id)
        if room is None or room.memberships.get(user_id) != "join":
            raise forbidden(f"User {user_id} is not joined to room {room_id}")
        event = await self._state.get_event(event_id)
        if event is None or event.pdu.room_id != room_id:
            raise not_found(f"Event {event_id} not found in room {room_id}")
        return event

    async def _in_thread(self, event: StoredEvent, thread_id: str) -> bool:
        """Whether ``event`` may carry a receipt for ``thread_id``, as Synapse decides it:
        the event is in that thread (``main`` for none), or is (related to) its root."""
        pdu = event.pdu
        relation = relation_in(pdu.content) if event.redacted_by is None else None
        own = (
            StoredRelation(pdu.room_id, relation.rel_type, relation.parent_id)
            if relation is not None
            else StoredRelation(pdu.room_id)
        )
        walked = (await walk_threads(self._relations, [(pdu.event_id, own)]))[pdu.event_id]
        if thread_id == MAIN_THREAD:
            return walked.thread == MAIN_THREAD
        return walked.thread == thread_id or thread_id in walked.reached

    async def _store_receipt(self, row: ReceiptRow, event: StoredEvent) -> bool:
        """Store ``row`` (for ``event``) and wake who may see it; whether it moved."""
        async with self._write_lock:
            position = self._position + 1
            if not await self._store.upsert_receipt(row, event.stream_ordering, position):
                return False
            self._position = position
            for hook in self.stored_hooks:
                hook(row, event.stream_ordering)
            # The room's joined users as its snapshot keeps them, read in place.
            room = None
            if row.receipt_type != READ_PRIVATE:
                room = await self._state.get_room(row.room_id)
            if room is None:
                self._notifier.advance(Stream.RECEIPTS, position, (row.user_id,))
            else:
                self._notifier.advance(Stream.RECEIPTS, position, (), [room.joined_view()])
        return True

    async def _move_fully_read(self, user_id: UserID, room_id: RoomID, event: StoredEvent) -> None:
        """Set the ``m.fully_read`` room account data to ``event`` unless it already points
        at a later event (as Synapse does)."""
        async with self._marker_lock:
            current = await self._account_data.get_server_managed(
                user_id, room_id, FULLY_READ_EVENT_TYPE
            )
            current_id = (current or {}).get("event_id")
            if isinstance(current_id, str):
                previous = await self._state.get_event(EventID(current_id))
                if previous is not None and previous.stream_ordering >= event.stream_ordering:
                    return
            await self._account_data.set_server_managed(
                user_id, room_id, FULLY_READ_EVENT_TYPE, {"event_id": event.pdu.event_id}
            )
