"""Presence (Client-Server API, "Presence"; Server-Server API, "Presence"), in memory.

Each user this server knows the presence of has one ``UserPresence``: local users from
``PUT /presence/{userId}/status`` and ``/sync``'s ``set_presence``, remote users from
``m.presence`` EDUs. Nothing is stored: after a restart everyone is offline until they
sync or set their presence again (Synapse's users also fall offline 30 s after their last
sync, so a restart looks like a timeout).

Every change that a client should hear of (presence, status message or
``currently_active``) takes the next position of the presence stream; the user's entry in
``_changed`` moves to the end, so it holds each user once (coalesced: the latest change)
in position order. Only the users who share a room with the changed user (and the user)
are woken, so one change in a 1,000-member room costs O(1,000) wake-ups and each woken
sync reads O(changes since its token) entries, never all presence.

A sync also gets the presence of users it newly shares a room with: every join seen by
the dispatcher is logged at a presence position; a sync reads the joins after its token
in its rooms (a join of its own brings the presence of every member of that room, someone
else's join that member's presence), as Synapse does.

Timeouts as Synapse's (``handlers/presence.py``), checked by one periodic sweep over the
users who are not offline, never a timer per user: a local user is ``unavailable`` after
5 minutes without activity (a sync with ``set_presence=online``, or setting oneself
online) and ``offline`` 30 s after their last sync ended;
``currently_active`` ends a minute after the last activity; a remote user is offline 30
minutes after the last update from their server.

Positions start at the wall-clock time in milliseconds, so tokens keep increasing across
restarts without storage (as the typing stream's).

Across the processes of a deployment (issue 21, ``replicate``): every process holds every
user's presence. A process that changes a user's entry (``/sync``'s ``set_presence`` on a
client reader, ``PUT /presence`` or a remote server's update on the event writer, a
timeout of its own sweep) sends the whole entry (presence, status message,
``currently_active``, the last activity and sync times) and its position over the bus;
the others apply it without sending it again: they wake their own syncs and tell their
``change_hooks``. The ``listeners`` (other servers) are told by one process, the one
given ``tells_servers`` (the federation sender holding the first share of the
destinations: ``tell_servers``), of every change of a local user's
presence, its own and those it applied: a change goes to other servers once, whichever
process made it (a client reader's ``/sync`` too). An applied change takes position
``max(previous + 1, the sender's)``, above every token this process gave out: a reader's
token never goes backwards nor skips a change, and the processes' positions keep close
to each other.

Who applies the timeouts: the process that made a user's latest change (the user's
*owner*); the others skip the user in their sweeps (``_foreign``), so a timeout fires
once and two processes never fight over a user. A sync counts where it runs only, so a
sync starting on a process that does not own its user sends the entry (a *claim*, even
when nothing notable changed) and that process owns the user from then on: a user
usually syncs on one client reader (nginx routes by access token), which then owns them;
one syncing on two readers at once is claimed back and forth, one message per long-poll.
What the owner alone knows (a sync ending, ``last_active_ts`` moved by activity that
changed nothing notable) is not sent: the others' ``last_active_ago`` may be behind by
up to ``LAST_ACTIVE_GRANULARITY_MS`` (``currently_active`` turning false is notable).
A user whose owner stops has their timeouts applied by nobody until a process changes or
claims them again. Joins are logged by every process (each sees every event), but only
the one given ``tells_servers`` hands them to the ``join_listeners``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peyvand.background import periodic
from peyvand.errors import forbidden
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.replica import Replica
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.bus import Bus
from peyvand.storage.models import EventToPersist
from peyvand.types import JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

ONLINE: Final = "online"
UNAVAILABLE: Final = "unavailable"
OFFLINE: Final = "offline"
STATES: Final = (ONLINE, UNAVAILABLE, OFFLINE)

# Synapse's timers (handlers/presence.py), in milliseconds.
IDLE_TIMER_MS: Final = 5 * 60 * 1000
SYNC_ONLINE_TIMEOUT_MS: Final = 30 * 1000
LAST_ACTIVE_GRANULARITY_MS: Final = 60 * 1000
FEDERATION_TIMEOUT_MS: Final = 30 * 60 * 1000
# How often the sweep looks for timed-out users.
SWEEP_SECONDS: Final = 5.0
# Joins remembered for syncs (older tokens miss the presence of users met by a join).
MAX_JOINS_KEPT: Final = 10_000
MAX_STATUS_MSG_LENGTH: Final = 4096
# Past this many changes since a token, a sync walks its rooms' members instead of the
# changed users' rooms.
MANY_CHANGES: Final = 256
# The bus channel of presence changes.
CHANNEL: Final = "presence"

# Called with the local users whose presence changed (to send them to other servers).
PresenceListener = Callable[[Sequence["UserPresence"]], Awaitable[None]]
# Called with (room, user) joins, a sweep's worth at a time.
JoinListener = Callable[[Sequence[tuple[RoomID, UserID]]], Awaitable[None]]
# Called with the users (local or remote) whose notable presence changed.
ChangeHook = Callable[[Sequence[UserID]], None]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class UserPresence:
    user_id: UserID
    presence: str = OFFLINE
    status_msg: str | None = None
    last_active_ts: int = 0
    currently_active: bool = False
    # Local: when the last sync ended (0 while none ended); remote: the last update.
    last_sync_ts: int = 0
    syncing: int = 0

    def content(self, now_ms: int) -> JsonDict:
        """The ``m.presence`` event content (Client-Server API, "Presence"); as Synapse,
        ``currently_active`` only for an online user."""
        content: JsonDict = {"presence": self.presence}
        if self.presence == ONLINE:
            content["currently_active"] = self.currently_active
        if self.last_active_ts:
            content["last_active_ago"] = max(now_ms - self.last_active_ts, 0)
        if self.status_msg is not None:
            content["status_msg"] = self.status_msg
        return content

    def event(self, now_ms: int) -> JsonDict:
        return {"type": "m.presence", "sender": self.user_id, "content": self.content(now_ms)}

    def notable(self) -> tuple[str, str | None, bool]:
        """What clients hear about: a change of any of these is notified."""
        return (self.presence, self.status_msg, self.currently_active)

    def shared(self) -> list[object]:
        """What the other processes of a deployment are sent of the entry."""
        return [
            self.user_id,
            self.presence,
            self.status_msg,
            self.currently_active,
            self.last_active_ts,
            self.last_sync_ts,
        ]


def _legacy(event: JsonDict) -> JsonDict:
    return {"type": event["type"], "content": {**event["content"], "user_id": event["sender"]}}


class PresenceService:
    def __init__(
        self,
        server_name: ServerName,
        index: RoomIndex,
        state: StateService,
        notifier: Notifier,
        *,
        enabled: bool = True,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self._server_name = server_name
        self._index = index
        self._state = state
        self._notifier = notifier
        self.enabled = enabled
        self._now = wall_clock_ms
        self._position = wall_clock_ms()
        self._users: dict[UserID, UserPresence] = {}
        # user -> position of their last notified change; insertion order is position order.
        self._changed: dict[UserID, int] = {}
        # Users not offline: the only ones the sweep looks at.
        self._awake: set[UserID] = set()
        # (position, room, user) of each join, oldest first.
        self._joins: deque[tuple[int, RoomID, UserID]] = deque(maxlen=MAX_JOINS_KEPT)
        # Joins not yet told to the join listeners (the next sweep tells them).
        self._new_joins: deque[tuple[RoomID, UserID]] = deque(maxlen=MAX_JOINS_KEPT)
        self._sweeper = periodic("presence-sweep", SWEEP_SECONDS, self.sweep)
        self.listeners: list[PresenceListener] = []
        # Called by the sweep with the joins since the last one (federation: a server
        # newly sharing a room gets the presence of the local members).
        self.join_listeners: list[JoinListener] = []
        # Told of every change (application services, MSC2409).
        self.change_hooks: list[ChangeHook] = []
        self._replica: Replica | None = None
        # Users whose latest change another process made (theirs to time out).
        self._foreign: set[UserID] = set()
        self._tells_servers = True

    @property
    def current_position(self) -> int:
        return self._position

    def replicate(self, bus: Bus, instance: str, *, tells_servers: bool) -> None:
        """Share presence with the other processes of a deployment, this one being
        ``instance`` on ``bus``; ``tells_servers``: this process tells the listeners and
        the join listeners (one process of the deployment). See the module docstring."""
        self._replica = Replica(bus, CHANNEL, instance, self._apply)
        self._tells_servers = tells_servers

    def tell_servers(self, tells: bool) -> None:
        """Whether this process tells the listeners and the join listeners from now on
        (a deployment: the process sending to the first share of the destinations)."""
        self._tells_servers = tells

    async def start(self) -> None:
        """Publish the starting position and start the sweep."""
        self._notifier.advance(Stream.PRESENCE, self._position, ())
        if self.enabled:
            self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()
        if self._replica is not None:
            await self._replica.stop()

    def now_ms(self) -> int:
        """The wall clock presence ages are measured with."""
        return self._now()

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(user_id) == self._server_name

    def _entry(self, user_id: UserID) -> UserPresence:
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = UserPresence(user_id)
        return entry

    # -- reading -----------------------------------------------------------------------

    async def get_status(self, requester: UserID, user_id: UserID) -> JsonDict:
        """``GET /presence/{userId}/status``: one's own, or that of a user sharing a room
        (Synapse answers 403 otherwise). With presence off everyone is offline."""
        if user_id != requester and not await self._shares_room(requester, user_id):
            raise forbidden("You are not allowed to see their presence")
        entry = self._users.get(user_id) if self.enabled else None
        return (entry or UserPresence(user_id)).content(self._now())

    async def _shares_room(self, a: UserID, b: UserID) -> bool:
        for room_id, (membership, _) in list((await self._index.memberships(a)).items()):
            if membership != "join":
                continue
            room = await self._state.get_room(room_id)
            if room is not None and room.memberships.get(b) == "join":
                return True
        return False

    async def for_sync(self, user_id: UserID, since: int | None) -> list[JsonDict]:
        """The ``m.presence`` events of a sync from presence position ``since`` (None:
        initial): the latest state of each user sharing a room with ``user_id`` whose
        presence changed since, or whom a join since made share one. An initial sync gets
        everyone sharing a room who is not offline."""
        if not self.enabled:
            return []
        joined = {
            room_id
            for room_id, (membership, _) in list((await self._index.memberships(user_id)).items())
            if membership == "join"
        }
        wanted: set[UserID] = set()
        if since is None:
            rooms = [room for r in joined if (room := await self._state.get_room(r)) is not None]
            awake = self._awake
            if len(awake) * len(rooms) < sum(len(room.memberships) for room in rooms):
                # Fewer users awake than members to walk (a newcomer to a big room).
                wanted = {
                    u
                    for u in awake
                    if u == user_id or any(room.memberships.get(u) == "join" for room in rooms)
                }
            else:
                for room in rooms:
                    wanted.update(room.joined_members())
                wanted.add(user_id)
                wanted = {u for u in wanted if u in awake}
        else:
            changed = [other for other, _ in self.changed_since(since)]
            if len(changed) > MANY_CHANGES:
                # An old token: the reader's rooms' members are fewer to walk.
                members: set[UserID] = {user_id}
                for room_id in joined:
                    room = await self._state.get_room(room_id)
                    if room is not None:
                        members.update(room.joined_members())
                wanted.update(u for u in changed if u in members)
            else:
                for other in changed:
                    if other == user_id or await self._shares_any(other, joined):
                        wanted.add(other)
            joins: list[tuple[RoomID, UserID]] = []
            for position, room_id, joiner in reversed(self._joins):
                if position <= since:
                    break
                joins.append((room_id, joiner))
            # Collected first: the log may grow while rooms are read below.
            for room_id, joiner in joins:
                if room_id not in joined:
                    continue
                if joiner == user_id:
                    room = await self._state.get_room(room_id)
                    if room is not None:
                        wanted.update(room.joined_members())
                else:
                    wanted.add(joiner)
        # Users never seen are offline (met through a join; Synapse sends them too).
        return self.events_of(sorted(wanted))

    async def for_initial_sync(self, user_id: UserID) -> list[JsonDict]:
        """``GET /initialSync``'s ``presence``: as an initial /sync's, in the legacy
        format (``user_id`` in the content, no ``sender``)."""
        return [_legacy(event) for event in await self.for_sync(user_id, None)]

    def for_room_initial_sync(self, members: Iterable[UserID]) -> list[JsonDict]:
        """``GET /rooms/{roomId}/initialSync``'s ``presence``: every member's, offline
        included (as Synapse), in the legacy format."""
        if not self.enabled:
            return []
        return [_legacy(event) for event in self.events_of(sorted(members))]

    def changed_since(self, since: int) -> list[tuple[UserID, int]]:
        """(user, position) of each user whose latest change is after presence position
        ``since``, oldest first (nothing with presence off)."""
        changed: list[tuple[UserID, int]] = []
        for user_id in reversed(self._changed) if self.enabled else ():
            position = self._changed[user_id]
            if position <= since:
                break
            changed.append((user_id, position))
        changed.reverse()
        return changed

    def events_of(self, user_ids: Iterable[UserID]) -> list[JsonDict]:
        """The ``m.presence`` events of ``user_ids`` (offline for those never seen)."""
        now = self._now()
        return [(self._users.get(u) or UserPresence(u)).event(now) for u in user_ids]

    async def _shares_any(self, user_id: UserID, rooms: set[RoomID]) -> bool:
        """Whether ``user_id`` is joined to one of ``rooms`` (their rooms, not the
        reader's, are walked: a changed user's rooms are few next to a reader's)."""
        return any(
            membership == "join" and room_id in rooms
            for room_id, (membership, _) in list((await self._index.memberships(user_id)).items())
        )

    # -- writing -----------------------------------------------------------------------

    async def set_status(
        self, requester: UserID, user_id: UserID, presence: str, status_msg: str | None
    ) -> None:
        """``PUT /presence/{userId}/status``: only one's own. Ignored with presence off,
        as Synapse does with ``use_presence: false``."""
        if user_id != requester:
            raise forbidden("Cannot set another user's presence")
        if not self.enabled:
            return
        entry = self._entry(user_id)
        before = entry.notable()
        now = self._now()
        entry.presence = presence
        entry.status_msg = status_msg
        # Setting one's presence counts as syncing: online lasts until the sync timeout.
        entry.last_sync_ts = now
        if presence == ONLINE or not entry.last_active_ts:
            entry.last_active_ts = now
        if presence == ONLINE:
            entry.currently_active = True
        elif presence == OFFLINE:
            entry.currently_active = False
        await self._settle([(entry, before)])

    @contextlib.asynccontextmanager
    async def syncing(self, user_id: UserID, set_presence: str) -> AsyncIterator[None]:
        """Around a ``/sync``: ``set_presence`` ``online`` (the default) makes the user
        online and active now, ``unavailable`` unavailable, ``offline`` leaves presence
        alone (Synapse 1.163's ``user_syncing``: a sync is activity). The user stays
        online while a sync is in progress and for 30 s after the last one ends."""
        if not self.enabled or set_presence == OFFLINE:
            yield
            return
        entry = self._entry(user_id)
        entry.syncing += 1
        try:
            before = entry.notable()
            now = self._now()
            entry.presence = set_presence
            if set_presence == ONLINE or not entry.last_active_ts:
                entry.last_active_ts = now
            if set_presence == ONLINE:
                entry.currently_active = True
            if self._foreign and user_id in self._foreign:
                # Syncing here: this process times the user out from now on.
                entry.last_sync_ts = now
            await self._settle([(entry, before)])
            yield
        finally:
            entry.syncing -= 1
            entry.last_sync_ts = self._now()

    async def set_remote(self, updates: Iterable[JsonDict]) -> None:
        """Apply ``m.presence`` pushes (the caller checked their shape, that each user
        belongs to the origin and shares a room with a local user). With presence off
        they are dropped."""
        if not self.enabled:
            return
        now = self._now()
        changes: list[tuple[UserPresence, tuple[str, str | None, bool]]] = []
        for update in updates:
            entry = self._entry(UserID(update["user_id"]))
            before = entry.notable()
            entry.presence = update["presence"]
            entry.status_msg = update.get("status_msg")
            entry.currently_active = bool(update.get("currently_active", False))
            entry.last_active_ts = now - int(update.get("last_active_ago", 0))
            entry.last_sync_ts = now
            changes.append((entry, before))
        await self._settle(changes)

    def on_persisted(self, batch: Sequence[EventToPersist]) -> None:
        """``EventDispatcher`` listener: log every join at a new presence position (the
        dispatcher already woke the room's members for the event itself)."""
        if not self.enabled:
            return
        joins = [
            (persisted.pdu.room_id, UserID(persisted.pdu.state_key))
            for persisted in batch
            if persisted.stream_ordering >= 0
            and persisted.pdu.type == "m.room.member"
            and persisted.pdu.state_key
            and persisted.pdu.membership == "join"
        ]
        if not joins:
            return
        self._position = max(self._position + 1, self._now())
        for room_id, user_id in joins:
            self._joins.append((self._position, room_id, user_id))
            if self.join_listeners and self._tells_servers:
                self._new_joins.append((room_id, user_id))
        self._notifier.advance(Stream.PRESENCE, self._position, ())

    async def _apply(self, change: dict[str, Any]) -> None:
        """Another process's change of these entries (their state is changed before
        anything is awaited: changes are applied in the order they came)."""
        position = int(change["p"])
        if not self.enabled:
            return
        changes: list[tuple[UserPresence, tuple[str, str | None, bool]]] = []
        for user, presence, status_msg, active, last_active_ts, last_sync_ts in change["e"]:
            if presence not in STATES or not (status_msg is None or isinstance(status_msg, str)):
                raise ValueError(f"not a presence entry: {presence!r}, {status_msg!r}")
            entry = self._entry(UserID(str(user)))
            before = entry.notable()
            entry.presence = presence
            entry.status_msg = status_msg
            entry.currently_active = bool(active)
            entry.last_active_ts = int(last_active_ts)
            entry.last_sync_ts = int(last_sync_ts)
            self._foreign.add(entry.user_id)
            changes.append((entry, before))
        await self._settle(changes, floor=position)

    async def _settle(
        self,
        changes: Sequence[tuple[UserPresence, tuple[str, str | None, bool]]],
        *,
        floor: int | None = None,
    ) -> None:
        """Give the entries whose notable state changed the next position (at least
        ``floor``: another process's change, applied; by default the wall clock), wake
        everyone sharing a room with them, and tell the listeners of the local ones
        (``tells_servers``).
        A change of this process's own goes to the others, with the entries it claims."""
        changed = [entry for entry, before in changes if entry.notable() != before]
        for entry in changed:
            if entry.presence == OFFLINE:
                self._awake.discard(entry.user_id)
            else:
                self._awake.add(entry.user_id)
        claimed: list[UserPresence] = []
        if floor is None and self._foreign:
            claimed = [entry for entry, _ in changes if entry.user_id in self._foreign]
            self._foreign.difference_update(entry.user_id for entry in claimed)
        if not changed:
            if claimed and self._replica is not None:
                self._replica.publish(
                    {"p": self._position, "e": [entry.shared() for entry in claimed]}
                )
            return
        self._position = max(self._position + 1, self._now() if floor is None else floor)
        if floor is None and self._replica is not None:
            sent = {entry.user_id: entry for entry in (*changed, *claimed)}
            self._replica.publish(
                {"p": self._position, "e": [entry.shared() for entry in sent.values()]}
            )
        position = self._position
        # All before awaiting: ``_changed`` stays in position order with changes settled
        # meanwhile.
        for entry in changed:
            self._changed.pop(entry.user_id, None)
            self._changed[entry.user_id] = position
        woken: set[UserID] = set()
        for entry in changed:
            woken.update(await self._local_users_sharing_rooms(entry.user_id))
        self._notifier.advance(Stream.PRESENCE, position, woken)
        for hook in self.change_hooks:
            hook([entry.user_id for entry in changed])
        if not self._tells_servers:
            return  # the federation sender process tells them, having applied it
        local = [entry for entry in changed if self._is_local(entry.user_id)]
        for listener in self.listeners if local else ():
            try:
                await listener(local)
            except Exception:
                logger.exception("presence listener failed")

    async def _local_users_sharing_rooms(self, user_id: UserID) -> set[UserID]:
        users: set[UserID] = {user_id} if self._is_local(user_id) else set()
        for room_id, (membership, _) in list((await self._index.memberships(user_id)).items()):
            room = await self._state.get_room(room_id) if membership == "join" else None
            if room is not None:
                users.update(
                    u for u, m in room.memberships.items() if m == "join" and self._is_local(u)
                )
        return users

    # -- timeouts ----------------------------------------------------------------------

    def states_of(self, user_ids: Iterable[UserID]) -> list[UserPresence]:
        """The known states of ``user_ids`` who are not offline."""
        return [self._users[u] for u in user_ids if u in self._awake]

    async def sweep(self) -> None:
        """Apply the timeouts to every user who is not offline; tell the join listeners
        of the joins since the last sweep."""
        joins = list(self._new_joins)
        self._new_joins.clear()
        for join_listener in self.join_listeners if joins else ():
            try:
                await join_listener(joins)
            except Exception:
                logger.exception("presence join listener failed")
        now = self._now()
        changes: list[tuple[UserPresence, tuple[str, str | None, bool]]] = []
        for user_id in list(self._awake):
            if self._foreign and user_id in self._foreign:
                continue  # the process that made their latest change times them out
            entry = self._users[user_id]
            before = entry.notable()
            if self._is_local(user_id):
                if entry.syncing == 0 and now - entry.last_sync_ts > SYNC_ONLINE_TIMEOUT_MS:
                    entry.presence = OFFLINE
                elif entry.presence == ONLINE and now - entry.last_active_ts > IDLE_TIMER_MS:
                    entry.presence = UNAVAILABLE
                if now - entry.last_active_ts > LAST_ACTIVE_GRANULARITY_MS:
                    entry.currently_active = False
            elif now - entry.last_sync_ts > FEDERATION_TIMEOUT_MS:
                entry.presence = OFFLINE
                entry.currently_active = False
            if entry.notable() != before:
                changes.append((entry, before))
        await self._settle(changes)
