"""Application services as requesters (Application Service API, "Client-Server API
Extensions", "Identity assertion").

A request whose access token is an appservice's ``as_token`` is that appservice. It acts
as its bot (``sender_localpart``), or with ``?user_id=`` as a registered user of its user
namespaces (403 M_FORBIDDEN otherwise, as Synapse: outside the namespace, or never
registered; 403 M_USER_DEACTIVATED for a deactivated one). With ``?device_id=`` (spec
v1.17) or its MSC3202 name ``org.matrix.msc3202.device_id`` it acts as that device of
the user, which must exist (400 M_UNKNOWN_DEVICE); as Synapse, any appservice may.

Without a device parameter the request has no device: ``Requester.device_id`` is
``NO_DEVICE`` (the empty string, which no login or registration ever gives a device, so
no to-device inbox, keys or pushers of a real device are reached through it) and
``token_id`` is ``NO_TOKEN`` (no access-token row). Operations that need a device (keys
upload) should refuse ``NO_DEVICE``, as the spec says.

The token is a dict read in the registry. Users known to be registered and active are
kept in an LRU, forgotten when deactivated (``on_deactivated``; ``deactivated_elsewhere``
when another process of a deployment did it), so a bridge's stream of
masqueraded requests costs no query each; the device check is one query, made only when
a device is named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from peyvand.errors import Errcode, MatrixError, forbidden
from peyvand.lru import LRU
from peyvand.services.accounts.requester import Requester
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.storage.accounts import AccountStore
from peyvand.storage.errors import ConflictError
from peyvand.types import DeviceID, UserID

__all__ = ["NO_DEVICE", "NO_TOKEN", "AppServiceAuth"]

log = logging.getLogger(__name__)

NO_DEVICE = DeviceID("")
NO_TOKEN = 0
# The query parameters naming the device to act as: the spec's, then MSC3202's.
_DEVICE_PARAMS = ("device_id", "org.matrix.msc3202.device_id")
_ACTIVE_USERS_CACHE_SIZE = 100_000


class AppServiceAuth:
    def __init__(
        self,
        registry: AppServiceRegistry,
        accounts: AccountStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._accounts = accounts
        self._clock = clock
        # Registered, active users an appservice acted as (the value is unused).
        self._active: LRU[UserID, bool] = LRU(_ACTIVE_USERS_CACHE_SIZE)
        # Bumped on every deactivation, so a lookup racing one is not cached.
        self._deactivations = 0
        # Bots being registered after a reload.
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Register the bots of the appservices loaded at start."""
        await self.create_bots(self._registry.services)

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    def on_reloaded(self, services: Sequence[ApplicationService]) -> None:
        """``AppServiceRegistry.listeners`` hook: register the bots a reload added."""
        task = asyncio.get_running_loop().create_task(self._create_bots_logged(services))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _create_bots_logged(self, services: Sequence[ApplicationService]) -> None:
        try:
            await self.create_bots(services)
        except Exception:
            log.exception("Registering the bots of reloaded application services failed")

    async def get_requester(
        self, token: str, query: Mapping[str, str], ip: str | None
    ) -> Requester | None:
        """The appservice requester of ``token`` and the request's ``query``; None if the
        token is no appservice's (or not from an address its registration allows)."""
        service = self._registry.by_token(token, ip)
        if service is None:
            return None
        user_id = query.get("user_id")
        if user_id is None or user_id == service.sender:
            effective = service.sender
        else:
            effective = await self._controlled_user(service, user_id)
        device_id = next((query[p] for p in _DEVICE_PARAMS if p in query), None)
        device = NO_DEVICE
        if device_id is not None:
            if not device_id or await self._accounts.get_device(effective, device_id) is None:
                raise MatrixError(
                    Errcode.UNKNOWN_DEVICE,
                    f"Application service trying to use a device that doesn't exist "
                    f"({device_id!r} for {effective})",
                )
            device = DeviceID(device_id)
        return Requester(effective, device, NO_TOKEN, appservice=service)

    async def _controlled_user(self, service: ApplicationService, user_id: str) -> UserID:
        """``user_id`` if ``service`` may act as it: in its user namespaces, registered
        and not deactivated."""
        if not service.is_user_in_namespace(user_id):
            raise forbidden(f"Application service cannot masquerade as this user ({user_id})")
        user = UserID(user_id)
        if self._active.get(user) is not None:
            return user
        deactivations = self._deactivations
        row = await self._accounts.get_user(user_id)
        if row is None:
            raise forbidden(f"Application service has not registered this user ({user_id})")
        if row.deactivated:
            raise MatrixError(Errcode.USER_DEACTIVATED, f"{user_id} has been deactivated")
        if deactivations == self._deactivations:
            self._active.put(user, True)
        return user

    async def on_deactivated(self, user_id: UserID) -> None:
        """``AuthService.on_deactivated`` hook: an appservice may no longer act as them."""
        self._deactivations += 1
        self._active.pop(user_id)

    def deactivated_elsewhere(self, user_ids: Collection[str] | None) -> None:
        """Another process of a deployment deactivated these users (None: any): an
        appservice may no longer act as them here either (issue 21)."""
        self._deactivations += 1
        if user_ids is None:
            self._active.clear()
            return
        for user_id in user_ids:
            self._active.pop(UserID(user_id))

    async def create_bots(self, services: Sequence[ApplicationService]) -> None:
        """Register each appservice's bot (``sender_localpart``) that is not yet a user,
        without a password. One insert per registration (a handful, at start or reload);
        an existing bot is left as it is."""
        for service in services:
            try:
                await self._accounts.create_user(
                    service.sender, None, is_admin=False, created_ts=int(self._clock() * 1000)
                )
            except ConflictError:
                continue
            log.info("Registered the bot %s of application service %s", service.sender, service.id)
