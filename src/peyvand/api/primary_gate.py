"""The primary event writer's requests on a deployment with several event writers (issue
21): every write but a room's events (``api.roles.primary_route``: account data,
receipts, to-device, typing, presence, devices and keys, profiles, room creation and
membership...) is taken by one writer at a time, the primary (``wiring.primary``): the
positions of the streams other than the events' are allocated by one process.

On another writer (nginx's backup while the primary is down, or a request sent to it
directly) those requests are refused with 503 until it becomes the primary; the ones
admitted are counted, so that handing the role back waits for them to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from peyvand.errors import Errcode, MatrixError


class PrimaryGate:
    __slots__ = ("_idle", "_running", "held")

    def __init__(self) -> None:
        # Whether this process is the primary writer now.
        self.held = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Around a primary route's handler: refused (503) unless this process is the
        primary writer, counted while it runs."""
        if not self.held:
            raise MatrixError(
                Errcode.UNKNOWN, "This process is not the primary event writer now", status=503
            )
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def drained(self, seconds: float) -> bool:
        """Wait until no admitted request runs (at most ``seconds``); whether none does."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
