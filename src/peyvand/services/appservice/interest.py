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

Events are decided with the members *at the event* (``wanted_at``): those joined in the
event's state group (the state after it; a message shares its room's group), not the
room's current ones, so a routing task running behind, or a catch-up hours later,
decides as it would have when the event was sent (as Synapse decides interest while the
events stream past). Each room keeps the members of its last few groups: a message
costs a look-up; a new group (made by a state event, local, received over federation or
decided in a catch-up) is derived from its nearest kept ancestor's with the deltas of
the groups between (the member events of the changed users only, so O(changed state));
a group with no kept ancestor near enough is read whole once
(``StateService.state_ids_at_group``).

A registry reload forgets everything (``reset``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from peyvand.events.pdu import Pdu, StateKey
from peyvand.lru import LRU
from peyvand.services.appservice.registration import ApplicationService
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.models import NewStateGroup
from peyvand.types import EventID, RoomAlias, RoomID, ServerName, UserID, server_name_of

__all__ = ["LOCAL_ALIASES_TTL", "AppServiceInterest", "EventFacts"]

_CANONICAL_ALIAS: Final[StateKey] = ("m.room.canonical_alias", "")
# Seconds a room's local aliases are trusted before they are read again.
LOCAL_ALIASES_TTL: Final = 60.0
# Rooms whose answers are kept.
_ROOMS_KEPT: Final = 10_000
# State groups whose members are kept per room (live routing and catch-ups side by side).
_GROUPS_KEPT: Final = 4
# Ancestors of a state group looked through for one whose members are kept (the groups
# of events decided by namespace alone are not kept).
_ANCESTORS_WALKED: Final = 16

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


class EventFacts(Protocol):
    """What deciding interest needs of an event (a ``Pdu``, or a stored event's row)."""

    @property
    def room_id(self) -> RoomID: ...
    @property
    def sender(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def state_key(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _GroupMembers:
    """The joined local users of a state group in each appservice's user namespace, by
    appservice ID (those it was computed for), with their member events."""

    events: dict[UserID, EventID]
    members: dict[str, frozenset[UserID]]


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
        self._groups: LRU[RoomID, dict[int, _GroupMembers]] = LRU(_ROOMS_KEPT)

    def reset(self) -> None:
        """Forget every room's answers (the appservices changed)."""
        self._rooms = LRU(_ROOMS_KEPT)
        self._groups = LRU(_ROOMS_KEPT)

    async def wanted_at(
        self,
        appservices: Sequence[ApplicationService],
        event: EventFacts,
        state_group: int,
        new_group: NewStateGroup | None = None,
    ) -> list[ApplicationService]:
        """Those of ``appservices`` interested in ``event``, an event of this server's
        timeline whose state (after it) is ``state_group`` (made with it as
        ``new_group``, when known): the room's members are those of that group."""
        if not appservices:
            return []
        room_id = event.room_id
        wanted: list[ApplicationService] = []
        rest: list[ApplicationService] = []
        for appservice in appservices:
            by_namespace = self._by_namespace(
                appservice, room_id, event.sender, event.type, event.state_key
            )
            if by_namespace or (appservice.aliases and await self._by_alias(appservice, room_id)):
                wanted.append(appservice)
            else:
                rest.append(appservice)
        if rest or new_group is not None:
            # A new group's members are kept even when every appservice wants the event
            # itself: the room's next events are in it.
            members = await self._members_at(room_id, state_group, new_group, appservices)
            wanted.extend(a for a in rest if members.members[a.id])
        return wanted

    async def _members_at(
        self,
        room_id: RoomID,
        group: int,
        new_group: NewStateGroup | None,
        appservices: Sequence[ApplicationService],
    ) -> _GroupMembers:
        kept = self._groups.get(room_id)
        if kept is None:
            kept = {}
            self._groups.put(room_id, kept)
        found = kept.get(group)
        if found is not None and all(a.id in found.members for a in appservices):
            return found
        ancestor = await self._kept_ancestor(kept, group, new_group, appservices)
        if ancestor is not None:
            found = await self._derive(*ancestor, appservices)
        else:
            state = await self._state.state_ids_at_group(group)
            found = await self._derive(None, state, appservices)
        kept[group] = found
        while len(kept) > _GROUPS_KEPT:
            del kept[next(iter(kept))]
        return found

    async def _kept_ancestor(
        self,
        kept: Mapping[int, _GroupMembers],
        group: int,
        new_group: NewStateGroup | None,
        appservices: Sequence[ApplicationService],
    ) -> tuple[_GroupMembers, dict[StateKey, EventID]] | None:
        """The members of ``group``'s nearest kept ancestor (its parent, or one of the few
        groups before), and the keys changed since with their events in ``group``: the
        deltas of the groups between, each holding every key changed since its base
        group, so since its parent too; None when no ancestor near enough is kept."""
        path: list[int] = []
        current = group
        for _ in range(_ANCESTORS_WALKED):
            if new_group is not None and new_group.row.state_group == current:
                prev = new_group.row.prev_group
            else:
                prev = (await self._state.state_group_row(current)).prev_group
            path.append(current)
            parent = None if prev is None else kept.get(prev)
            if parent is not None and all(a.id in parent.members for a in appservices):
                deltas = {new_group.row.state_group: new_group.delta} if new_group else {}
                if missing := [g for g in path if g not in deltas]:
                    deltas.update(await self._state.state_group_deltas(missing))
                changes: dict[StateKey, EventID] = {}
                for step in reversed(path):
                    changes.update(deltas[step])
                return parent, changes
            if prev is None:
                return None
            current = prev
        return None

    async def _derive(
        self,
        parent: _GroupMembers | None,
        state: Mapping[StateKey, EventID],
        appservices: Sequence[ApplicationService],
    ) -> _GroupMembers:
        """The members of a group: ``parent``'s changed by ``state`` (the group's delta),
        or, without a parent, those of ``state`` (the group's whole state)."""
        changed = {
            UserID(key[1]): event_id
            for key, event_id in state.items()
            if key[0] == "m.room.member"
            and (parent is None or parent.events.get(UserID(key[1])) != event_id)
            and server_name_of(key[1]) == self._server_name
            and any(a.is_user_in_namespace(key[1]) for a in appservices)
        }
        pdus = await self._state.get_pdus(changed.values())
        joined = {u for u, e in changed.items() if e in pdus and pdus[e].membership == "join"}
        events = dict(parent.events) if parent is not None else {}
        events.update(changed)
        left = changed.keys() - joined
        members = {}
        for appservice in appservices:
            previous = parent.members[appservice.id] if parent is not None else frozenset()
            mine = {u for u in joined if appservice.is_user_in_namespace(u)}
            members[appservice.id] = (previous - left) | mine
        return _GroupMembers(events, members)

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
        """Whether ``appservice`` wants an event of ``sender`` in ``room_id``, with the
        room's current members (an invite from another server to a room this server is
        not in, which has no state here)."""
        if self._by_namespace(appservice, room_id, sender, event_type, state_key):
            return True
        return await self.is_interested_in_room(appservice, room_id)

    async def is_interested_in_room(self, appservice: ApplicationService, room_id: RoomID) -> bool:
        if appservice.is_room_in_namespace(room_id):
            return True
        if appservice.aliases and await self._by_alias(appservice, room_id):
            return True
        return bool(self._members_of(await self._room(room_id), appservice))

    @staticmethod
    def _by_namespace(
        appservice: ApplicationService,
        room_id: RoomID,
        sender: str,
        event_type: str,
        state_key: str | None,
    ) -> bool:
        """The sender, the user a membership event is about, or the room's ID is in
        the appservice's namespaces."""
        return (
            appservice.is_user_in_namespace(sender)
            or (
                event_type == "m.room.member"
                and state_key is not None
                and appservice.is_user_in_namespace(state_key)
            )
            or appservice.is_room_in_namespace(room_id)
        )

    async def _by_alias(self, appservice: ApplicationService, room_id: RoomID) -> bool:
        room = await self._room(room_id)
        return any(
            appservice.is_alias_in_namespace(alias) for alias in await self._aliases(room_id, room)
        )

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
