"""In-memory caches across a deployment's processes (issue 21, "Caches"): a process
that changes what another process may keep in memory (a revoked access token, a user's
push rules, one-time key counts) says so on the bus, and every other process drops its
copies at once, before its next request reads them.

A message names the cache and the keys changed (JSON values: user IDs, or
``[user, device]`` pairs), or none: every entry of the cache is dropped. The bus delivers
at most once, and a loss on either side drops every registered cache whole, so what the
next request reads comes from the database:

- the receiving side: after its bus listens again (``on_reconnect``);
- the sending side: once the sender can send again after messages of its own were lost
  (``on_send_lost``), it publishes ``{"c": "*"}``, and every other process drops all.

The relay subscribes when it is built, before the bus starts, so it listens from the
moment the bus is started.

A change that must hold from the moment its request is answered (a revoked token) is
published with ``delivered``: it returns once the message is in PostgreSQL's hands (so
the other processes have it before the client can ask them), publishing again after a
loss, for at most the given time. A revoked token's requests answer after at most
``TOKEN_SECONDS`` so: either the others were told, or the copies they had when the
revocation was committed are read again by then (``AuthService.read_tokens_again_after``).

A single process has no relay: its services invalidate their caches next to their own
writes, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from peyvand.storage.bus import Bus, PayloadTooLarge

logger = logging.getLogger(__name__)

CHANNEL = "caches"

# How long a write waits for its invalidation to be sent (the sending connection down).
SENT_TIMEOUT_SECONDS = 1.0
# Every cache at once, in a message sent after a loss.
ALL = "*"
# How long a process of a deployment trusts an access token it read; a revocation waits
# at most that long for its message to be sent.
TOKEN_SECONDS = 5.0
# Between two attempts of ``delivered`` after a loss.
_RETRY_SECONDS = 0.05

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
        bus.subscribe(CHANNEL, self._on_message)
        bus.on_reconnect(self._reconnected)
        bus.on_send_lost(self._lost)

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
        """Return once what was published so far is sent (or lost, or after a second:
        then the others drop everything once this process can send again)."""
        if not await self._flush(SENT_TIMEOUT_SECONDS):
            logger.warning("cache invalidations not sent within %.1f s", SENT_TIMEOUT_SECONDS)

    async def delivered(self, cache: str, keys: Sequence[object], seconds: float) -> bool:
        """Publish that ``keys`` of ``cache`` changed, again after each loss, until the
        message is in PostgreSQL's hands (True) or ``seconds`` have passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            self.changed(cache, keys)
            if await self._flush(max(0.0, deadline - loop.time())):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(_RETRY_SECONDS, deadline - loop.time()))

    async def start(self) -> None:
        """Nothing to start: the relay listens from the moment the bus is started."""

    async def stop(self) -> None:
        """Nothing to release: the bus stops with the process."""

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        if sender == self._instance:
            return  # the bus hands a process its own messages too
        if payload.get("c") == ALL:
            logger.info("%s lost cache invalidations: every cache dropped", sender)
            self._drop_all()
            return
        drop = self._drops.get(str(payload.get("c")))
        if drop is None:
            logger.warning("ignoring an invalidation of an unknown cache from %s", sender)
            return
        keys = payload.get("k")
        drop(keys if isinstance(keys, list) else None)

    async def _reconnected(self) -> None:
        self._drop_all()

    def _lost(self) -> None:
        """Messages of this process were lost: the others may keep what it changed."""
        self._bus.publish(CHANNEL, {"c": ALL})

    def _drop_all(self) -> None:
        for drop in self._drops.values():
            drop(None)
