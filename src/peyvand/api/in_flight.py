"""The requests being handled, so that a stopping process closes its database only once
none is left.

aiohttp's shutdown waits for the handlers of the connections it still has, and forgets a
connection its client closed while its handler kept working (handlers are not cancelled
when their client leaves): a federation transaction waiting on its origin's lock, for
instance, once the sending server gave up on it. Such a handler went on after the
components stopped and failed on the closed database. Every request is counted here, on
its way in; ``close`` refuses new ones, gives the running ones time to finish, then
cancels what is left and waits for it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from peyvand.api.context import json_response
from peyvand.errors import Errcode

logger = logging.getLogger(__name__)

# After aiohttp's own wait for the requests of open connections: the time the others get
# to finish, then the time the cancelled ones get to unwind.
FINISH_SECONDS = 5.0
CANCELLED_SECONDS = 2.0


class InFlight:
    """The tasks handling requests; ``middleware`` counts them, ``close`` ends them."""

    __slots__ = ("_closed", "_tasks", "middleware")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False
        self.middleware: Middleware = self._middleware()

    def __len__(self) -> int:
        return len(self._tasks)

    def _middleware(self) -> Middleware:
        tasks = self._tasks

        @web.middleware
        async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self._closed:
                return json_response(
                    {"errcode": Errcode.UNKNOWN.value, "error": "The server is stopping"}, 503
                )
            task = asyncio.current_task()
            assert task is not None  # a handler runs in a task
            tasks.add(task)
            try:
                return await handler(request)
            finally:
                tasks.discard(task)

        return in_flight

    async def close(
        self, finish: float = FINISH_SECONDS, cancelled: float = CANCELLED_SECONDS
    ) -> None:
        """Refuse new requests (503); wait up to ``finish`` seconds for the running ones,
        then cancel the rest and wait up to ``cancelled`` seconds for them to end."""
        self._closed = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=finish)
        if not pending:
            return
        logger.warning("stopping: cancelling %d requests still being handled", len(pending))
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=cancelled)
        if pending:
            logger.error("stopping: %d cancelled requests did not end", len(pending))
