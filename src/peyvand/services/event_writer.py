"""Group commit of events (DESIGN.md, "Writing events").

Requests hand fully built and authorised events to the one writer per database. The
writer commits whatever is queued in a single transaction, so concurrent sends share one
fsync; only after the commit do requests get their answer and waiters wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from peyvand.storage.database import Connection, Database
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist

logger = logging.getLogger(__name__)

PersistedCallback = Callable[[Sequence[EventToPersist]], Awaitable[None]]
FailedCallback = Callable[[Sequence[EventToPersist]], Awaitable[None]]
# Writes that belong to a batch's own transaction (e.g. push actions).
TxnWrite = Callable[[Connection], Awaitable[None]]
# Runs before a batch's transaction and returns what to write in it (None: nothing).
PreCommitHook = Callable[[Sequence[EventToPersist]], Awaitable[TxnWrite | None]]

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
        self._queue: list[tuple[EventToPersist, asyncio.Future[None] | None]] = []
        self._wakeup = asyncio.Event()
        # Set while nothing is queued or being committed.
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._pre_commit: list[PreCommitHook] = []

    def add_pre_commit(self, hook: PreCommitHook) -> None:
        """Let ``hook`` add writes to every batch's transaction, atomic with the events."""
        self._pre_commit.append(hook)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-writer")

    async def stop(self) -> None:
        """Finish every queued commit, then stop the writer task."""
        if self._task is not None:
            await self._idle.wait()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def enqueue(self, events: Sequence[EventToPersist]) -> asyncio.Future[None]:
        """Queue ``events`` (in order); the future resolves once they are durable.

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

    async def _commit(
        self, batch: list[tuple[EventToPersist, asyncio.Future[None] | None]]
    ) -> None:
        events = [e for e, _ in batch]
        try:
            writes = [w for hook in self._pre_commit if (w := await hook(events)) is not None]
            async with self._db.transaction() as txn:
                await self._store.persist_events(txn, events)
                for write in writes:
                    await write(txn)
        except Exception as exc:
            logger.exception("group commit of %d events failed", len(events))
            # Events queued later in the same rooms were built on top of these: fail them too.
            rooms = {e.pdu.room_id for e in events}
            dependent = [item for item in self._queue if item[0].pdu.room_id in rooms]
            self._queue = [item for item in self._queue if item[0].pdu.room_id not in rooms]
            failed = batch + dependent
            await self._on_failed([e for e, _ in failed])
            for _, future in failed:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        await self._on_persisted(events)
        for _, future in batch:
            if future is not None and not future.done():
                future.set_result(None)
