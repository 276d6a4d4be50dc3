"""In-memory caches across a deployment's processes (issue 21, "Caches"): a process
that changes what another process may keep in memory (a revoked access token, a user's
push rules, one-time key counts) says so on the bus, and every other process drops its
copies at once, before its next request reads them.

A message names the cache and the keys changed (JSON values: user IDs, or
``[user, device]`` pairs), or none: every entry of the cache is dropped. The bus delivers
at most once, so after a reconnect (messages may have been lost) every registered cache
is dropped whole: what the next request reads then comes from the database.

A change that must hold from the moment its request is answered (a revoked token)
also awaits ``sent``: the message is in PostgreSQL's hands, so the other processes have
it before the client can ask them.

A single process has no relay: its services invalidate their caches next to their own
writes, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from peyvand.storage.bus import Bus, PayloadTooLarge

logger = logging.getLogger(__name__)

CHANNEL = "caches"

# How long a write waits for its invalidation to be sent (the sending connection down).
SENT_TIMEOUT_SECONDS = 1.0

Drop = Callable[[list[Any] | None], None]
"""Another process changed these keys of a cache (None: any): forget them."""
Flush = Callable[[float], Awaitable[bool]]
"""Wait until the messages published so far are sent, at most this long; whether they were."""


class CacheRelay:
    def __init__(self, bus: Bus, instance: str, flush: Flush) -> None:
        self._bus = bus
        self._instance = instance
        self._flush = flush
        self._drops: dict[str, Drop] = {}

    def register(self, cache: str, drop: Drop) -> None:
        """``drop`` forgets this process's entries of ``cache`` changed elsewhere."""
        self._drops[cache] = drop

    def changed(self, cache: str, keys: Sequence[object] | None) -> None:
        """This process changed ``keys`` of ``cache`` (None: any): tell the others."""
        try:
            self._bus.publish(CHANNEL, {"c": cache, "k": None if keys is None else list(keys)})
        except PayloadTooLarge:
            self._bus.publish(CHANNEL, {"c": cache, "k": None})

    async def sent(self) -> None:
        """Return once what was published so far is sent (or after a second: then the
        sending connection is down and the others re-read everything when it is back)."""
        if not await self._flush(SENT_TIMEOUT_SECONDS):
            logger.warning("cache invalidations not sent within %.1f s", SENT_TIMEOUT_SECONDS)

    async def start(self) -> None:
        self._bus.subscribe(CHANNEL, self._on_message)
        self._bus.on_reconnect(self._reconnected)

    async def stop(self) -> None:
        """Nothing to release: the bus stops with the process."""

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        if sender == self._instance:
            return  # the bus hands a process its own messages too
        drop = self._drops.get(str(payload.get("c")))
        if drop is None:
            logger.warning("ignoring an invalidation of an unknown cache from %s", sender)
            return
        keys = payload.get("k")
        drop(keys if isinstance(keys, list) else None)

    async def _reconnected(self) -> None:
        for drop in self._drops.values():
            drop(None)
