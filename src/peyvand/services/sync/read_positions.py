"""How far each local user has read each room by unthreaded receipt, kept in memory.

Unread counts ("Receiving notifications") start after the later of a user's unthreaded
``m.read`` and ``m.read.private`` receipts. Every message in a busy room wakes each
member's sync, and each woken sync counts its unread notifications: reading the
receipts again each time was one query per woken sync (issue 15, hot room).

A receipt only moves forward and is never deleted, and ``ReceiptService`` stores every
one: it tells this cache (``moved``) before it wakes anyone, so an entry is always the
stored position. A read racing a write is not kept (a write counter), so what was read
before the write cannot replace what the write set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from peyvand.lru import LRU
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import RoomID, UserID

# (user, room) pairs kept: about 120 bytes each (key tuple, int, dict slot; tracemalloc).
_SIZE: Final = 10_000
# The receipt types that read events ("Receiving notifications").
_READ_TYPES: Final = frozenset({"m.read", "m.read.private"})

# (user, rooms) -> room -> the position of the furthest unthreaded read receipt; rooms
# without one are absent.
LoadReadPositions = Callable[[UserID, Sequence[RoomID]], Awaitable[dict[RoomID, int]]]


class ReadPositionCache:
    def __init__(self, load: LoadReadPositions, size: int = _SIZE) -> None:
        self._load = load
        self._positions: LRU[tuple[UserID, RoomID], int] = LRU(size)
        self._writes = 0
        # Told what ``moved_elsewhere`` is told (caches derived from receipts: issue 21).
        self.moved_elsewhere_hooks: list[Callable[[Sequence[Sequence[str]] | None], None]] = []

    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]:
        """room_id -> the position of the user's furthest unthreaded read receipt in
        it; rooms without one are absent. Only rooms not kept are read."""
        found: dict[RoomID, int] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            position = self._positions.get((user_id, room_id))
            if position is None:
                missing.append(room_id)
            elif position:
                found[room_id] = position
        if not missing:
            return found
        writes = self._writes
        loaded = await self._load(user_id, missing)
        if writes == self._writes:
            for room_id in missing:
                self._positions.put((user_id, room_id), loaded.get(room_id, 0))
        found.update(loaded)
        return found

    def moved_elsewhere(self, keys: Sequence[Sequence[str]] | None) -> None:
        """Another process of a deployment stored receipts of these ``(user, room)``
        pairs (None: of any): what is kept of them here is dropped (issue 21)."""
        self._writes += 1
        for hook in self.moved_elsewhere_hooks:
            hook(keys)
        if keys is None:
            self._positions.clear()
            return
        for user_id, room_id in keys:
            self._positions.pop((UserID(user_id), RoomID(room_id)))

    def moved(self, row: ReceiptRow, position: int) -> None:
        """``row`` was stored for the event at stream ``position``: called before anyone
        who may read the user's counts is woken."""
        if row.thread_id or row.receipt_type not in _READ_TYPES:
            return
        self._writes += 1
        key = (row.user_id, row.room_id)
        kept = self._positions.peek(key)
        if kept is not None:
            self._positions.put(key, max(kept, position))
