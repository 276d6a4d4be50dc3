"""Which events an application service is interested in (Application Service API,
"Pushing events"; as Synapse's ``ApplicationService.is_interested_in_event``).

An appservice wants an event when its sender, or the user a membership event is about,
is in its user namespace (or is its bot); or when the room is: its ID in the rooms
namespace, one of its aliases (local aliases and the canonical alias's) in the aliases
namespace, or one of its joined local members in the user namespace.

The room's answer is kept per room, for every appservice, so an event in a room costs no
query once the room is known:

- the joined local members in each appservice's namespace follow the room snapshot:
  when its ``membership_seq`` moved, only the users whose membership changed since are
  looked at again (``RoomSnapshot.changed_since``); a snapshot reloaded is scanned again;
- the canonical alias is kept with the ID of the ``m.room.canonical_alias`` event it
  came from, read again when the room's current one is another event;
- the local aliases (the directory's table, which no event announces) are read again
  once the directory tells that one of the room's aliases was created or deleted
  (``on_aliases_changed``), and after ``LOCAL_ALIASES_TTL`` seconds as a safety net.

A registry reload forgets everything (``reset``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.lru import LRU
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import RoomAlias, RoomID, ServerName, UserID, server_name_of

__all__ = ["LOCAL_ALIASES_TTL", "AppServiceInterest"]

_CANONICAL_ALIAS: Final[StateKey] = ("m.room.canonical_alias", "")
# Seconds a room's local aliases are trusted before they are read again.
LOCAL_ALIASES_TTL: Final = 60.0
# Rooms whose answers are kept.
_ROOMS_KEPT: Final = 10_000

LocalAliases = Callable[[RoomID], Awaitable[Sequence[RoomAlias]]]


@dataclass(slots=True)
class _Room:
    """What a room's interest is decided from, kept between events."""

    # The snapshot the member sets follow, and its membership_seq when they were updated.
    snapshot: RoomSnapshot | None = None
    seq: int = 0
    # Joined local users in each appservice's user namespace, by appservice ID (with the
    # registration they were matched against).
    members: dict[str, tuple[ApplicationService, set[UserID]]] = field(default_factory=dict)
    local_aliases: tuple[str, ...] = ()
    local_aliases_read_at: float | None = None
    canonical_event_id: str | None = None
    canonical_aliases: tuple[str, ...] = ()


class AppServiceInterest:
    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        local_aliases: LocalAliases,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._server_name = server_name
        self._state = state
        self._local_aliases = local_aliases
        self._clock = clock
        self._rooms: LRU[RoomID, _Room] = LRU(_ROOMS_KEPT)

    def reset(self) -> None:
        """Forget every room's answers (the appservices changed)."""
        self._rooms = LRU(_ROOMS_KEPT)

    def on_aliases_changed(self, room_id: RoomID) -> None:
        """``DirectoryService.alias_hooks``: one of the room's local aliases was created
        or deleted; it counts from the next event on."""
        room = self._rooms.get(room_id)
        if room is not None:
            room.local_aliases_read_at = None

    async def is_interested(
        self,
        appservice: ApplicationService,
        room_id: RoomID,
        sender: str,
        event_type: str,
        state_key: str | None,
    ) -> bool:
        """Whether ``appservice`` wants an event of ``sender`` in ``room_id``."""
        if appservice.is_user_in_namespace(sender):
            return True
        if (
            event_type == "m.room.member"
            and state_key is not None
            and appservice.is_user_in_namespace(state_key)
        ):
            return True
        return await self.is_interested_in_room(appservice, room_id)

    async def is_interested_in_room(self, appservice: ApplicationService, room_id: RoomID) -> bool:
        if appservice.is_room_in_namespace(room_id):
            return True
        room = await self._room(room_id)
        if appservice.aliases and any(
            appservice.is_alias_in_namespace(alias) for alias in await self._aliases(room_id, room)
        ):
            return True
        return bool(self._members_of(room, appservice))

    def _members_of(self, room: _Room, appservice: ApplicationService) -> set[UserID]:
        """The room's joined local users in ``appservice``'s user namespace."""
        found = room.members.get(appservice.id)
        if found is None or found[0] is not appservice:
            members: set[UserID] = set()
            if room.snapshot is not None:
                local = room.snapshot.joined_on_view(self._server_name)
                members.update(u for u in local if appservice.is_user_in_namespace(u))
            found = room.members[appservice.id] = (appservice, members)
        return found[1]

    async def _room(self, room_id: RoomID) -> _Room:
        """The room's entry, its member sets brought to the room's current snapshot."""
        room = self._rooms.get(room_id)
        if room is None:
            room = _Room()
            self._rooms.put(room_id, room)
        snapshot = self._state.cached_room(room_id) or await self._state.get_room(room_id)
        self._follow_members(room, snapshot)
        return room

    async def _aliases(self, room_id: RoomID, room: _Room) -> tuple[str, ...]:
        """The room's local aliases and those of its canonical alias event."""
        read_at = room.local_aliases_read_at
        if read_at is None or self._clock() - read_at > LOCAL_ALIASES_TTL:
            room.local_aliases = tuple(await self._local_aliases(room_id))
            room.local_aliases_read_at = self._clock()
        canonical_id = room.snapshot.state.get(_CANONICAL_ALIAS) if room.snapshot else None
        if canonical_id != room.canonical_event_id:
            event = None if canonical_id is None else await self._state.get_event(canonical_id)
            room.canonical_event_id = canonical_id
            room.canonical_aliases = () if event is None else _canonical_aliases(event.pdu)
        return (*room.local_aliases, *room.canonical_aliases)

    def _follow_members(self, room: _Room, snapshot: RoomSnapshot | None) -> None:
        """Bring the member sets to ``snapshot``: the changed users only, when it is the
        snapshot they follow and its journal reaches back far enough."""
        if snapshot is None or snapshot is not room.snapshot:
            room.snapshot, room.seq, room.members = snapshot, 0, {}
            if snapshot is not None:
                room.seq = snapshot.membership_seq
            return
        if snapshot.membership_seq == room.seq:
            return
        changed = snapshot.changed_since(room.seq)
        room.seq = snapshot.membership_seq
        if changed is None:
            room.members = {}
            return
        local = [u for u in set(changed) if server_name_of(u) == self._server_name]
        for appservice, members in room.members.values():
            for user_id in local:
                if snapshot.is_joined(user_id) and appservice.is_user_in_namespace(user_id):
                    members.add(user_id)
                else:
                    members.discard(user_id)


def _canonical_aliases(pdu: Pdu) -> tuple[str, ...]:
    """``alias`` and ``alt_aliases`` of an ``m.room.canonical_alias`` event (strings only)."""
    content = pdu.content
    found = [content.get("alias")]
    alt = content.get("alt_aliases")
    if isinstance(alt, list):
        found.extend(alt)
    return tuple(a for a in found if isinstance(a, str))
