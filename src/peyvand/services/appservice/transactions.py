"""Events pushed to every application service (Application Service API, "Pushing
events"), each through its own ``AppServiceSender``.

- Committed events reach ``on_persisted`` (a dispatcher listener); one routing task
  offers each, in stream order, to the senders of the appservices interested in it
  (``AppServiceInterest.wanted_at``: with the room's members at the event, its state
  group, so a catch-up read from the database decides the same; no query once a
  room's group is known). Backfilled history (negative
  positions) is not pushed, nor are events of appservices without a ``url``. Invites
  from other servers to rooms this server is not in, kept apart from the events, come
  through ``on_remote_invite`` (those held as message requests once released).
- At start each appservice catches up from its stored position to the newest committed
  event; one seen for the first time starts at the newest event (no history flood).
- A registry reload (``on_registrations``) starts senders for the appservices added,
  stops those removed (their stored position is kept) and restarts the changed ones;
  the others keep their sender, its queue and any transaction in flight.
- ``status`` and ``retry_now`` serve the admin API.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from peyvand.background import BackgroundTask
from peyvand.events.pdu import Pdu
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.appservice.sender import AppServiceSender, SenderDeps, SenderStatus
from peyvand.storage.models import EventToPersist

__all__ = ["AppServiceTransactions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Reload:
    services: tuple[ApplicationService, ...]


@dataclass(frozen=True, slots=True)
class _Invite:
    pdu: Pdu
    stream_ordering: int


class AppServiceTransactions:
    def __init__(
        self,
        registry: AppServiceRegistry,
        deps: SenderDeps,
        *,
        max_position: Callable[[], Awaitable[int]],
    ) -> None:
        self._registry = registry
        self._deps = deps
        self._max_position = max_position
        self._senders: dict[str, AppServiceSender] = {}
        # The newest position announced by the dispatcher: every event up to it is
        # committed, and every later one reaches ``on_persisted``.
        self._announced = 0
        self._started = False
        # Committed batches and registry reloads, handled in order by the routing task.
        self._items: deque[Sequence[EventToPersist] | _Reload | _Invite] = deque()
        self._wakeup = asyncio.Event()
        self._task = BackgroundTask("appservice transactions", self._route)

    async def start(self) -> None:
        self._announced = max(self._announced, await self._max_position())
        await self._apply(self._registry.services)
        self._started = True
        self._task.start()

    async def stop(self) -> None:
        self._started = False
        await self._task.stop()
        senders = list(self._senders.values())
        self._senders.clear()
        for sender in senders:
            await sender.stop()

    # -- inputs --------------------------------------------------------------------------

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """Dispatcher listener: route the committed batch (backfill excluded)."""
        newest = max((e.stream_ordering for e in batch), default=0)
        self._announced = max(self._announced, newest)
        if self._started and newest > 0:
            self._items.append(batch)
            self._wakeup.set()

    def on_remote_invite(self, pdu: Pdu, stream_ordering: int) -> None:
        """``InviteInbox.listeners``: an invite from another server to a room this
        server is not in, kept apart from the events at ``stream_ordering``. Its position
        was taken before it was stored, so events below it may still be on their way: it
        moves no mark (``_announced``, a sender's ``on_seen``) past them."""
        if self._started:
            self._items.append(_Invite(pdu, stream_ordering))
            self._wakeup.set()

    def on_registrations(self, services: Sequence[ApplicationService]) -> None:
        """``AppServiceRegistry.listeners``: the set of appservices was reloaded."""
        if self._started:
            self._items.append(_Reload(tuple(services)))
            self._wakeup.set()

    def on_extras(self, appservice_id: str) -> None:
        """``AppServiceExtras.wake``: the appservice may have new ephemeral data."""
        sender = self._senders.get(appservice_id)
        if sender is not None:
            sender.on_extras()

    # -- admin ---------------------------------------------------------------------------

    def status(self) -> list[SenderStatus]:
        """Every registered appservice's delivery, by ID."""
        return [self._status_of(s) for s in sorted(self._registry.services, key=lambda s: s.id)]

    def status_of(self, appservice_id: str) -> SenderStatus | None:
        appservice = self._registry.by_id(appservice_id)
        return None if appservice is None else self._status_of(appservice)

    def _status_of(self, appservice: ApplicationService) -> SenderStatus:
        sender = self._senders.get(appservice.id)
        if sender is not None:
            return sender.status()
        return SenderStatus.without_sender(appservice.id, appservice.url)

    def retry_now(self, appservice_id: str) -> bool:
        """Make a backing-off appservice's sender try again now; False if it was not
        waiting to retry."""
        sender = self._senders.get(appservice_id)
        return sender is not None and sender.retry_now()

    # -- routing -------------------------------------------------------------------------

    async def _route(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items:
                item = self._items.popleft()
                try:
                    if isinstance(item, _Reload):
                        await self._reload(item.services)
                    elif isinstance(item, _Invite):
                        await self._offer_invite(item)
                    else:
                        await self._offer(item)
                except Exception:
                    logger.exception("routing to application services failed")

    async def _offer(self, batch: Sequence[EventToPersist]) -> None:
        """Offer each new event to the senders of the appservices that want it, decided
        with the room's members at the event (its state group), in stream order. Nothing
        is looked at while no appservice has a sender (a server without bridges)."""
        if not self._senders:
            return
        newest = max(e.stream_ordering for e in batch)
        senders = list(self._senders.values())
        appservices = [s.appservice for s in senders]
        by_id = {s.appservice.id: s for s in senders}
        try:
            for event in batch:
                if event.stream_ordering <= 0:
                    continue
                wanted = await self._deps.interest.wanted_at(
                    appservices, event.pdu, event.state_group, event.new_state_group
                )
                for appservice in wanted:
                    by_id[appservice.id].on_event(event.stream_ordering, event.pdu.event_id)
        except Exception:
            # Read again from the database: decided there with the same state groups.
            logger.exception("deciding application services' interest failed")
            for sender in senders:
                sender.reread(newest)
            return
        for sender in senders:
            sender.on_seen(newest)

    async def _offer_invite(self, invite: _Invite) -> None:
        pdu, position = invite.pdu, invite.stream_ordering
        for sender in list(self._senders.values()):
            try:
                if await self._deps.interest.is_interested(
                    sender.appservice, pdu.room_id, pdu.sender, pdu.type, pdu.state_key
                ):
                    sender.on_event(position, pdu.event_id, invite=True)
            except Exception:
                logger.exception("deciding appservice %s's interest failed", sender.appservice.id)
                sender.reread(min(position, self._announced))

    async def _reload(self, services: Sequence[ApplicationService]) -> None:
        self._deps.interest.reset()
        await self._apply(services)

    async def _apply(self, services: Sequence[ApplicationService]) -> None:
        """Senders for exactly ``services`` (those with a ``url``): new ones start from
        their stored position (or the newest event), changed ones restart."""
        wanted = {s.id: s for s in services if s.url is not None}
        for appservice_id, sender in list(self._senders.items()):
            appservice = wanted.get(appservice_id)
            if appservice == sender.appservice:
                # Unchanged (compared by value: a reload parses every file again).
                sender.reloaded(appservice)
            else:
                del self._senders[appservice_id]
                await sender.stop()
        added = [s for s in wanted.values() if s.id not in self._senders]
        if not added:
            return
        ids = [s.id for s in added]
        await self._deps.store.add(ids, self._announced)
        progress = await self._deps.store.get_progress(ids)
        # No await from here: what was announced meanwhile is caught up on from the
        # database, what comes next is routed live.
        for appservice in added:
            sender = AppServiceSender(
                appservice, progress[appservice.id], self._announced, self._deps
            )
            self._senders[appservice.id] = sender
            sender.start()
        logger.info("pushing events to %d application services", len(self._senders))
