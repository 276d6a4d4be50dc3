"""The streams other than the events' across a deployment's processes (issue 21,
"Streams across processes"): receipts, account data, to-device, device lists... are
written by whichever process serves the request, and every process's waiting /syncs must
wake when they move.

Each process publishes its own advances (a ``Notifier`` observer) on the bus, with the
users to wake when they are few (``MAX_USERS``; otherwise every waiting sync of the
stream's readers wakes and finds out), and applies the others': first the stream's
``refresh`` hooks (a cache of the moved users' data dropped), then its notifier, as if
the write had been its own. What the syncs then read comes from the database; the
position is the writer's (each stream's positions are allocated by the one process
that writes it: requests that write are routed to the event writers).

Typing and presence live in memory only and are carried with their data by their own
services (``excluded`` here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.storage.bus import Bus

logger = logging.getLogger(__name__)

CHANNEL = "streams"
# Users named in one message at most (a user ID is up to 255 bytes; the bus takes 7,900).
MAX_USERS = 24

Refresh = Callable[[int, Collection[str] | None], None]
"""Another process moved a stream to a position for these users (None: any user): drop
or mark what this process keeps of their data in it."""


class StreamRelay:
    def __init__(self, bus: Bus, notifier: Notifier, instance: str) -> None:
        self._bus = bus
        self._notifier = notifier
        self._instance = instance
        self._refresh: dict[Stream, list[Refresh]] = {}
        self._excluded: set[Stream] = {Stream.EVENTS}
        self._applying = False

    def exclude(self, stream: Stream) -> None:
        """``stream`` is carried by its own service, not by this relay."""
        self._excluded.add(stream)

    def on_refresh(self, stream: Stream, refresh: Refresh) -> None:
        self._refresh.setdefault(stream, []).append(refresh)

    async def start(self) -> None:
        self._notifier.observers.append(self._advanced)
        self._bus.subscribe(CHANNEL, self._on_message)

    async def stop(self) -> None:
        if self._advanced in self._notifier.observers:
            self._notifier.observers.remove(self._advanced)

    def _advanced(
        self,
        stream: Stream,
        position: int,
        users: Collection[str],
        audiences: Sequence[AbstractSet[str]],
    ) -> None:
        """A notifier observer: this process moved ``stream`` for ``users`` and the
        ``audiences`` (a room's local members: receipts)."""
        if self._applying or stream in self._excluded:
            return
        named: list[str] | None = None
        if len(users) + sum(len(audience) for audience in audiences) <= MAX_USERS:
            named = sorted(set(users).union(*audiences))
        self._bus.publish(CHANNEL, {"s": stream.value, "p": position, "u": named})

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        if sender == self._instance:
            return  # the bus hands a process its own messages too
        try:
            stream = Stream(payload["s"])
            position = int(payload["p"])
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed stream message from %s", sender)
            return
        if stream in self._excluded:
            return
        users = payload.get("u")
        named = [str(user) for user in users] if isinstance(users, list) else None
        for refresh in self._refresh.get(stream, ()):
            refresh(position, named)
        self._applying = True
        try:
            if named is None:
                self._notifier.advance_all(stream, position)
            else:
                self._notifier.advance(stream, position, named)
        finally:
            self._applying = False
