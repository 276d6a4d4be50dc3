"""Asking application services about users and room aliases nobody has yet
(Application Service API, "Querying": ``GET /users/{userId}`` and ``GET /rooms/{roomAlias}``).

A bridge creates its ghost users and portal rooms on demand: when a client asks about a
local user ID or alias in an appservice's namespace that does not exist (a profile, an
invite, an alias lookup or a join by alias), the appservices whose namespace holds it are
asked in turn; one answering 200 has created it, so the caller looks it up again. The
appservice's own bot is never asked about. Each question is bounded by a timeout,
concurrent callers asking the same share one round of questions, and a "no" is kept for
a short while so a client repeating its request does not repeat the questions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

from peyvand.federation.appservice_client import AppServiceClient, AppServiceTarget
from peyvand.lru import LRU
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.types import RoomAlias, UserID

__all__ = ["AppServiceQueries"]

logger = logging.getLogger(__name__)

QUERY_TIME_LIMIT: Final = 10.0  # seconds, for one appservice's answer
NEGATIVE_TTL: Final = 10.0  # seconds a "no" is kept
_NEGATIVE_CACHE_SIZE: Final = 10_000

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
    ) -> None:
        self._registry = registry
        self._client = client
        self._clock = clock
        self._time_limit = time_limit
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
        targets = [AppServiceTarget(s.url, s.hs_token) for s in services if s.url is not None]
        key = (kind, value)
        if not targets or (self._unknown.get(key) or 0.0) > self._clock():
            return False
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask_each(key, targets, query))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # A caller that goes away leaves the question running for the others.
        return await asyncio.shield(pending)

    async def _ask_each(
        self, key: tuple[_Kind, str], targets: Sequence[AppServiceTarget], query: _Query
    ) -> bool:
        """The appservices in turn, the first "yes" ending it (as Synapse asks them)."""
        for target in targets:
            try:
                async with asyncio.timeout(self._time_limit):
                    if await query(target, key[1]):
                        return True
            except TimeoutError:
                logger.warning("appservice at %s did not answer the %s query", target.url, key[0])
        self._unknown.put(key, self._clock() + NEGATIVE_TTL)
        return False
