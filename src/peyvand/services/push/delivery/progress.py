"""Pushers' progress written in batches: every position recorded while one transaction
commits goes into the next, so a thousand pushes of one message cost a few commits, not a
thousand fsyncs. A pusher waits for its own record to be durable, as before (its position
is stored only after its gateway answered 200; a crash before the commit sends that
notification again after the restart)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from peyvand.background import BackgroundTask
from peyvand.storage.pushers import PusherRow

logger = logging.getLogger(__name__)

# Records per transaction.
_BATCH: Final = 1000

SetDelivered = Callable[[Sequence[tuple[PusherRow, int, int | None]]], Awaitable[list[bool]]]
_Record = tuple[PusherRow, int, int | None, asyncio.Future[bool]]


class ProgressWriter:
    def __init__(self, set_delivered: SetDelivered) -> None:
        self._set_delivered = set_delivered
        self._queue: list[_Record] = []
        self._wakeup = asyncio.Event()
        self._task = BackgroundTask("pusher-progress", self._run)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        for *_, done in self._queue:
            done.cancel()
        self._queue.clear()

    async def set_delivered(
        self, pusher: PusherRow, stream_ordering: int, success_ts: int | None
    ) -> bool:
        """Store the pusher's position; False if the pusher is gone."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((pusher, stream_ordering, success_ts, done))
        self._wakeup.set()
        return await done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[:_BATCH]
                del self._queue[:_BATCH]
                try:
                    found = await self._set_delivered([(p, s, t) for p, s, t, _ in batch])
                except Exception as exc:
                    logger.exception("storing the progress of %d pushers failed", len(batch))
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (*_, done), exists in zip(batch, found, strict=True):
                    if not done.done():
                        done.set_result(exists)
