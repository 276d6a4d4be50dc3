"""The email pushers' digests (Client-Server API, "Push Notifications", pusher kind
``email``; as Synapse's email pusher, with its delay).

A periodic pass looks at every email pusher that has events after its stored position
(``pushers.last_stream_ordering``, so a restart neither repeats nor skips a digest):

1. its user's notifications after that position, oldest first, at most
   ``MAX_MESSAGES_PER_DIGEST`` (``storage.notifications``);
2. those the user has read meanwhile (read receipt, or their own later message) are
   left out; if none is left, the position moves past them and nothing is sent;
3. once the oldest unread one is ``notif_delay`` seconds old, one email lists them all
   (``digest``), and the position moves past every notification looked at. A failed
   send keeps the position and is tried again after a back-off (doubling from one pass
   up to ``MAX_RETRY_SECONDS``, kept in memory: a restart retries at once).

The pass runs every ``notif_delay / 10`` seconds (at least 0.25 s, at most 30 s), each
pusher one after another, with a bounded number of rows read per pusher. A pusher found
with nothing after its position is idle up to where the server stood: it is looked at
again only once its user is in a room with a later event (one query for all idle
pushers, ``NotificationStore.users_with_events``), so an idle server does no work per
pusher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any, Final, Protocol

from peyvand.background import BackgroundTask, periodic
from peyvand.config.model import EmailConfig
from peyvand.events.pdu import Pdu, StateKey
from peyvand.services.push.email.digest import Digest, MissedMessage, build_message
from peyvand.services.push.email.unsubscribe import EmailPusherKey, UnsubscribeLinks
from peyvand.storage.notifications import Notification, NotificationStore, is_read
from peyvand.storage.pushers import DeliveryState, PusherRow
from peyvand.types import EventID, RoomID, UserID

logger = logging.getLogger(__name__)

EMAIL_KIND: Final = "email"
MAX_MESSAGES_PER_DIGEST: Final = 50
MAX_RETRY_SECONDS: Final = 3600.0

_NAME: Final[StateKey] = ("m.room.name", "")
_ALIAS: Final[StateKey] = ("m.room.canonical_alias", "")

IgnoredUsers = Callable[[UserID], Awaitable[frozenset[UserID]]]


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class Pushers(Protocol):
    async def get_deliveries(
        self, kind: str, user_ids: Sequence[UserID] | None = None
    ) -> list[DeliveryState]: ...

    async def set_delivered(
        self, progress: Sequence[tuple[PusherRow, int, int | None]]
    ) -> list[bool]: ...


class RoomState(Protocol):
    async def get_pdus(
        self, event_ids: Iterable[EventID], *, as_served: bool = False
    ) -> dict[EventID, Pdu]: ...

    async def get_room(self, room_id: RoomID) -> Any: ...

    async def get_state_events(
        self, state: Mapping[StateKey, EventID], keys: Iterable[StateKey] | None = None
    ) -> Mapping[StateKey, Pdu]: ...


class EmailMailer:
    def __init__(
        self,
        config: EmailConfig,
        pushers: Pushers,
        notifications: NotificationStore,
        state: RoomState,
        ignored_users: IgnoredUsers,
        sender: MailSender,
        links: UnsubscribeLinks,
        max_position: Callable[[], int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._pushers = pushers
        self._notifications = notifications
        self._state = state
        self._ignored_users = ignored_users
        self._sender = sender
        self._links = links
        self._max_position = max_position
        self._clock = clock
        interval = min(30.0, max(0.25, config.notif_delay / 10))
        self._interval = interval
        # Failing pushers: when to try again, and the back-off that led there.
        self._retry: dict[EmailPusherKey, tuple[float, float]] = {}
        # Pushers found with no notification after their position, up to this position.
        self._idle: dict[EmailPusherKey, int] = {}
        self._task: BackgroundTask = periodic("email-notifications", interval, self.run_once)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def run_once(self) -> None:
        """One pass over the email pushers with events after their position."""
        newest = self._max_position()
        deliveries = await self._pushers.get_deliveries(EMAIL_KIND)
        keys = {_key(d.pusher) for d in deliveries}
        for gone in self._retry.keys() - keys:
            del self._retry[gone]
        for gone in self._idle.keys() - keys:
            del self._idle[gone]
        behind = [k for k, position in self._idle.items() if position < newest]
        active: set[UserID] = set()
        if behind:
            since = min(self._idle[k] for k in behind)
            active = await self._notifications.users_with_events(
                {k.user_id for k in behind}, since, newest
            )
        for delivery in deliveries:
            key = _key(delivery.pusher)
            idle_to = self._idle.get(key)
            if idle_to is not None and (idle_to >= newest or key.user_id not in active):
                self._idle[key] = max(idle_to, newest)
                continue
            retry = self._retry.get(key)
            if delivery.last_stream_ordering >= newest or (retry and retry[0] > self._clock()):
                continue
            try:
                if await self._check(delivery):
                    self._idle[key] = newest
                else:
                    self._idle.pop(key, None)
            except Exception:
                logger.exception("email notifications for %s failed", delivery.pusher.user_id)
                backoff = min(MAX_RETRY_SECONDS, 2 * retry[1] if retry else self._interval)
                self._retry[key] = (self._clock() + backoff, backoff)
            else:
                self._retry.pop(key, None)

    async def _check(self, delivery: DeliveryState) -> bool:
        """Send the digest due, if one is; whether the pusher had no notification at all."""
        pusher = delivery.pusher
        found = await self._notifications.notifications_for_user(
            pusher.user_id,
            after=delivery.last_stream_ordering,
            limit=MAX_MESSAGES_PER_DIGEST,
            ignored=await self._ignored_users(pusher.user_id),
            oldest_first=True,
        )
        if not found:
            return True
        read = await self._notifications.read_positions(
            pusher.user_id, sorted({n.room_id for n in found})
        )
        unread = [n for n in found if not is_read(n, read)]
        now_ms = int(self._clock() * 1000)
        if unread:
            if unread[0].ts + self._config.notif_delay * 1000 > now_ms:
                return False
            message = await self._message(pusher, unread)
            if message is not None:
                await self._sender.send(message)
        await self._pushers.set_delivered(
            [(pusher, found[-1].stream_ordering, now_ms if unread else None)]
        )
        return False

    async def _message(
        self, pusher: PusherRow, unread: Sequence[Notification]
    ) -> EmailMessage | None:
        """The digest of ``unread``; None if none of their events is left (purged)."""
        pdus = await self._state.get_pdus((n.event_id for n in unread), as_served=True)
        names: dict[tuple[RoomID, UserID], tuple[str, str]] = {}
        missed = []
        for n in unread:
            pdu = pdus.get(n.event_id)
            if pdu is None:
                continue
            asked = (pdu.room_id, pdu.sender)
            if asked not in names:
                names[asked] = await self._names(pdu)
            room_name, sender_name = names[asked]
            missed.append(MissedMessage(n.room_id, room_name, sender_name, _text(pdu), n.ts))
        if not missed:
            return None
        return build_message(
            Digest(
                to=pusher.pushkey,
                from_address=self._config.notif_from,
                app_name=self._config.app_name,
                messages=missed,
                unsubscribe_link=self._links.link(_key(pusher)),
            )
        )

    async def _names(self, pdu: Pdu) -> tuple[str, str]:
        """The room's name (or canonical alias, or ID) and the sender's display name (or
        user ID), from the room's current state (cached)."""
        snapshot = await self._state.get_room(pdu.room_id)
        if snapshot is None:
            return pdu.room_id, pdu.sender
        member: StateKey = ("m.room.member", pdu.sender)
        events = await self._state.get_state_events(snapshot.state, [_NAME, _ALIAS, member])
        room_name = _string(events.get(_NAME), "name") or _string(events.get(_ALIAS), "alias")
        sender_name = _string(events.get(member), "displayname")
        return room_name or pdu.room_id, sender_name or pdu.sender


def _key(pusher: PusherRow) -> EmailPusherKey:
    return EmailPusherKey(pusher.user_id, pusher.app_id, pusher.pushkey)


def _text(pdu: Pdu) -> str:
    if pdu.type == "m.room.encrypted":
        return "(an encrypted message)"
    body = pdu.content.get("body")
    if isinstance(body, str) and body:
        return body
    return f"({pdu.type})"


def _string(event: Pdu | None, key: str) -> str | None:
    value = event.content.get(key) if event is not None else None
    return value if isinstance(value, str) and value else None
