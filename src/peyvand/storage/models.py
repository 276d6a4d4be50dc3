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
