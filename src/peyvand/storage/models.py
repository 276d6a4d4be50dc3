"""Frozen rows returned by the stores."""

from __future__ import annotations

from dataclasses import dataclass

from peyvand.events.pdu import Pdu, StateKey
from peyvand.types import EventID, RoomID


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
