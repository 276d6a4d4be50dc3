"""Frozen rows returned by the stores."""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.events.pdu import Pdu, StateKey
from peyvand.types import EventID, RoomID, ServerName

# A change to a room's current state: (key, the event now holding it, its membership for
# an m.room.member event); the event None when the state no longer has the key (a state
# reset: state resolution left no event for it).
StateChange = tuple[StateKey, EventID | None, str | None]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    pdu: Pdu
    stream_ordering: int
    # The room state after this event.
    state_group: int
    redacted_by: EventID | None = None
    # (device_id, stored transaction key) when sent by a client with a transaction ID.
    txn: tuple[str, str] | None = None
    # The room's current state group once this event was applied, when it is not
    # ``state_group``: an event received on one side of a fork has that side's state,
    # the room the resolution over its forward extremities (``current_group``). None:
    # the same, or not recorded (backfilled history, events stored before migration 054).
    current_state_group: int | None = None

    @property
    def current_group(self) -> int:
        """The room's current state group once this event was applied: the state a
        client was given of the room up to it."""
        return self.state_group if self.current_state_group is None else self.current_state_group


@dataclass(frozen=True, slots=True)
class RoomRow:
    room_id: RoomID
    room_version: str
    creator: str
    is_public: bool
    created_ts: int


@dataclass(frozen=True, slots=True)
class StateGroupRow:
    """Historical state ``state_group`` = state of ``base_group`` overlaid with its delta."""

    state_group: int
    room_id: RoomID
    seq: int
    prev_group: int | None
    base_group: int | None


@dataclass(frozen=True, slots=True)
class NewStateGroup:
    row: StateGroupRow
    delta: dict[StateKey, EventID]


@dataclass(frozen=True, slots=True)
class EventToPersist:
    """One event in a group commit, with everything decided before the write."""

    pdu: Pdu
    stream_ordering: int
    state_group: int
    new_state_group: NewStateGroup | None
    # (user_id, device_id, txn_id) for idempotent client sends.
    txn: tuple[str, str, str] | None
    relates_to: EventID | None
    rel_type: str | None
    # The forward extremities of the room after this event.
    new_extremities: tuple[EventID, ...]
    # Set on a room's m.room.create event: the room's row is written in the same commit.
    new_room: RoomRow | None = None
    # The room's current state group after this event (None: unchanged).
    current_state_group: int | None = None
    # Changes to the room's current state (``StateChange``); None: the event itself, if
    # it is a state event. An event at a fork (over federation, or a local one citing
    # some of the forward extremities) can change current state by more, or less, than
    # itself (state resolution), and remove keys.
    current_state_changes: tuple[StateChange, ...] | None = None
    # The event was held as an outlier until now (its outlier row is deleted).
    was_outlier: bool = False
    # Further new groups written with the event (federation: the resolved state before
    # it, the room's new current state), parents before children.
    extra_state_groups: tuple[NewStateGroup, ...] = ()
    # An m.room.redaction whose sender has the room's redact level in the state it was
    # authorised against (``events.redaction.has_redact_power``); else it takes effect
    # only on an event of its sender's own server (``redaction_takes_effect``).
    redaction_by_power: bool = False
    # The event arrives redacted: by a redaction received before it that takes effect on
    # it (``storage.redactions``), or, for a held outlier, by the one applied to it.
    redacted_by: EventID | None = None
    # For a state event, what its (type, state_key) held in the state before it (served
    # as ``unsigned.replaces_state``, with ``prev_content`` and ``prev_sender``).
    replaces_state: EventID | None = None
    # The servers with a joined member in the room once this local event was applied,
    # read when it was built: where it is sent (None: read from the room when it is
    # committed). Later events may already have moved the room by its commit.
    joined_servers: frozenset[ServerName] | None = None
    # Several event writers: the generation of the room's holding (``storage.room_writers``)
    # its writer knew when it built the event (None: as it knows at commit).
    holding: int | None = None


def other_current_group(persisted: EventToPersist) -> int | None:
    """``StoredEvent.current_state_group`` of ``persisted``: the room's current group
    after it when it says so and that is not the event's own group; None otherwise (a
    local event that leaves the current group as it was has the current state as its
    own; backfilled history records none)."""
    current = persisted.current_state_group
    return None if current is None or current == persisted.state_group else current


def stored_event(persisted: EventToPersist) -> StoredEvent:
    """The event as storage returns it right after the commit."""
    txn = (persisted.txn[1], persisted.txn[2]) if persisted.txn is not None else None
    return StoredEvent(
        persisted.pdu,
        persisted.stream_ordering,
        persisted.state_group,
        persisted.redacted_by,
        txn,
        other_current_group(persisted),
    )


@dataclass(frozen=True, slots=True)
class OutlierRow:
    """An event held outside the timeline (see migration 016): an outlier, or a rejected
    or soft-failed event with the state group before it."""

    pdu: Pdu
    status: str
    reason: str | None = None
    state_group: int | None = None
    new_state_group: NewStateGroup | None = None
    redacted_by: EventID | None = None
