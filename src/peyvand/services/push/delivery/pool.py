"""Every http pusher of the server (Push Gateway API; as Synapse's ``PusherPool``).

- Loaded at start-up with one query; each pusher catches up from its stored position
  to the newest event at that moment, then takes live notifications.
- Live notifications come from the push-rule evaluation: ``PushActionsService`` keeps
  the actions of the members in ``UsersWithPushers`` whom an event notifies, and the pool
  takes them once the events are committed (``on_persisted``, a dispatcher listener), so
  rules are evaluated once per event and the users with pushers are found by set
  intersection with the room's members, never by reading the member list.
- An invite from another server to a room this server is not in (kept apart from the
  event pipeline) is evaluated the same way (``remote_invite_actions``) and queued live
  (``on_remote_invite``), the room named from its stripped state.
- A read receipt of a user with pushers queues a counts-only notification on each of
  their pushers (``on_receipt``).
- Sends of all pushers share one semaphore (``push.max_concurrent_sends``), and those to
  one gateway host a quarter of it (at most 16), the host being its lower-cased name and
  port (``u1@host`` and ``u2@HOST:443`` are one); those of one user's pushers a quarter
  too (at most 8). Each pusher sends sequentially, so a hanging gateway, or one user's
  many pushers, hold at most a quarter of the slots; failing pushers back off.
- The badge (``counts.unread``) is Synapse's default (``group_unread_count_by_room``):
  the rooms the user is invited to plus the joined rooms with unread notifications.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from typing import Any, Final, Literal

from yarl import URL

from peyvand.background import BackgroundTask
from peyvand.events.pdu import Pdu
from peyvand.events.push_rules.actions import Actions
from peyvand.federation.push_gateway import PushGatewayClient
from peyvand.lru import LRU
from peyvand.services.push.actions import PushOutcome
from peyvand.services.push.delivery.payload import RoomContext
from peyvand.services.push.delivery.progress import ProgressWriter
from peyvand.services.push.delivery.pusher import HttpPusher, LivePush, PusherDeps
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.models import EventToPersist
from peyvand.storage.notifications import Notification, NotificationStore, is_read
from peyvand.storage.pushers import DeliveryState, PusherRow, PusherStore
from peyvand.storage.receipts import ReceiptRow
from peyvand.types import EventID, JsonDict, RoomID, UserID

logger = logging.getLogger(__name__)

# Sends to one gateway host at once (at most a quarter of the global bound, so a dead
# host never holds every slot; the connector opens no more connections per host either).
_MAX_PER_HOST: Final = 16
# Sends of one user's pushers at once (as many as their pushers otherwise).
_MAX_PER_USER: Final = 8
# Gateway hosts whose bound is kept (one forgotten while in use is briefly doubled).
_HOSTS_KEPT: Final = 10_000
# Events whose room context (name, alias, sender's display name) is kept.
_CONTEXT_CACHE_SIZE: Final = 1024

_Key = tuple[str, str]  # (app_id, pushkey)
Memberships = Callable[[UserID], Awaitable[Mapping[RoomID, tuple[str, int]]]]
UnreadCounts = Callable[[UserID, Sequence[RoomID]], Awaitable[dict[RoomID, JsonDict]]]
IgnoredUsers = Callable[[UserID], Awaitable[frozenset[UserID]]]


class UsersWithPushers:
    """The local users who have at least one http pusher (kept by the pool, read by the
    push-rule evaluation to know whose actions to keep)."""

    def __init__(self) -> None:
        self._users: set[UserID] = set()

    def view(self) -> Set[UserID]:
        return self._users

    def set(self, user_id: UserID, has_pushers: bool) -> None:
        if has_pushers:
            self._users.add(user_id)
        else:
            self._users.discard(user_id)


# A live push for a user's pushers.
_Live = tuple[UserID, LivePush]


def _nowhere(_position: int) -> bool:
    return False


class PusherPool:
    def __init__(
        self,
        store: PusherStore,
        notifications: NotificationStore,
        gateway: PushGatewayClient,
        state: StateService,
        users: UsersWithPushers,
        *,
        take_pushes: Callable[[Sequence[EventToPersist]], list[PushOutcome]],
        actions_now: Callable[[UserID, Pdu], Awaitable[Actions | None]],
        remote_invite_actions: Callable[[Pdu], Awaitable[tuple[UserID, Actions] | None]],
        memberships: Memberships,
        unread_counts: UnreadCounts,
        ignored_users: IgnoredUsers,
        max_position: Callable[[], Awaitable[int]],
        max_concurrent_sends: int,
        include_content: bool,
        clock: Callable[[], float] = time.time,
        elsewhere: Callable[[int], bool] = _nowhere,
    ) -> None:
        """``elsewhere``: whether the event at a position was committed by another event
        writer of the deployment (its pushes are read from the database)."""
        self._store = store
        self._gateway = gateway
        self._state = state
        self._users = users
        self._take_pushes = take_pushes
        self._remote_invite_actions = remote_invite_actions
        self._memberships = memberships
        self._unread_counts = unread_counts
        self._notifications = notifications
        self._ignored_users = ignored_users
        self._max_position = max_position
        self._clock = clock
        self._pushers: dict[UserID, dict[_Key, HttpPusher]] = {}
        self._progress = ProgressWriter(store.set_delivered)
        self._deps = PusherDeps(
            notify=gateway.notify,
            semaphore=asyncio.Semaphore(max_concurrent_sends),
            host_semaphore=self._host_semaphore,
            badge=self.badge,
            room_context=self._room_context,
            ignored=ignored_users,
            pending=self._pending_pushes,
            get_pdus=self._get_pdus,
            actions_now=actions_now,
            set_delivered=self._progress.set_delivered,
            set_failing_since=store.set_failing_since,
            remove=self.remove,
            now_ms=lambda: int(self._clock() * 1000),
            include_content=include_content,
        )
        self._started = False
        # The newest position announced by the dispatcher: every event up to it is
        # committed, and every later one reaches ``on_persisted``.
        self._announced = 0
        # Serialises pusher changes (rare), so two never add the same pusher twice.
        self._changes = asyncio.Lock()
        self._contexts: LRU[EventID, RoomContext] = LRU(_CONTEXT_CACHE_SIZE)
        self._per_host = min(_MAX_PER_HOST, max(1, max_concurrent_sends // 4))
        self._host_semaphores: LRU[str, asyncio.Semaphore] = LRU(_HOSTS_KEPT)
        self._per_user = min(_MAX_PER_USER, max(1, max_concurrent_sends // 4))
        # The bound of each user with pushers (dropped with their last pusher).
        self._user_semaphores: dict[UserID, asyncio.Semaphore] = {}
        self._elsewhere = elsewhere
        # In position order: ranges of positions committed by another writer whose
        # notifications are still to be read, and the live pushes told after one.
        self._behind: deque[tuple[int, int] | list[_Live]] = deque()
        self._behind_due = asyncio.Event()
        self._elsewhere_task = BackgroundTask("pushes written elsewhere", self._catch_up_behind)

    async def start(self) -> None:
        await self._gateway.start()
        self._progress.start()
        self._announced = max(self._announced, await self._max_position())
        states = await self._store.get_deliveries("http")
        # No await from here: what was announced meanwhile is caught up on, what comes
        # next arrives live.
        for state in states:
            self._add(state, self._announced)
        self._started = True
        self._elsewhere_task.start()

    async def stop(self) -> None:
        self._started = False
        await self._elsewhere_task.stop()
        self._behind.clear()
        pushers = [p for by_key in self._pushers.values() for p in by_key.values()]
        self._pushers.clear()
        for pusher in pushers:
            await pusher.stop()
        await self._progress.stop()
        await self._gateway.close()

    def queue_stats(self) -> tuple[int, int, int]:
        """The pushers, the notifications waiting in their memory queues, and the pushers
        whose gateway is failing (for metrics: totals, bounded whoever registers)."""
        pushers = [p for by_key in self._pushers.values() for p in by_key.values()]
        return (
            len(pushers),
            sum(p.queue_length for p in pushers),
            sum(p.failing for p in pushers),
        )

    # -- inputs -------------------------------------------------------------------------

    def on_persisted(self, events: Sequence[EventToPersist]) -> None:
        """Dispatcher listener: queue the committed events' pushes on their pushers."""
        for event in events:
            self._announced = max(self._announced, event.stream_ordering)
        if self._started and self._pushers:
            self._note_elsewhere(events)
        live = [
            (user_id, LivePush(outcome.event.stream_ordering, outcome.event.pdu, actions.tweaks))
            for outcome in self._take_pushes(events)
            for user_id, actions in outcome.actions.items()
        ]
        if not live:
            return
        if self._behind:
            self._behind.append(live)
        else:
            self._hand(live)

    def _hand(self, live: list[_Live]) -> None:
        for user_id, push in live:
            for pusher in self._pushers.get(user_id, {}).values():
                pusher.on_push(push)

    def _note_elsewhere(self, events: Sequence[EventToPersist]) -> None:
        """Another event writer evaluated the push rules of its events (issue 21): their
        notifications are read from the database by the pushers of the users in their
        rooms, and this writer's later pushes wait until they are (``_catch_up_behind``),
        so a pusher never sends a later one first and then skips them."""
        positions = [
            e.stream_ordering
            for e in events
            if e.stream_ordering > 0 and self._elsewhere(e.stream_ordering)
        ]
        if not positions:
            return
        low, high = min(positions), max(positions)
        behind = self._behind
        if behind and isinstance(last := behind[-1], tuple):
            behind[-1] = (min(low, last[0]), high)
        else:
            behind.append((low, high))
        self._behind_due.set()

    async def _catch_up_behind(self) -> None:
        behind = self._behind
        while True:
            await self._behind_due.wait()
            self._behind_due.clear()
            while behind:
                try:
                    await self._next_behind()
                except Exception:
                    logger.exception("catching up on pushes written elsewhere failed")
                    await asyncio.sleep(1.0)

    async def _next_behind(self) -> None:
        """Deal with the head of ``_behind``: hand out live pushes, or have the pushers of
        the users in the rooms of a range of another writer's events read it."""
        behind = self._behind
        item = behind[0]
        if isinstance(item, list):
            behind.popleft()
            self._hand(item)
            return
        low, high = item
        users = await self._notifications.users_with_events(list(self._pushers), low - 1, high)
        for user_id in users:
            for pusher in self._pushers.get(user_id, {}).values():
                pusher.read_to(high)
        head = behind[0] if behind else None
        if head is item:
            behind.popleft()
        elif isinstance(head, tuple):
            # The range grew while it was read: what is left is above ``high``.
            behind[0] = (high + 1, head[1])

    async def on_remote_invite(
        self, pdu: Pdu, stream_ordering: int, invite_state: Sequence[JsonDict]
    ) -> None:
        """An invite from another server to a room this server is not in, kept at
        ``stream_ordering`` outside the event pipeline: pushed as a local invite is (the
        invitee's rules, ``.m.rule.invite_for_me``), the room named from the invite's
        stripped state. Not caught up on after a restart. Errors are logged, never
        raised: they must not fail the invite."""
        if pdu.state_key is None or not self._pushers.get(UserID(pdu.state_key)):
            return
        try:
            invited = await self._remote_invite_actions(pdu)
        except Exception:
            logger.exception("evaluating the push of invite %s failed", pdu.event_id)
            return
        if invited is None:
            return
        user_id, actions = invited
        context = _stripped_context(invite_state, pdu.sender)
        for pusher in self._pushers.get(user_id, {}).values():
            pusher.on_push(LivePush(stream_ordering, pdu, actions.tweaks, context))

    async def on_receipt(self, row: ReceiptRow) -> None:
        """Receipt listener: the user's badge may have gone down."""
        for pusher in self._pushers.get(row.user_id, {}).values():
            pusher.on_badge_change()

    async def on_pushers_changed(self, user_id: UserID) -> None:
        """A pusher of ``user_id`` was set or deleted: bring theirs up to date. A pusher
        replaced (new data or URL) starts again from its stored position, catching up
        to the newest event."""
        if not self._started:
            return
        async with self._changes:
            states = {
                (s.pusher.app_id, s.pusher.pushkey): s
                for s in await self._store.get_deliveries("http", [user_id])
            }
            current = self._pushers.get(user_id, {})
            for key, pusher in list(current.items()):
                state = states.get(key)
                if state is None or state.pusher != pusher.row:
                    del current[key]
                    await pusher.stop()
            for key, state in states.items():
                if key not in current:
                    self._add(state, self._announced)
            self._forget_if_empty(user_id)

    async def remove(self, row: PusherRow) -> None:
        """Delete a pusher its gateway rejected or that failed for a day (called from the
        pusher's own task, which ends by itself), unless it was replaced meanwhile (a
        new URL or data): the replacement is not the one rejected."""
        current = self._pushers.get(row.user_id, {})
        pusher = current.get((row.app_id, row.pushkey))
        if pusher is not None and pusher.row == row:
            del current[(row.app_id, row.pushkey)]
        self._forget_if_empty(row.user_id)
        await self._store.delete_if_unchanged(row)

    # -- what pushers ask -----------------------------------------------------------------

    async def badge(self, user_id: UserID) -> int:
        """``counts.unread``: invites plus joined rooms with unread notifications."""
        memberships = await self._memberships(user_id)
        joined = [room_id for room_id, (m, _) in memberships.items() if m == "join"]
        invites = sum(1 for m, _ in memberships.values() if m == "invite")
        counts = await self._unread_counts(user_id, joined) if joined else {}
        return invites + sum(1 for c in counts.values() if c.get("notification_count", 0) > 0)

    def _host_semaphore(self, url: str) -> asyncio.Semaphore:
        """The bound of the gateway host ``url`` names: its name, lower-cased, and port
        (no user information, which would make one host many)."""
        try:
            parsed = URL(url)
            host = f"{(parsed.host or '').lower()}:{parsed.port}"
        except (ValueError, TypeError):
            host = url  # refused by the client before any connection
        semaphore = self._host_semaphores.get(host)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self._per_host)
            self._host_semaphores.put(host, semaphore)
        return semaphore

    async def _pending_pushes(
        self, user_id: UserID, after: int, up_to: int, limit: int
    ) -> tuple[list[Notification], int]:
        """The catch-up notifications in ``(after, up_to]`` (``NotificationStore``, oldest
        first, at most ``limit``) the user has not read, as Synapse's pushers read them;
        and the position up to which the answer is complete."""
        found = await self._notifications.notifications_for_user(
            user_id,
            after=after,
            before=up_to + 1,
            limit=limit,
            ignored=await self._ignored_users(user_id),
            oldest_first=True,
        )
        complete_to = found[-1].stream_ordering if len(found) == limit else up_to
        if not found:
            return [], complete_to
        read = await self._notifications.read_positions(user_id, list({n.room_id for n in found}))
        return [n for n in found if not is_read(n, read)], complete_to

    async def _get_pdus(self, event_ids: Sequence[EventID]) -> Mapping[EventID, Pdu]:
        return await self._state.get_pdus(event_ids, as_served=True) if event_ids else {}

    async def _room_context(self, pdu: Pdu) -> RoomContext:
        """The room's name and canonical alias and the sender's display name, from the
        room's current state when the event is first pushed (kept per event: every
        member's push of an event names the same)."""
        cached = self._contexts.get(pdu.event_id)
        if cached is None:
            cached = await self._read_room_context(pdu)
            self._contexts.put(pdu.event_id, cached)
        return cached

    async def _read_room_context(self, pdu: Pdu) -> RoomContext:
        snapshot = await self._state.get_room(pdu.room_id)
        if snapshot is None:
            return RoomContext(None, None, None)
        member_key = ("m.room.member", pdu.sender)
        events = await self._state.get_state_events(
            snapshot.state, [("m.room.name", ""), ("m.room.canonical_alias", ""), member_key]
        )
        return RoomContext(
            _string(events.get(("m.room.name", "")), "name"),
            _string(events.get(("m.room.canonical_alias", "")), "alias"),
            _string(events.get(member_key), "displayname"),
        )

    # -- bookkeeping ----------------------------------------------------------------------

    def _add(self, state: DeliveryState, catch_up_to: int) -> None:
        row = state.pusher
        user_bound = self._user_semaphores.get(row.user_id)
        if user_bound is None:
            user_bound = self._user_semaphores[row.user_id] = asyncio.Semaphore(self._per_user)

        def slots(url: str) -> asyncio.Semaphore:
            return _Both(user_bound, self._host_semaphore(url))

        deps = dataclasses.replace(self._deps, host_semaphore=slots)
        pusher = HttpPusher(state, catch_up_to, deps)
        self._pushers.setdefault(row.user_id, {})[(row.app_id, row.pushkey)] = pusher
        self._users.set(row.user_id, True)
        pusher.start()

    def _forget_if_empty(self, user_id: UserID) -> None:
        if not self._pushers.get(user_id):
            self._pushers.pop(user_id, None)
            self._user_semaphores.pop(user_id, None)
            self._users.set(user_id, False)


class _Both(asyncio.Semaphore):
    """The user's bound, then the gateway host's, taken together: what a pusher takes
    as its host's bound (``PusherDeps.host_semaphore``) before the global one, so a
    user's pushers wait on each other holding no shared slot."""

    def __init__(self, first: asyncio.Semaphore, second: asyncio.Semaphore) -> None:
        super().__init__(1)
        self._first = first
        self._second = second

    async def acquire(self) -> Literal[True]:
        await self._first.acquire()
        try:
            await self._second.acquire()
        except BaseException:
            self._first.release()
            raise
        return True

    def release(self) -> None:
        self._second.release()
        self._first.release()

    def locked(self) -> bool:
        return self._first.locked() or self._second.locked()


def _string(event: Pdu | None, key: str) -> str | None:
    value = event.content.get(key) if event is not None else None
    return value if isinstance(value, str) and value else None


def _stripped_context(invite_state: Sequence[JsonDict], sender: UserID) -> RoomContext:
    """The room's name and alias and the sender's display name from an invite's
    stripped state events, when there."""
    found: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for event in invite_state:
        content = event.get("content")
        if isinstance(content, dict):
            found[(event.get("type"), event.get("state_key"))] = content

    def string(key: tuple[str, str], field: str) -> str | None:
        value = found.get(key, {}).get(field)
        return value if isinstance(value, str) and value else None

    return RoomContext(
        string(("m.room.name", ""), "name"),
        string(("m.room.canonical_alias", ""), "alias"),
        string(("m.room.member", sender), "displayname"),
    )
