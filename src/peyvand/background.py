"""Background work a component owns: one task started with it and stopped with it.

Every loop in the server runs through ``BackgroundTask``, so cancelling on shut-down and
surviving one failed pass are written once. ``periodic`` is the common shape: run a job
every so many seconds; a pass that raises is logged and the next one runs on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class BackgroundTask:
    """One named asyncio task: ``start`` creates it (at most once), ``stop`` cancels it and
    waits for it to end. A task that ended with an error is logged when stopped."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._main(), name=self.name)

    async def _main(self) -> None:
        await self._run()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:
                logger.exception("background task %s failed", self.name)


def periodic(
    name: str,
    interval_seconds: float,
    job: Callable[[], Awaitable[object]],
    *,
    run_at_start: bool = False,
) -> BackgroundTask:
    """A task that runs ``job`` every ``interval_seconds`` (first after one interval, or at
    once with ``run_at_start``). A failing pass is logged; the loop goes on."""

    async def loop() -> None:
        if not run_at_start:
            await asyncio.sleep(interval_seconds)
        while True:
            try:
                await job()
            except Exception:
                logger.exception("periodic job %s failed", name)
            await asyncio.sleep(interval_seconds)

    return BackgroundTask(name, loop)
