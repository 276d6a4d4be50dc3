"""The rooms partial here, in a process of a deployment that does not complete them (issue
21): the event writer joins with partial state and runs the resync
(``partial_state_resync``); every other process keeps the same ``PartialStateRooms`` so
its /sync leaves a partial room out of a sync that does not lazy-load members, sends it as
newly joined once complete, and makes ``/members`` wait, as the writer does.

- At start: the rooms still partial whose join is stored, and the partial state stream's
  position (the latest completion), which the stream relay then tracks.
- A room joined since: the writer records the room as partial before it stores the join,
  so when a batch of followed events holds a local user's join of a room not known as
  partial, the stored partial rooms are read again, before the batch is announced.
- A room completed: the writer names it on the cache relay before it advances the partial
  state stream (the bus keeps its order), so the room is complete here, and what this
  process kept of its state (its snapshot, state deltas, sync's summaries) dropped, before
  a sync woken by that advance runs. After a lost message (every cache dropped) the set is
  read again. A room completed while a read is under way is not marked again by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import StoredEvent
from peyvand.storage.partial_state import PartialStateStore
from peyvand.types import RoomID, ServerName, server_name_of

logger = logging.getLogger(__name__)


class PartialStateFollower:
    def __init__(
        self,
        server_name: ServerName,
        rooms: PartialStateRooms,
        store: PartialStateStore,
        state: StateService,
        notifier: Notifier,
        rewritten: Callable[[RoomID], None],
    ) -> None:
        """``rewritten``: drop what this process keeps of a completed room's state."""
        self._server_name = server_name
        self._rooms = rooms
        self._store = store
        self._state = state
        self._notifier = notifier
        self._rewritten = rewritten
        # Bumped by each completion told; the completion of each room at that count.
        self._generation = 0
        self._completed_at: dict[RoomID, int] = {}
        # Reading the set again after a lost message.
        self._reload: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._notifier.advance(Stream.PARTIAL_STATE, await self._store.max_completion(), ())
        await self._read_again()

    async def stop(self) -> None:
        reload, self._reload = self._reload, None
        if reload is not None:
            reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload

    async def before_announce(self, events: Sequence[StoredEvent]) -> None:
        """``EventStreamFollower.before_announce``: mark the rooms that a local user's
        join in ``events`` made partial."""
        joined = {
            e.pdu.room_id
            for e in events
            if e.pdu.type == "m.room.member"
            and e.pdu.membership == "join"
            and e.pdu.state_key
            and server_name_of(e.pdu.state_key) == self._server_name
            and not self._rooms.is_partial(e.pdu.room_id)
        }
        if joined:
            generation = self._generation
            for room in await self._store.rooms():
                if room.room_id in joined and not self._completed_since(room.room_id, generation):
                    self._rooms.mark(room)

    def completed_elsewhere(self, room_ids: Sequence[str] | None) -> None:
        """The cache relay: the writer completed these rooms (None: some, unknown)."""
        if room_ids is None:
            if self._reload is None or self._reload.done():
                self._reload = asyncio.create_task(self._reload_logged())
            return
        self._generation += 1
        for name in room_ids:
            room_id = RoomID(name)
            self._completed_at[room_id] = self._generation
            self._rewritten(room_id)
            self._rooms.completed(room_id)

    def _completed_since(self, room_id: RoomID, generation: int) -> bool:
        """Whether ``room_id`` was completed after the count was ``generation``."""
        return self._completed_at.get(room_id, -1) > generation

    async def _reload_logged(self) -> None:
        try:
            await self._read_again()
        except Exception:
            logger.exception("reading the partial-state rooms again failed")

    async def _read_again(self) -> None:
        """The stored partial rooms whose join is stored: marked; the others completed."""
        generation = self._generation
        stored = await self._store.rooms()
        joins = await self._state.get_events(room.join_event_id for room in stored)
        partial = [room for room in stored if room.join_event_id in joins]
        still = {room.room_id for room in partial}
        for room_id in self._rooms.room_ids():
            if room_id not in still:
                self._rewritten(room_id)
                self._rooms.completed(room_id)
        for room in partial:
            room_id = room.room_id
            if not self._rooms.is_partial(room_id) and not self._completed_since(
                room_id, generation
            ):
                self._rooms.mark(room)
