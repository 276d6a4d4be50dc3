"""Asking application services about users and room aliases nobody has yet
(Application Service API, "Querying": ``GET /users/{userId}`` and ``GET /rooms/{roomAlias}``).

A bridge creates its ghost users and portal rooms on demand: when a client asks about a
local user ID or alias in an appservice's namespace that does not exist (a profile, an
invite, an alias lookup or a join by alias), the appservices whose namespace holds it are
asked in turn; one answering 200 has created it, so the caller looks it up again. The
appservice's own bot is never asked about. Each question is bounded by a timeout,
concurrent callers asking the same share one round of questions, and a "no" is kept for
a short while so a client repeating its request does not repeat the questions.

Any client (even one without an access token, reading a profile) can make us ask, and a
new random ID each time escapes both, so at most ``QUERIES_PER_APPSERVICE`` questions
run at once per appservice; one more waits ``SLOT_WAIT`` seconds for its turn, then the
ID is unknown (as when the appservice does not answer in time, which Synapse also takes
as "no"), not kept as a "no" since the appservice never said it. A legitimate burst (a
bridge inviting a few new ghosts) is served in turn; a flood gets 404s at once, and
never holds more than these connections of the appservice's (transactions do not wait
behind them anyway: ``AppServiceClient`` has a pool for them alone). The limit is below
the client's ``QUERY_CONNECTIONS_PER_HOST`` so third-party lookups and pings still find
a connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

from peyvand.federation.appservice_client import (
    QUERY_CONNECTIONS_PER_HOST,
    AppServiceClient,
    AppServiceTarget,
)
from peyvand.lru import LRU
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.types import RoomAlias, UserID

__all__ = ["AppServiceQueries"]

logger = logging.getLogger(__name__)

QUERY_TIME_LIMIT: Final = 10.0  # seconds, for one appservice's answer
NEGATIVE_TTL: Final = 10.0  # seconds a "no" is kept
_NEGATIVE_CACHE_SIZE: Final = 10_000
QUERIES_PER_APPSERVICE: Final = QUERY_CONNECTIONS_PER_HOST // 2  # running at once
SLOT_WAIT: Final = 1.0  # seconds a question waits for its turn before "unknown"

_Kind = Literal["user", "alias"]
_Query = Callable[[AppServiceTarget, str], Awaitable[bool]]


class AppServiceQueries:
    def __init__(
        self,
        registry: AppServiceRegistry,
        client: AppServiceClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        time_limit: float = QUERY_TIME_LIMIT,
        concurrency: int = QUERIES_PER_APPSERVICE,
        slot_wait: float = SLOT_WAIT,
    ) -> None:
        self._registry = registry
        self._client = client
        self._clock = clock
        self._time_limit = time_limit
        self._concurrency = concurrency
        self._slot_wait = slot_wait
        # appservice ID -> its turns (one entry per appservice ever registered).
        self._slots: dict[str, asyncio.Semaphore] = {}
        # (kind, ID) -> until when "no appservice knows it" holds.
        self._unknown: LRU[tuple[_Kind, str], float] = LRU(_NEGATIVE_CACHE_SIZE)
        self._pending: dict[tuple[_Kind, str], asyncio.Future[bool]] = {}

    async def user_exists(self, user_id: UserID) -> bool:
        """Whether an appservice whose user namespace holds ``user_id`` answered that the
        user exists (it has registered it): then look the user up again."""
        services = [s for s in self._registry.owners_of_user(user_id) if s.sender != user_id]
        return await self._ask("user", user_id, services, self._client.query_user)

    async def alias_exists(self, alias: RoomAlias) -> bool:
        """Whether an appservice whose alias namespace holds ``alias`` answered that it
        created the room and alias: then resolve the alias again."""
        services = self._registry.owners_of_alias(alias)
        return await self._ask("alias", alias, services, self._client.query_alias)

    async def _ask(
        self, kind: _Kind, value: str, services: Sequence[ApplicationService], query: _Query
    ) -> bool:
        asked = [s for s in services if s.url is not None]
        key = (kind, value)
        if not asked or (self._unknown.get(key) or 0.0) > self._clock():
            return False
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask_each(key, asked, query))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # A caller that goes away leaves the question running for the others.
        return await asyncio.shield(pending)

    async def _ask_each(
        self, key: tuple[_Kind, str], services: Sequence[ApplicationService], query: _Query
    ) -> bool:
        """The appservices in turn, the first "yes" ending it (as Synapse asks them)."""
        all_answered = True
        for service in services:
            assert service.url is not None
            slots = self._slots.setdefault(service.id, asyncio.Semaphore(self._concurrency))
            try:
                async with asyncio.timeout(self._slot_wait):
                    await slots.acquire()
            except TimeoutError:
                logger.debug("appservice %s is busy: %s %s left unknown", service.id, *key)
                all_answered = False
                continue
            try:
                async with asyncio.timeout(self._time_limit):
                    if await query(AppServiceTarget(service.url, service.hs_token), key[1]):
                        return True
            except TimeoutError:
                logger.warning("appservice %s did not answer the %s query", service.id, key[0])
            finally:
                slots.release()
        if all_answered:
            self._unknown.put(key, self._clock() + NEGATIVE_TTL)
        return False
