"""Which rooms a sliding sync request is about, and in which order (MSC4186, "Lists"
and "Room subscriptions"; Synapse's ``handlers/sliding_sync/room_lists.py``).

A user's rooms come from the in-memory room index; sorting needs only their bump
stamps (held in memory) and membership positions, so an unfiltered list over 1,000
rooms reads nothing per room. Filters read what they need in batches: the user's
``m.direct`` and tags once, the rooms' create and encryption state from their cached
snapshots or else in one query, and the create and ``m.space.child`` events in one call
each (only of the spaces the user is joined to, each read once per request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from peyvand.events.pdu import StateKey
from peyvand.lru import LRU
from peyvand.services.sync.sliding.request import ListConfig, ListFilters, RoomParams
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID, JsonDict, RoomID, UserID

# Memberships shown in lists (a left room only when left since the connection's token).
_LISTED = frozenset({"join", "invite", "knock", "ban"})
# Memberships a forgotten room may have (``/forget`` needs the user out of the room).
_FORGETTABLE = frozenset({"leave", "ban"})
_CREATE: StateKey = ("m.room.create", "")
_ENCRYPTION: StateKey = ("m.room.encryption", "")
_SPACE_CHILD = "m.space.child"
_FILTER_KEYS: tuple[StateKey, ...] = (_CREATE, _ENCRYPTION)
# Memberships whose room may be known only by the stripped state of the user's event.
_STRIPPED = frozenset({"invite", "knock"})
# Invites and knocks whose stripped state's facts are kept.
_STRIPPED_KEPT = 10_000
# Whether a room is encrypted, and its type.
_Facts = tuple[bool, str | None]

# A space -> the rooms it names as children (what a request's lists read of spaces).
SpaceChildren = dict[RoomID, frozenset[RoomID]]

# (rooms, event types) -> each room's current state of those types.
# (room, user) -> the stripped state of the user's invite to a room not held here.
RemoteStripped = Callable[[RoomID, UserID], Awaitable[tuple[list[JsonDict], str | None]]]
LoadState = Callable[
    [Sequence[RoomID], Sequence[str]], Awaitable[dict[RoomID, dict[StateKey, EventID]]]
]


@dataclass(frozen=True, slots=True)
class UserRoom:
    """One of the user's rooms as the lists see it."""

    room_id: RoomID
    membership: str
    # Stream position of the user's membership event.
    membership_position: int
    # Position used to sort (and the room's ``bump_stamp``).
    bump_stamp: int


@dataclass(frozen=True, slots=True)
class ListResult:
    count: int
    # Per range, the rooms in it.
    windows: tuple[tuple[RoomID, ...], ...]


class AccountDataReader(Protocol):
    """What the filters read of the user's account data."""

    async def direct_rooms(self, user_id: UserID) -> frozenset[RoomID]: ...

    async def room_tags(self, user_id: UserID) -> Mapping[RoomID, frozenset[str]]: ...


def listed_rooms(
    memberships: Mapping[RoomID, tuple[str, int]],
    stamps: Mapping[RoomID, int],
    *,
    forgotten: Collection[RoomID],
    kicked: Collection[RoomID],
) -> dict[RoomID, UserRoom]:
    """The rooms lists always show, as Synapse's ``filter_membership_for_sync``: every
    room the user is joined to, invited to, knocking on, banned or ``kicked`` from, not
    ``forgotten`` (a room left by the user is shown only after the leave, by the
    caller); a joined room sorts by its newest event (by the join when it has none), any
    other by the user's membership event (what the user saw last). Only a room left or
    banned from can be forgotten: a newer membership (a join or an invite over
    federation, which do not clear the mark) shows it again, as Synapse, where a new
    membership is not forgotten."""
    rooms: dict[RoomID, UserRoom] = {}
    for room_id, (membership, position) in memberships.items():
        if (membership in _FORGETTABLE and room_id in forgotten) or (
            membership not in _LISTED and room_id not in kicked
        ):
            continue
        stamp = stamps.get(room_id, position) if membership == "join" else position
        rooms[room_id] = UserRoom(room_id, membership, position, stamp)
    return rooms


def windows(order: Sequence[RoomID], config: ListConfig) -> ListResult:
    """The list's ``count`` and the rooms of each of its ranges (both ends inclusive) of
    the list's rooms in list order."""
    return ListResult(len(order), tuple(tuple(order[lo : hi + 1]) for lo, hi in config.ranges))


class ListFiltering:
    """Applies ``filters`` to a user's rooms (MSC4186 "Filters")."""

    def __init__(
        self,
        state: StateService,
        account_data: AccountDataReader,
        load_state: LoadState,
        remote_stripped: RemoteStripped,
    ) -> None:
        """``load_state`` reads rooms' current state of some types (for rooms whose
        snapshot is not cached), one query for all; ``remote_stripped`` the stripped
        state of an invite to a room this server does not hold."""
        self._state = state
        self._account_data = account_data
        self._load_state = load_state
        self._remote_stripped = remote_stripped
        # (user, room, invite position) -> what its stripped state tells (None: it
        # lacks the create event).
        self._stripped: LRU[tuple[UserID, RoomID, int], tuple[_Facts | None]] = LRU(_STRIPPED_KEPT)

    async def apply(
        self,
        user_id: UserID,
        rooms: Mapping[RoomID, UserRoom],
        filters: ListFilters,
        memo: SpaceChildren | None = None,
    ) -> list[UserRoom]:
        """The rooms of ``rooms`` that pass every filter (all fields are ANDed). A room
        this server does not hold the state of (a remote invite) is judged by the
        stripped state its invite carried when that holds the room's create event, as
        Synapse; otherwise it fails any filter on its state. ``memo``: the children of
        the spaces read by the request's other lists (filled in)."""
        kept = list(rooms.values())
        needs_state = (
            filters.is_encrypted is not None
            or filters.room_types is not None
            or filters.not_room_types is not None
        )
        state = await self._filter_state([r.room_id for r in kept]) if needs_state else {}
        stripped = (
            await self._stripped_facts(
                user_id,
                [r for r in kept if r.room_id not in state and r.membership in _STRIPPED],
            )
            if needs_state
            else {}
        )
        if filters.is_invite is not None:
            kept = [r for r in kept if (r.membership == "invite") == filters.is_invite]
        if filters.is_dm is not None:
            direct = await self._account_data.direct_rooms(user_id)
            kept = [r for r in kept if (r.room_id in direct) == filters.is_dm]
        if filters.is_encrypted is not None:
            encrypted = {r: _ENCRYPTION in held for r, held in state.items()}
            encrypted.update((r, facts[0]) for r, facts in stripped.items())
            kept = [r for r in kept if encrypted.get(r.room_id) is filters.is_encrypted]
        if filters.room_types is not None or filters.not_room_types is not None:
            types = await self._room_types(state)
            types.update((r, facts[1]) for r, facts in stripped.items())
            if filters.room_types is not None:
                wanted = filters.room_types
                kept = [r for r in kept if r.room_id in types and types[r.room_id] in wanted]
            if filters.not_room_types is not None:
                unwanted = filters.not_room_types
                kept = [r for r in kept if r.room_id in types and types[r.room_id] not in unwanted]
        if filters.spaces is not None:
            # MSC4186: "Unknown spaces or spaces the user is not joined to will be
            # ignored" (a space's children are not shown to those it refused).
            spaces = [
                s
                for s in dict.fromkeys(filters.spaces)
                if (space := rooms.get(s)) is not None and space.membership == "join"
            ]
            children = await self._space_children(spaces, memo if memo is not None else {})
            kept = [r for r in kept if r.room_id in children]
        if filters.needs_tags:
            tags = await self._account_data.room_tags(user_id)
            if filters.tags is not None:
                kept = [r for r in kept if tags.get(r.room_id, frozenset()) & filters.tags]
            if filters.not_tags is not None:
                kept = [r for r in kept if not tags.get(r.room_id, frozenset()) & filters.not_tags]
        return kept

    async def _filter_state(
        self, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, Mapping[StateKey, EventID]]:
        """Each held room's current create and encryption events: from its snapshot
        when cached (no I/O), the others in one query."""
        found: dict[RoomID, Mapping[StateKey, EventID]] = {}
        missing: list[RoomID] = []
        for room_id in room_ids:
            snapshot = self._state.cached_room(room_id)
            if snapshot is None:
                missing.append(room_id)
            else:
                found[room_id] = {k: v for k in _FILTER_KEYS if (v := snapshot.state.get(k))}
        if missing:
            loaded = await self._load_state(missing, [k[0] for k in _FILTER_KEYS])
            for room_id, held in loaded.items():
                found[room_id] = {k: v for k in _FILTER_KEYS if (v := held.get(k))}
        return found

    async def _stripped_facts(
        self, user_id: UserID, rooms: Sequence[UserRoom]
    ) -> dict[RoomID, _Facts]:
        """For each invite or knock to a room not held here whose stripped state holds
        the room's create event: whether it is encrypted and its type (None: none).
        Kept per invite (its position), so a long-poll's passes read each once."""
        facts: dict[RoomID, _Facts] = {}
        for room in rooms:
            key = (user_id, room.room_id, room.membership_position)
            kept = self._stripped.get(key)
            if kept is None:
                events, _ = await self._remote_stripped(room.room_id, user_id)
                kept = (_facts(events),)
                self._stripped.put(key, kept)
            if kept[0] is not None:
                facts[room.room_id] = kept[0]
        return facts

    async def _room_types(
        self, state: Mapping[RoomID, Mapping[StateKey, EventID]]
    ) -> dict[RoomID, str | None]:
        """Each held room's type (its create event's ``type``; None when it has none)."""
        creates: dict[RoomID, EventID] = {
            room_id: event_id
            for room_id, held in state.items()
            if (event_id := held.get(_CREATE)) is not None
        }
        events = await self._state.get_pdus(creates.values())
        types: dict[RoomID, str | None] = {}
        for room_id, event_id in creates.items():
            if (pdu := events.get(event_id)) is not None:
                value = pdu.content.get("type")
                types[room_id] = value if isinstance(value, str) else None
        return types

    async def _space_children(self, spaces: Sequence[RoomID], memo: SpaceChildren) -> set[RoomID]:
        """The rooms the ``spaces`` name as children: their current ``m.space.child``
        events whose ``via`` is a non-empty list ("Spaces"). Spaces not in ``memo`` are
        read together: their state from their cached snapshots, else in one query, and
        the events in one call."""
        wanted = [s for s in spaces if s not in memo]
        if wanted:
            child_ids: dict[RoomID, dict[EventID, RoomID]] = {s: {} for s in wanted}
            missing: list[RoomID] = []
            for space in wanted:
                snapshot = self._state.cached_room(space)
                if snapshot is None:
                    missing.append(space)
                    continue
                for (event_type, state_key), event_id in snapshot.state.items():
                    if event_type == _SPACE_CHILD:
                        child_ids[space][event_id] = RoomID(state_key)
            if missing:
                for space, held in (await self._load_state(missing, [_SPACE_CHILD])).items():
                    for (event_type, state_key), event_id in held.items():
                        if event_type == _SPACE_CHILD and space in child_ids:
                            child_ids[space][event_id] = RoomID(state_key)
            events = await self._state.get_pdus(
                [event_id for ids in child_ids.values() for event_id in ids]
            )
            for space, ids in child_ids.items():
                memo[space] = frozenset(
                    child
                    for event_id, child in ids.items()
                    if (pdu := events.get(event_id)) is not None
                    and isinstance(via := pdu.content.get("via"), list)
                    and via
                )
        return {child for space in spaces for child in memo[space]}


def combined_params(
    lists: Mapping[str, ListConfig],
    results: Mapping[str, ListResult],
    subscriptions: Mapping[RoomID, RoomParams],
) -> dict[RoomID, RoomParams]:
    """Each room in a window or subscribed to, with the params of all that name it
    combined (``RoomParams.combine``)."""
    wanted: dict[RoomID, RoomParams] = {}
    for name, result in results.items():
        params = lists[name].params
        for window in result.windows:
            for room_id in window:
                held = wanted.get(room_id)
                wanted[room_id] = params if held is None else held.combine(params)
    for room_id, params in subscriptions.items():
        held = wanted.get(room_id)
        wanted[room_id] = params if held is None else held.combine(params)
    return wanted


def list_json(result: ListResult, config: ListConfig) -> JsonDict:
    """A list of the response, with one ``SYNC`` op per range as Synapse sends them."""
    return {
        "count": result.count,
        "ops": [
            {"op": "SYNC", "range": [lo, hi], "room_ids": list(window)}
            for (lo, hi), window in zip(config.ranges, result.windows, strict=True)
        ],
    }


def _facts(events: Sequence[JsonDict]) -> _Facts | None:
    """Whether the stripped state ``events`` tell the room is encrypted and its type,
    None when they lack the create event."""
    by_key = {(e["type"], e["state_key"]): e for e in events}
    create = by_key.get(_CREATE)
    if create is None:
        return None
    value = create["content"].get("type")
    return _ENCRYPTION in by_key, value if isinstance(value, str) else None
