"""One http pusher: its own sequential queue, so a slow or dead gateway delays only
itself (Push Gateway API; behaviour as Synapse's ``HttpPusher``).

- Notifications go out one at a time in stream order: first those the database holds
  after the pusher's stored position up to where the server stood when the pusher was
  loaded (catch-up after a restart: ``NotificationStore``, less what the user has read
  and what users they ignore sent), then those the pool hands over
  live. The position is stored only after the gateway answered 200, so a crash before
  that sends the notification again after the restart, and one after it never does.
- The queue holds positions, event IDs and tweaks, not events: the event is read at
  every attempt as clients see it (Synapse's ``_process_one``), so one redacted while the
  gateway was failing goes out redacted, without its content; one gone is skipped. At
  most ``LIVE_QUEUE_MAX`` live notifications are queued: past that (a gateway dead for
  long) they are dropped and read again from the database, as after a restart.
- While the gateway fails (no answer in time, or not 200), the same notification is
  retried after 1 s, doubling up to an hour; a pusher failing for a day is deleted.
- A ``rejected`` answer naming the pusher's pushkey deletes the pusher.
- A read receipt that may lower the badge queues one counts-only notification, sent
  once (no retry) when the queue is empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peyvand.background import BackgroundTask
from peyvand.events.pdu import Pdu
from peyvand.events.push_rules.actions import Actions
from peyvand.federation.push_gateway import GatewayAnswer, GatewayError
from peyvand.services.push.delivery.payload import (
    RoomContext,
    counts_notification,
    event_notification,
)
from peyvand.storage.notifications import Notification
from peyvand.storage.pushers import DeliveryState, PusherRow
from peyvand.types import EventID, JsonDict, UserID

logger = logging.getLogger(__name__)

# Synapse's HttpPusher: INITIAL_BACKOFF_SEC, MAX_BACKOFF_SEC, GIVE_UP_AFTER_MS.
INITIAL_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 3600.0
GIVE_UP_AFTER_MS: Final = 24 * 3600 * 1000
# Catch-up rows read per query.
_CATCH_UP_BATCH: Final = 100
# Live notifications queued per pusher; past that they are read from the database.
LIVE_QUEUE_MAX: Final = 1000
# Tweaks of a notification found in the database (which keeps only whether it
# highlights) when it cannot be evaluated again: those of the default rules' mentions.
_HIGHLIGHT_TWEAKS: Final = {"sound": "default", "highlight": True}


@dataclass(frozen=True, slots=True)
class LivePush:
    """A committed event that notifies the pusher's user, with the actions' tweaks."""

    stream_ordering: int
    pdu: Pdu
    tweaks: Mapping[str, Any]
    # What the notification names besides the event, when known already (an invite from
    # another server: its stripped state); else read from the room's current state.
    context: RoomContext | None = None


@dataclass(frozen=True, slots=True)
class _Queued:
    """A notification waiting for its turn: the event is read when it is sent."""

    stream_ordering: int
    event_id: EventID
    tweaks: Mapping[str, Any]
    context: RoomContext | None = None
    # The event itself only when the store does not hold it (an invite from another
    # server, which comes with its context).
    pdu: Pdu | None = None


@dataclass(frozen=True, slots=True)
class PusherDeps:
    """What every pusher shares, provided by the pool."""

    notify: Callable[[str, JsonDict], Awaitable[GatewayAnswer]]
    # The global bound on sends, and the bound of one gateway host.
    semaphore: asyncio.Semaphore
    host_semaphore: Callable[[str], asyncio.Semaphore]
    badge: Callable[[UserID], Awaitable[int]]
    room_context: Callable[[Pdu], Awaitable[RoomContext]]
    ignored: Callable[[UserID], Awaitable[frozenset[UserID]]]
    # (user, after, up_to, limit) -> the notifications to catch up on, and the position
    # up to which that answer is complete.
    pending: Callable[[UserID, int, int, int], Awaitable[tuple[list[Notification], int]]]
    get_pdus: Callable[[Sequence[EventID]], Awaitable[Mapping[EventID, Pdu]]]
    # The actions of a caught-up event evaluated again (None: the user left the room).
    actions_now: Callable[[UserID, Pdu], Awaitable[Actions | None]]
    set_delivered: Callable[[PusherRow, int, int | None], Awaitable[bool]]
    set_failing_since: Callable[[PusherRow, int], Awaitable[None]]
    remove: Callable[[PusherRow], Awaitable[None]]
    now_ms: Callable[[], int]
    include_content: bool


class HttpPusher:
    def __init__(self, state: DeliveryState, catch_up_to: int, deps: PusherDeps) -> None:
        self.row = state.pusher
        self._deps = deps
        self._position = state.last_stream_ordering
        self._failing_since = state.failing_since
        self._backoff = INITIAL_BACKOFF
        # Catch-up: the database is read in (_read_to, _catch_up_to].
        self._read_to = state.last_stream_ordering
        self._catch_up_to = max(catch_up_to, state.last_stream_ordering)
        self._backlog: deque[_Queued] = deque()
        self._live: deque[_Queued] = deque()
        # Set once the live queue is full: the newest position not queued, read from the
        # database once the notification being sent is dealt with.
        self._overflow_to: int | None = None
        self._badge_due = False
        self._wakeup = asyncio.Event()
        self._task = BackgroundTask(f"pusher:{self.row.user_id}:{self.row.app_id}", self._run)
        self._gone = False

    @property
    def url(self) -> str:
        url = self.row.data.get("url")
        return url if isinstance(url, str) else ""

    @property
    def queue_length(self) -> int:
        """Notifications waiting in memory (catch-up reads more from the database)."""
        return len(self._backlog) + len(self._live)

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def start(self) -> None:
        self._task.start()
        if self._catch_up_to > self._read_to:
            self._wakeup.set()

    async def stop(self) -> None:
        self._gone = True
        await self._task.stop()

    def on_push(self, push: LivePush) -> None:
        """Queue a live notification (one at or before the catch-up bound is found there)."""
        if push.stream_ordering <= self._catch_up_to:
            return
        if self._overflow_to is not None or len(self._live) >= LIVE_QUEUE_MAX:
            self._overflow_to = push.stream_ordering
        else:
            kept = push.pdu if push.context is not None else None
            self._live.append(
                _Queued(push.stream_ordering, push.pdu.event_id, push.tweaks, push.context, kept)
            )
        self._wakeup.set()

    def read_to(self, position: int) -> None:
        """Notifications up to ``position`` (committed) are read from the database: they
        were evaluated by another event writer, so none of them comes live. What the
        live queue holds is read there too, in order."""
        newest = max(position, self._live[-1].stream_ordering if self._live else 0)
        if newest <= self._catch_up_to:
            return
        self._overflow_to = max(newest, self._overflow_to or 0)
        self._wakeup.set()

    def on_badge_change(self) -> None:
        self._badge_due = True
        self._wakeup.set()

    async def _run(self) -> None:
        while not self._gone:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._drain()
            except Exception:
                # A database error: the notification stays queued and is tried again.
                logger.exception("pusher of %s failed: retrying", self.row.user_id)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                self._wakeup.set()

    async def _drain(self) -> None:
        while not self._gone:
            queue = await self._next()
            if queue is None:
                break
            await self._deliver(queue[0])
            queue.popleft()
        if self._badge_due and not self._gone:
            self._badge_due = False
            await self._send_badge()

    async def _next(self) -> deque[_Queued] | None:
        """The queue whose head goes next: the catch-up notifications first, then the
        live ones (the head is taken off once it is dealt with)."""
        if self._overflow_to is not None:
            # The live queue overflowed: what it held and what came since is caught up
            # on from the database, after what was delivered.
            self._live.clear()
            self._read_to = max(self._read_to, self._position)
            self._catch_up_to = max(self._catch_up_to, self._overflow_to)
            self._overflow_to = None
        while not self._backlog and self._read_to < self._catch_up_to:
            await self._read_backlog()
        if self._backlog:
            return self._backlog
        return self._live if self._live else None

    async def _read_backlog(self) -> None:
        """The next catch-up notifications from the database."""
        user_id = self.row.user_id
        pending, complete_to = await self._deps.pending(
            user_id, self._read_to, self._catch_up_to, _CATCH_UP_BATCH
        )
        pdus = await self._deps.get_pdus([p.event_id for p in pending])
        for p in pending:
            pdu = pdus.get(p.event_id)
            if pdu is None:
                continue
            actions = await self._deps.actions_now(user_id, pdu)
            if actions is None:
                tweaks: Mapping[str, Any] = _HIGHLIGHT_TWEAKS if p.highlight else {}
            elif actions.notify:
                tweaks = actions.tweaks
            else:
                continue  # the user's rules no longer notify it
            self._backlog.append(_Queued(p.stream_ordering, p.event_id, tweaks))
        self._read_to = complete_to

    async def _deliver(self, push: _Queued) -> None:
        """Send ``push`` until the gateway takes it, the pusher is rejected, or it has
        failed for a day."""
        user_id = self.row.user_id
        context = push.context
        while not self._gone:
            # Read at every attempt: redacted meanwhile, it goes out without content.
            pdu = push.pdu or (await self._deps.get_pdus([push.event_id])).get(push.event_id)
            if pdu is None or pdu.sender in await self._deps.ignored(user_id):
                return
            if context is None:
                context = await self._deps.room_context(pdu)
            notification = event_notification(
                self.row,
                pdu,
                push.tweaks,
                await self._deps.badge(user_id),
                context,
                include_content=self._deps.include_content,
            )
            answer = await self._send(notification)
            if answer is not None:
                await self._delivered(push.stream_ordering, answer)
                return
            now = self._deps.now_ms()
            if self._failing_since is None:
                self._failing_since = now
                await self._deps.set_failing_since(self.row, now)
            if now - self._failing_since > GIVE_UP_AFTER_MS:
                logger.warning("pusher %s of %s failed for a day: removed", self.url, user_id)
                await self._remove()
                return
            logger.info("push to %s failed: retrying in %.0f s", self.url, self._backoff)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    async def _delivered(self, stream_ordering: int, answer: GatewayAnswer) -> None:
        self._backoff = INITIAL_BACKOFF
        self._failing_since = None
        self._position = stream_ordering
        if self.row.pushkey in answer.rejected:
            logger.info("pushkey of %s rejected by %s: pusher removed", self.row.user_id, self.url)
            await self._remove()
            return
        if not await self._deps.set_delivered(self.row, stream_ordering, self._deps.now_ms()):
            self._gone = True  # deleted meanwhile

    async def _send_badge(self) -> None:
        notification = counts_notification(self.row, await self._deps.badge(self.row.user_id))
        answer = await self._send(notification)
        if answer is not None and self.row.pushkey in answer.rejected:
            await self._remove()

    async def _send(self, notification: JsonDict) -> GatewayAnswer | None:
        """POST it within the global bound; None if the gateway failed."""
        async with self._deps.host_semaphore(self.url), self._deps.semaphore:
            try:
                return await self._deps.notify(self.url, notification)
            except GatewayError as exc:
                logger.info("push gateway %s failed: %s", self.url, exc)
                return None

    async def _remove(self) -> None:
        self._gone = True
        await self._deps.remove(self.row)
