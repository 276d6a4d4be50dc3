"""Group commit of events (DESIGN.md, "Writing events").

Requests hand fully built and authorised events to the one writer per database. The
writer commits whatever is queued in a single transaction, so concurrent sends share one
fsync; only after the commit do requests get their answer and waiters wake.

One bad row must not fail the other members of a batch: when a batch's transaction
fails, its rooms are committed again in halves, down to single rooms, so only the rooms
whose own events cannot be stored fail (a room's events build on each other: prev
events, state groups, current state, so they commit or fail together). The positions of
failed events are left unused; stream readers take positions as bounds, never as a
count, so the gap costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from peyvand.background import BackgroundTask
from peyvand.storage.database import Connection, Database
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist
from peyvand.types import RoomID

logger = logging.getLogger(__name__)

PersistedCallback = Callable[[Sequence[EventToPersist]], Awaitable[None]]
FailedCallback = Callable[[Sequence[EventToPersist]], Awaitable[None]]
# Writes that belong to a batch's own transaction (e.g. push actions).
TxnWrite = Callable[[Connection], Awaitable[None]]
# Runs before a batch's transaction and returns what to write in it (None: nothing).
# After a failed commit it runs again for each part of the batch retried, so it must
# give the same writes for the same events however often it is called.
PreCommitHook = Callable[[Sequence[EventToPersist]], Awaitable[TxnWrite | None]]
# A queued event and, on the last event of an ``enqueue`` call, that call's future.
_Item = tuple[EventToPersist, asyncio.Future[None] | None]

_MAX_BATCH = 1000


class EventWriter:
    def __init__(
        self,
        db: Database,
        store: EventStore,
        on_persisted: PersistedCallback,
        on_failed: FailedCallback,
    ) -> None:
        self._db = db
        self._store = store
        self._on_persisted = on_persisted
        self._on_failed = on_failed
        self._queue: list[_Item] = []
        self._wakeup = asyncio.Event()
        # Set while nothing is queued or being committed.
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = BackgroundTask("event-writer", self._run)
        self._pre_commit: list[PreCommitHook] = []

    def add_pre_commit(self, hook: PreCommitHook) -> None:
        """Let ``hook`` add writes to every batch's transaction, atomic with the events."""
        self._pre_commit.append(hook)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Finish every queued commit, then stop the writer task."""
        if self._task.running:
            await self._idle.wait()
        await self._task.stop()

    def enqueue(self, events: Sequence[EventToPersist]) -> asyncio.Future[None]:
        """Queue ``events`` (of one room, in order); the future resolves once they are
        durable, or fails if the room's commit fails.

        Enqueueing is synchronous so callers holding a room's lock keep the room's order.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Only the last event carries the future: the queue commits in order, so the
        # earlier ones are durable no later than it.
        for index, event in enumerate(events):
            self._queue.append((event, done if index == len(events) - 1 else None))
        self._idle.clear()
        self._wakeup.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
                await self._commit(batch)
            self._idle.set()

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            await self._write([e for e, _ in batch])
        except Exception as exc:
            rooms: dict[RoomID, list[_Item]] = {}
            for item in batch:
                rooms.setdefault(item[0].pdu.room_id, []).append(item)
            logger.exception("group commit of %d events in %d rooms failed", len(batch), len(rooms))
            failures: dict[RoomID, Exception] = {}
            await self._bisect(list(rooms.values()), exc, failures)
            for room_id, error in failures.items():
                await self._fail(room_id, rooms[room_id], error)
            batch = [item for item in batch if item[0].pdu.room_id not in failures]
            if not batch:
                return
        await self._on_persisted([e for e, _ in batch])
        for _, future in batch:
            if future is not None and not future.done():
                future.set_result(None)

    async def _write(self, events: list[EventToPersist]) -> None:
        """Commit ``events`` and what the pre-commit hooks add for them, in one transaction."""
        writes = [w for hook in self._pre_commit if (w := await hook(events)) is not None]
        async with self._db.transaction() as txn:
            await self._store.persist_events(txn, events)
            for write in writes:
                await write(txn)

    async def _bisect(
        self, rooms: list[list[_Item]], exc: Exception, failures: dict[RoomID, Exception]
    ) -> None:
        """The events of ``rooms`` failed to commit together with ``exc``: commit each half
        of the rooms on its own, splitting a half that fails again, and record in
        ``failures`` the rooms that fail alone. Nothing is announced here: the caller
        does it once for the whole batch, so no position shows before a lower one of
        the same batch is stored."""
        if len(rooms) == 1:
            failures[rooms[0][0][0].pdu.room_id] = exc
            return
        middle = len(rooms) // 2
        for half in (rooms[:middle], rooms[middle:]):
            try:
                await self._write([e for room in half for e, _ in room])
            except Exception as half_exc:
                await self._bisect(half, half_exc, failures)

    async def _fail(self, room_id: RoomID, items: list[_Item], exc: Exception) -> None:
        """Fail a room's events, and those queued since in the room: they were built on
        top of them."""
        logger.error("%d events of %s were not stored", len(items), room_id, exc_info=exc)
        dependent = [item for item in self._queue if item[0].pdu.room_id == room_id]
        self._queue = [item for item in self._queue if item[0].pdu.room_id != room_id]
        failed = items + dependent
        await self._on_failed([e for e, _ in failed])
        for _, future in failed:
            if future is not None and not future.done():
                future.set_exception(exc)
