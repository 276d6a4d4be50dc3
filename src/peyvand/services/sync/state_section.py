"""The ``state`` section of a room in /sync (Client-Server API, "Syncing" and
"Lazy-loading room members").

``state`` is the room state the client needs before the first timeline event and does
not already have: everything for an initial (or ``full_state``) sync; for an incremental
sync only what changed since the token when the timeline has a gap, and nothing when it
continues the previous response. With ``lazy_load_members`` the client gets only the
``m.room.member`` events of the timeline's senders, each once per device unless
``include_redundant_members`` asks again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from peyvand.events.pdu import StateKey
from peyvand.lru import LRU
from peyvand.storage.models import StoredEvent
from peyvand.types import DeviceID, EventID, UserID

MEMBER = "m.room.member"

# Lazy-loaded members remembered per device, and devices remembered. A forgotten entry
# only means a member event is sent again (Synapse keeps 100 per device too).
_MEMBERS_PER_DEVICE = 100
_DEVICES = 5_000
_HEROES = 5
_HERO_CANDIDATES = _HEROES + 1  # the reader may be among them


@dataclass(frozen=True, slots=True)
class TimelineState:
    """The state events inside a timeline and the senders whose membership the client
    must get from ``state`` (those whose member event does not precede their first
    message in the timeline)."""

    contains: dict[StateKey, EventID]
    needed_members: frozenset[str]


def timeline_state(timeline: Sequence[StoredEvent]) -> TimelineState:
    contains: dict[StateKey, EventID] = {}
    needed: set[str] = set()
    for event in timeline:
        pdu = event.pdu
        if (MEMBER, pdu.sender) not in contains:
            needed.add(pdu.sender)
        if pdu.is_state():
            contains[(pdu.type, pdu.state_key or "")] = pdu.event_id
    return TimelineState(contains, frozenset(needed))


def only_members(
    state: Mapping[StateKey, EventID], members: AbstractSet[str]
) -> dict[StateKey, EventID]:
    """``state`` without the member events of anyone outside ``members``."""
    return {k: v for k, v in state.items() if k[0] != MEMBER or k[1] in members}


def gap_state(
    *,
    contains: Mapping[StateKey, EventID],
    start: Mapping[StateKey, EventID],
    end: Mapping[StateKey, EventID],
    previous: Mapping[StateKey, EventID],
    lazy_members: frozenset[str] | None,
) -> dict[StateKey, EventID]:
    """State for a timeline with a gap before it: what differs at its start or end from
    the state the previous sync ended with, less what the timeline itself carries.

    The end counts too: a state event hidden from the timeline (by a filter or a fork)
    still changed the room. With lazy loading the timeline senders' members count as
    unsent, since the client may never have loaded them.
    """
    if lazy_members is not None:
        start = only_members(start, lazy_members)
    known = set(previous.values())
    if lazy_members is not None:
        known.difference_update(v for k, v in start.items() if k[0] == MEMBER)
    keys = {v: k for source in (contains, start, end, previous) for k, v in source.items()}
    chosen = (set(end.values()) | set(start.values())) - known - set(contains.values())
    return {keys[e]: e for e in chosen}


@dataclass(slots=True)
class _Device:
    """What one device was sent: user -> (member event, events position of the
    response); and which request of the device is the newest."""

    members: LRU[str, tuple[EventID, int]]
    request: int = 0


class LazyMembersCache:
    """Which member events each device was sent while lazy-loading, so incremental
    syncs leave out the redundant ones (the filter's ``include_redundant_members``).
    Each is remembered with the events position of the response that carried it, and is
    held only by a request from a token at or past it: a response the client never got
    (a retry, or a token saved earlier) does not make it redundant, and a request's
    start forgets what went out after its token (as Synapse's
    ``LazyLoadedMembersCache``). Only the device's newest request records what it sent:
    an older one still running (a long-poll the client gave up on) is likely lost."""

    def __init__(self) -> None:
        self._devices: LRU[tuple[UserID, DeviceID], _Device] = LRU(_DEVICES)

    def start(self, user_id: UserID, device_id: DeviceID, since: int | None) -> int:
        """A sync from events position ``since`` (None: an initial sync, the client
        starts over) begins; its number, for ``mark_sent``."""
        key = (user_id, device_id)
        device = self._devices.get(key)
        if device is None or since is None:
            device = _Device(LRU(_MEMBERS_PER_DEVICE), 0 if device is None else device.request)
            self._devices.put(key, device)
        else:
            sent = device.members
            for state_key in [k for k in sent if (held := sent.peek(k)) and held[1] > since]:
                sent.pop(state_key)
        device.request += 1
        return device.request

    def drop_sent(
        self,
        user_id: UserID,
        device_id: DeviceID,
        state: Mapping[StateKey, EventID],
        changed: set[StateKey],
        since: int,
    ) -> dict[StateKey, EventID]:
        """``state`` without member events this device holds as of its token ``since``,
        unless they are changes since it (a retried request must see them again)."""
        device = self._devices.get((user_id, device_id))
        if device is None:
            return dict(state)
        sent = device.members
        return {
            k: v
            for k, v in state.items()
            if k[0] != MEMBER or k in changed or not _held(sent.get(k[1]), v, since)
        }

    def mark_sent(
        self,
        user_id: UserID,
        device_id: DeviceID,
        request: int,
        position: int,
        *states: Mapping[StateKey, EventID],
    ) -> None:
        """The member events of ``states`` went out in a response up to ``position`` to
        request number ``request`` (nothing is recorded if a newer one started)."""
        device = self._devices.get((user_id, device_id))
        if device is None or device.request != request:
            return
        for state in states:
            for (event_type, state_key), event_id in state.items():
                if event_type == MEMBER:
                    device.members.put(state_key, (event_id, position))


def _held(sent: tuple[EventID, int] | None, event_id: EventID, since: int) -> bool:
    return sent is not None and sent[0] == event_id and sent[1] <= since


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """What a room's ``summary`` needs from its memberships, computed once per state
    group rather than once per woken sync (issue 15: a sync's work must not grow with the
    room's member count)."""

    joined: int
    invited: int
    # The first six joined or invited members, and of those who left or were banned
    # (``member_summary``): the five heroes other than any reader are among them.
    present: tuple[UserID, ...]
    gone: tuple[UserID, ...]


def member_summary(memberships: Mapping[UserID, str]) -> MemberSummary:
    """The counts and hero candidates of ``memberships`` (in the order the members'
    events were made current): "the first 5 members of the room, ordered by stream
    ordering, which are joined or invited" (``m.heroes``), the joined before the invited
    and those who left before the banned, as Synapse's ``get_room_summary``."""
    ordered: dict[str, list[UserID]] = {"join": [], "invite": [], "leave": [], "ban": []}
    joined = invited = 0
    for user_id, membership in memberships.items():
        if membership == "join":
            joined += 1
        elif membership == "invite":
            invited += 1
        found = ordered.get(membership)
        if found is not None and len(found) < _HERO_CANDIDATES:
            found.append(user_id)
    return MemberSummary(
        joined,
        invited,
        (*ordered["join"], *ordered["invite"])[:_HERO_CANDIDATES],
        (*ordered["leave"], *ordered["ban"])[:_HERO_CANDIDATES],
    )


def room_summary(
    members: MemberSummary, user_id: UserID, *, named: bool
) -> tuple[dict[str, object], list[UserID]]:
    """The room's ``summary`` and its heroes ("Calculating the display name for a room"):
    member counts always; ``m.heroes`` (up to 5 joined or invited members other than the
    user, else those who left or were banned) only for a room without a name or
    canonical alias, as Synapse does."""
    summary: dict[str, object] = {
        "m.joined_member_count": members.joined,
        "m.invited_member_count": members.invited,
    }
    if named:
        return summary, []
    heroes = [u for u in members.present if u != user_id][:_HEROES]
    if not heroes:
        heroes = [u for u in members.gone if u != user_id][:_HEROES]
    summary["m.heroes"] = heroes
    return summary, heroes
