"""The streams other than the events' across a deployment's processes (issue 21,
"Streams across processes"): receipts, account data, to-device, device lists... are
written by whichever process serves the request, and every process's waiting /syncs must
wake when they move.

Each process publishes its own advances (a ``Notifier`` observer) on the bus, with the
users to wake when they are few (``MAX_USERS``), else the room whose local members they
are when the stream says (``in_room``: a receipt; the receiver wakes that room's joined
members as its own snapshot keeps them, ``room_members``), else nobody named: every
waiting sync of the stream's readers wakes and finds out. It applies the others': first
the stream's ``refresh`` hooks (a cache of the moved users' data dropped), then its
notifier, as if the write had been its own. What the syncs then read comes from the database; the
position is the writer's (each stream's positions are allocated by the one process
that writes it: requests that write are routed to the event writers).

The bus delivers at most once, so a process also finds out what it missed, and then runs
the stream's refresh hooks for any user (``None``) and wakes every waiting sync:

- a message whose position is not the next one the process knows of (positions of a
  stream are allocated one by one by its writer): what came between was missed, so the
  hooks get ``None`` instead of the named users (a to-device message stored in between
  for a user this process was not told of would otherwise be taken for absent, and
  acknowledged, deleted, unread);
- the streams' stored positions (``track``), read when the relay starts, after the bus
  listens again, and every ``REREAD_SECONDS``: a stored position beyond what the
  process knows is taken as missed once a second read still finds it beyond (neither a
  write of this process between its commit and its own advance, nor a stream whose
  service has not started yet, is taken for another's); after a reconnect, at once.

The relay subscribes when it is built, so the bus LISTENs on its channel from the moment
it is started: in ``app.py`` the bus and the relay start before the streams' services
read their positions, so whatever is written after those reads reaches the relay.

Typing and presence live in memory only and are carried with their data by their own
services (``excluded`` here).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from peyvand.background import periodic
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.storage.bus import Bus

logger = logging.getLogger(__name__)

CHANNEL = "streams"
# Users named in one message at most (a user ID is up to 255 bytes; the bus takes 7,900).
MAX_USERS = 24
# How often the tracked streams' stored positions are read (one cheap query each).
REREAD_SECONDS = 1.0

Refresh = Callable[[int, Collection[str] | None], None]
"""Another process moved a stream to a position for these users (None: any user): drop
or mark what this process keeps of their data in it."""
RoomMembers = Callable[[str], AbstractSet[str] | None]
"""A room's joined members as this process keeps them, None when it keeps no copy."""
StoredPosition = Callable[[], Awaitable[int]]
"""The highest position of a stream stored in the database."""


class StreamRelay:
    def __init__(
        self, bus: Bus, notifier: Notifier, instance: str, *, reread_seconds: float = REREAD_SECONDS
    ) -> None:
        self._bus = bus
        self._notifier = notifier
        self._instance = instance
        self._refresh: dict[Stream, list[Refresh]] = {}
        self._excluded: set[Stream] = {Stream.EVENTS}
        self._applying = False
        self._stored: dict[Stream, StoredPosition] = {}
        # The room of a stream's coming advance (``in_room``), and how rooms are read.
        self._next_room: dict[Stream, tuple[int, str]] = {}
        self._room_members: dict[Stream, RoomMembers] = {}
        # Stored positions beyond what this process knew at the last reading.
        self._suspect: dict[Stream, int] = {}
        self._rereading = periodic("stream relay re-read", reread_seconds, self.reread)
        bus.subscribe(CHANNEL, self._on_message)
        bus.on_reconnect(self._reconnected)

    def exclude(self, stream: Stream) -> None:
        """``stream`` is carried by its own service, not by this relay."""
        self._excluded.add(stream)

    def on_refresh(self, stream: Stream, refresh: Refresh) -> None:
        self._refresh.setdefault(stream, []).append(refresh)

    def in_room(self, stream: Stream, position: int, room_id: str) -> None:
        """This process's coming advance of ``stream`` to ``position`` is for the joined
        members of ``room_id``: named by the room when they are too many to list."""
        self._next_room[stream] = (position, room_id)

    def room_members(self, stream: Stream, members: RoomMembers) -> None:
        """Where ``stream``'s messages that name a room find its members here."""
        self._room_members[stream] = members

    def track(self, stream: Stream, stored: StoredPosition) -> None:
        """Read ``stream``'s stored position to find what this process missed."""
        self._stored[stream] = stored

    async def start(self) -> None:
        self._notifier.observers.append(self._advanced)
        await self._reread(at_once=False)
        self._rereading.start()

    async def stop(self) -> None:
        await self._rereading.stop()
        if self._advanced in self._notifier.observers:
            self._notifier.observers.remove(self._advanced)

    async def reread(self) -> None:
        """Compare the tracked streams' stored positions with what this process knows."""
        await self._reread(at_once=False)

    async def catch_up(self) -> None:
        """Take every tracked stream's stored position beyond what this process knows
        for missed, at once (before this process writes those streams: another that
        stopped may have stored positions it never announced)."""
        await self._reread(at_once=True)

    async def _reconnected(self) -> None:
        await self._reread(at_once=True)

    async def _reread(self, *, at_once: bool) -> None:
        for stream, stored in tuple(self._stored.items()):
            position = await stored()
            known = self._notifier.current_token.get(stream)
            suspect = self._suspect.pop(stream, 0)
            if suspect > known:
                position = max(position, suspect)
            elif position <= known:
                continue
            elif not at_once:
                self._suspect[stream] = position
                continue
            logger.info("stream %s: %d stored, %d known here: missed", stream, position, known)
            self._apply(stream, position, None)

    def _advanced(
        self,
        stream: Stream,
        position: int,
        users: Collection[str],
        audiences: Sequence[AbstractSet[str]],
    ) -> None:
        """A notifier observer: this process moved ``stream`` for ``users`` and the
        ``audiences`` (a room's local members: receipts)."""
        if self._applying or stream in self._excluded:
            return
        room = self._next_room.pop(stream, None)
        if len(users) + sum(len(audience) for audience in audiences) <= MAX_USERS:
            named = sorted(set(users).union(*audiences))
            self._bus.publish(CHANNEL, {"s": stream.value, "p": position, "u": named})
        elif room is not None and room[0] == position and not users:
            self._bus.publish(CHANNEL, {"s": stream.value, "p": position, "u": None, "r": room[1]})
        else:
            self._bus.publish(CHANNEL, {"s": stream.value, "p": position, "u": None})

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        if sender == self._instance:
            return  # the bus hands a process its own messages too
        try:
            stream = Stream(payload["s"])
            position = int(payload["p"])
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed stream message from %s", sender)
            return
        if stream in self._excluded:
            return
        users = payload.get("u")
        named = [str(user) for user in users] if isinstance(users, list) else None
        members = None
        if position > self._notifier.current_token.get(stream) + 1:
            named = None  # positions in between were missed: whose, nobody knows
        elif named is None and isinstance(room := payload.get("r"), str):
            read = self._room_members.get(stream)
            members = read(room) if read is not None else None
        self._apply(stream, position, named, members)

    def _apply(
        self,
        stream: Stream,
        position: int,
        named: list[str] | None,
        members: AbstractSet[str] | None = None,
    ) -> None:
        for refresh in self._refresh.get(stream, ()):
            refresh(position, named)
        self._applying = True
        try:
            if named is not None:
                self._notifier.advance(stream, position, named)
            elif members is not None:
                self._notifier.advance(stream, position, (), [members])
            else:
                self._notifier.advance_all(stream, position)
        finally:
            self._applying = False
