"""Typing notifications (Client-Server API, "Typing Notifications"), kept in memory only.

Each room has a set of typing users with their expiry times. Every change of a room's set
takes the next position of the typing stream; /sync asks for the rooms whose set changed
after its token and gets each such room's whole current set as one ``m.typing`` event
(clients REPLACE their list with it). Expiry is one supervised background task that
pops due deadlines off a heap, never a task per user.

Positions start at the wall-clock time in milliseconds, so typing positions in tokens
keep increasing across restarts without storing anything (a change takes position
``max(previous + 1, now_ms)``).

Federation: ``set_remote_typing`` applies a typing notification received from another
server (its user expires like a local one); ``listeners`` hear every local start (also a
repeated one, which moves the deadline) and stop, and every expiry, so they can be sent
to the other servers in the room; ``change_hooks`` hear every change of a room's set,
local or remote, with its position (application services).

Across the processes of a deployment (issue 21, ``replicate``): every process holds every
room's typing set. A process that changes a set (a local start, repeated start or stop, a
remote server's notification, an expiry of its own) sends the change with its data (room,
user, the time left, or a stop) and its position over the bus; the others apply it
without sending it again, wake their own syncs, tell their ``change_hooks`` but not the
``listeners`` (the change is told to other servers once, where it was made). A change
applied takes position ``max(previous + 1, the sender's)``: above every token this
process gave out, so a reader's token never goes backwards nor skips a change, and the
processes' positions keep close to each other (a token carried to another process is
at worst answered from a little before or after it).

Expiry: the process that made a user typing expires them (and sends the stop). The
others keep the user's deadline plus ``REPLICA_GRACE_SECONDS``, and past it drop the
user without telling anyone: the stop was lost or its process is gone.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from peyvand.background import BackgroundTask, periodic
from peyvand.errors import forbidden
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.replica import Replica
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.bus import Bus
from peyvand.types import JsonDict, RoomID, UserID

# The timeout when a client gives none, and the cap on what a client may ask for: Synapse's
# values (the spec only recommends clients re-send every 20-30 seconds).
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000
# How often the expiry task looks for due deadlines.
EXPIRY_TICK_SECONDS = 1.0
# How long past its deadline a user made typing by another process of the deployment
# stays typing here, waiting for that process's stop.
REPLICA_GRACE_SECONDS = 5.0
# The bus channel of typing changes.
CHANNEL = "typing"

# Called with (room, user, typing) after a local user starts or stops typing, and after
# any user's typing expires.
TypingListener = Callable[[RoomID, UserID, bool], Awaitable[None]]
# Called with the rooms whose typing set changed (local or remote) and their position.
TypingChangeHook = Callable[[Sequence[RoomID], int], None]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class TypingService:
    def __init__(
        self,
        notifier: Notifier,
        state: StateService,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        """``clock`` (seconds, monotonic) times expiry; ``wall_clock_ms`` seeds positions."""
        self._notifier = notifier
        self._state = state
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        self._position = wall_clock_ms()
        # room -> typing user -> expiry deadline (``clock`` seconds).
        self._typing: dict[RoomID, dict[UserID, float]] = {}
        # room -> typing position of the room's last change.
        self._changed_at: dict[RoomID, int] = {}
        # (deadline, room, user); stale when the user's deadline has since moved.
        self._deadlines: list[tuple[float, RoomID, UserID]] = []
        self._expiry: BackgroundTask | None = None
        self._replica: Replica | None = None
        # (room, user) typing by another process's change (expired by it).
        self._foreign: set[tuple[RoomID, UserID]] = set()
        self.listeners: list[TypingListener] = []
        self.change_hooks: list[TypingChangeHook] = []

    @property
    def current_position(self) -> int:
        return self._position

    def replicate(self, bus: Bus, instance: str) -> None:
        """Share the typing sets with the other processes of a deployment, this one
        being ``instance`` on ``bus`` (see the module docstring)."""
        self._replica = Replica(bus, CHANNEL, instance, self._apply)

    async def start(self) -> None:
        """Publish the starting position and start the expiry task."""
        self._notifier.advance(Stream.TYPING, self._position, ())
        self._expiry = periodic("typing-expiry", EXPIRY_TICK_SECONDS, self.expire_due)
        self._expiry.start()

    async def stop(self) -> None:
        if self._expiry is not None:
            await self._expiry.stop()
            self._expiry = None
        if self._replica is not None:
            await self._replica.stop()

    async def set_typing(
        self,
        requester: UserID,
        user_id: UserID,
        room_id: RoomID,
        typing: bool,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        """``PUT /rooms/{roomId}/typing/{userId}``: start (for ``timeout_ms``) or stop typing.

        Only for oneself, and only in a room one has joined. A repeated start only moves the
        deadline: the typing set is unchanged, so nobody is woken.
        """
        if user_id != requester:
            raise forbidden("Cannot set another user's typing state")
        room = await self._state.get_room(room_id)
        if room is None or room.memberships.get(user_id) != "join":
            raise forbidden(f"User {user_id} is not joined to room {room_id}")
        if await self._set(room_id, user_id, typing, timeout_ms) or typing:
            for listener in self.listeners:
                await listener(room_id, user_id, typing)

    async def set_remote_typing(
        self, user_id: UserID, room_id: RoomID, typing: bool, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> None:
        """A typing notification received over federation (the caller checked that the
        user is joined to the room and belongs to the sending server)."""
        await self._set(room_id, user_id, typing, timeout_ms)

    async def _set(self, room_id: RoomID, user_id: UserID, typing: bool, timeout_ms: int) -> bool:
        """Start (for ``timeout_ms``) or stop typing; whether the user was typing."""
        was_typing = user_id in self._typing.get(room_id, ())
        if typing:
            timeout_ms = min(max(timeout_ms, 0), MAX_TIMEOUT_MS)
            deadline = self._clock() + timeout_ms / 1000
            self._typing.setdefault(room_id, {})[user_id] = deadline
            heapq.heappush(self._deadlines, (deadline, room_id, user_id))
            sent = [[room_id, user_id, timeout_ms]] if self._replica is not None else None
            if self._foreign:
                self._foreign.discard((room_id, user_id))
            if not was_typing:
                await self._changed([room_id], sent=sent)
            elif self._replica is not None:
                # The deadline moved: the others' must too (no new position).
                self._replica.publish({"p": self._position, "c": sent})
        elif was_typing:
            self._remove(room_id, user_id)
            sent = [[room_id, user_id, None]] if self._replica is not None else None
            await self._changed([room_id], sent=sent)
        return was_typing

    async def _apply(self, change: dict[str, Any]) -> None:
        """Another process's change (its state is changed before anything is awaited:
        changes are applied in the order they came)."""
        position = int(change["p"])
        now = self._clock()
        rooms: list[RoomID] = []
        for room, user, time_left_ms in change["c"]:
            room_id, user_id = RoomID(str(room)), UserID(str(user))
            was_typing = user_id in self._typing.get(room_id, ())
            if time_left_ms is None:
                if was_typing:
                    self._remove(room_id, user_id)
                    rooms.append(room_id)
                continue
            left_s = min(max(float(time_left_ms), 0.0), MAX_TIMEOUT_MS) / 1000
            deadline = now + left_s + REPLICA_GRACE_SECONDS
            self._typing.setdefault(room_id, {})[user_id] = deadline
            heapq.heappush(self._deadlines, (deadline, room_id, user_id))
            self._foreign.add((room_id, user_id))
            if not was_typing:
                rooms.append(room_id)
        if rooms:
            await self._changed(dict.fromkeys(rooms), floor=position)

    def typing_for_rooms(self, room_ids: Iterable[RoomID], since: int) -> dict[RoomID, JsonDict]:
        """The ``m.typing`` ephemeral event of each room in ``room_ids`` whose typing set
        changed after position ``since`` (all rooms with a change since start-up if
        ``since`` is 0 or from before it)."""
        result: dict[RoomID, JsonDict] = {}
        for room_id in room_ids:
            changed_at = self._changed_at.get(room_id)
            if changed_at is not None and changed_at > since:
                users = sorted(self._typing.get(room_id, ()))
                result[room_id] = {"type": "m.typing", "content": {"user_ids": users}}
        return result

    async def expire_due(self) -> None:
        """Drop every typing user whose deadline has passed; wake the rooms that changed."""
        now = self._clock()
        expired: list[tuple[RoomID, UserID]] = []
        # Typing by another process's change, which did not stop them in time.
        dropped: list[RoomID] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, room_id, user_id = heapq.heappop(self._deadlines)
            if self._typing.get(room_id, {}).get(user_id) == deadline:
                if self._foreign and (room_id, user_id) in self._foreign:
                    dropped.append(room_id)
                else:
                    expired.append((room_id, user_id))
                self._remove(room_id, user_id)
        if expired or dropped:
            sent: list[list[object]] | None = None
            if self._replica is not None and expired:
                sent = [[room_id, user_id, None] for room_id, user_id in expired]
            await self._changed({room_id for room_id, _ in expired}.union(dropped), sent=sent)
            for room_id, user_id in expired:
                for listener in self.listeners:
                    await listener(room_id, user_id, False)

    def _remove(self, room_id: RoomID, user_id: UserID) -> None:
        users = self._typing[room_id]
        del users[user_id]
        if not users:
            del self._typing[room_id]
        if self._foreign:
            self._foreign.discard((room_id, user_id))

    async def _changed(
        self,
        room_ids: Iterable[RoomID],
        *,
        floor: int | None = None,
        sent: list[list[object]] | None = None,
    ) -> None:
        """Give the rooms' changes the next position (at least ``floor``: another
        process's position; by default the wall clock), send ``sent`` to the other
        processes at it, and wake the rooms' joined members."""
        self._position = max(self._position + 1, self._wall_clock_ms() if floor is None else floor)
        changed = list(room_ids)
        for room_id in changed:
            self._changed_at[room_id] = self._position
        for hook in self.change_hooks:
            hook(changed, self._position)
        if sent and self._replica is not None:
            self._replica.publish({"p": self._position, "c": sent})
        # Each room's joined users as its snapshot keeps them, read in place (no copy).
        members: list[AbstractSet[UserID]] = []
        for room_id in changed:
            room = await self._state.get_room(room_id)
            if room is not None:
                members.append(room.joined_view())
        self._notifier.advance(Stream.TYPING, self._position, (), members)
