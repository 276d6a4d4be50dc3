"""What a simplified sliding sync request asks for (MSC4186, "Request body"), as frozen
models. The API layer parses the body into them (``api/client/sliding_sync.py``), the
``extensions`` object with ``ext_request.parse_extensions``: the service never sees raw
JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from peyvand.interned import Interned
from peyvand.services.sync.sliding.ext_request import ExtensionsRequest
from peyvand.types import RoomID

# required_state wildcards (MSC4186, "Room configuration").
WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"

StatePair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RoomParams:
    """``required_state`` and ``timeline_limit`` of a list or a room subscription."""

    required_state: frozenset[StatePair]
    timeline_limit: int
    # MSC3773's ``unread_thread_notifications`` (as /sync's filter has it): the unread
    # counts split into the main timeline's and each thread's. MSC4186 leaves thread
    # counts out of ``notification_count`` and to an extension none specifies yet;
    # Synapse 1.163 sends no counts at all.
    unread_thread_notifications: bool = False

    def combine(self, other: RoomParams) -> RoomParams:
        """A room in several lists and subscriptions gets the widest of each, as
        Synapse's ``RoomSyncConfig.combine_room_sync_config``: the largest
        ``timeline_limit`` and the union of ``required_state``; thread counts if any
        asks for them."""
        return RoomParams(
            self.required_state | other.required_state,
            max(self.timeline_limit, other.timeline_limit),
            self.unread_thread_notifications or other.unread_thread_notifications,
        )

    @property
    def lazy_members(self) -> bool:
        return ("m.room.member", LAZY) in self.required_state

    def must_await_full_state(self, is_mine: Callable[[str], bool]) -> bool:
        """Whether this needs state a room joined with partial state (MSC3706) may lack:
        the members of other servers. As Synapse's ``must_await_full_state``: any state
        (``["*", "*"]``), or a remote user's key under any type or as a member; lazy
        members, ``$ME`` and (as Synapse has it) ``["m.room.member", "*"]`` do not."""
        for event_type, state_key in self.required_state:
            if event_type == WILDCARD and (
                state_key == WILDCARD
                or (state_key.startswith("@") and ":" in state_key and not is_mine(state_key))
            ):
                return True
        members = {k for t, k in self.required_state if t == "m.room.member"} - {ME, LAZY}
        if WILDCARD in members:
            return False
        return any(not is_mine(user_id) for user_id in members)


@dataclass(frozen=True, slots=True)
class ListFilters:
    """A list's ``filters`` (MSC4186 "Filters"); None means no filter on that field."""

    is_dm: bool | None = None
    spaces: tuple[RoomID, ...] | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    # None stands for rooms without a type.
    room_types: frozenset[str | None] | None = None
    not_room_types: frozenset[str | None] | None = None
    tags: frozenset[str] | None = None
    not_tags: frozenset[str] | None = None

    @property
    def needs_tags(self) -> bool:
        return self.tags is not None or self.not_tags is not None


@dataclass(frozen=True, slots=True)
class ListConfig:
    """One named list: its windows over the sorted, filtered rooms."""

    ranges: tuple[tuple[int, int], ...]
    params: RoomParams
    filters: ListFilters = field(default_factory=ListFilters)


@dataclass(frozen=True, slots=True)
class SlidingSyncRequest:
    conn_id: str | None
    lists: Mapping[str, ListConfig]
    room_subscriptions: Mapping[RoomID, RoomParams]
    # The body's ``extensions`` object, parsed.
    extensions: ExtensionsRequest


class SharedRequiredStates:
    """One ``required_state`` object for all the equal ones requests name (held weakly:
    it goes with the last request or sent room holding it). A room a connection was sent
    keeps its request's (``SentRoom.required_state``), so the next request's mostly is
    the same object: a woken long-poll checks each room in view by identity, not pair by
    pair (issue 18)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: Interned[frozenset[StatePair]] = Interned()

    def __len__(self) -> int:
        return len(self._held)

    def request(self, request: SlidingSyncRequest) -> SlidingSyncRequest:
        """``request`` with its lists' and subscriptions' ``required_state`` shared."""
        return replace(
            request,
            lists={
                name: replace(config, params=self._params(config.params))
                for name, config in request.lists.items()
            },
            room_subscriptions={
                room_id: self._params(params)
                for room_id, params in request.room_subscriptions.items()
            },
        )

    def _params(self, params: RoomParams) -> RoomParams:
        shared = self._held.one(params.required_state, hash(params.required_state))
        if shared is params.required_state:
            return params
        return RoomParams(shared, params.timeline_limit, params.unread_thread_notifications)
