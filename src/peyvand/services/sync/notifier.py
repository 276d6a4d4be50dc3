"""Wakes long-polling /sync requests (DESIGN.md, "Sync").

Every stream reports its new position here together with exactly the local users who can
see the change; only their waiters wake. An idle incremental sync therefore costs no
database query: it just waits on an ``asyncio.Event``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from peyvand.services.sync.streams import Stream, StreamToken


class Notifier:
    def __init__(self, initial: StreamToken) -> None:
        self._current = initial
        # user_id -> events of the long-polls currently waiting for that user.
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @property
    def current_token(self) -> StreamToken:
        return self._current

    def advance(self, stream: Stream, position: int, user_ids: Iterable[str]) -> None:
        """Record ``stream`` at ``position`` and wake ``user_ids``' waiting syncs.

        Walks whichever is smaller, the users or those waiting: a message to a big room
        few of whose members are syncing costs O(waiters), not O(members)."""
        if position > self._current.get(stream):
            self._current = self._current.advanced(stream, position)
        waiters = self._waiters
        if isinstance(user_ids, AbstractSet) and len(waiters) < len(user_ids):
            woken = [events for user_id, events in waiters.items() if user_id in user_ids]
        else:
            woken = [events for user_id in user_ids if (events := waiters.get(user_id))]
        for events in woken:
            for event in events:
                event.set()

    async def wait_for_user(self, user_id: str, timeout_s: float) -> None:
        """Return when a stream advances for ``user_id``, or on timeout.

        Callers compare ``current_token`` with what they have already seen right before
        calling (no await in between), so no wake-up can be missed."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(user_id, set())
        waiters.add(event)
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(user_id, None)
