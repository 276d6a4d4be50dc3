"""Room versions as frozen feature-flag objects (spec: "Room Versions").

Code branches on a flag, never on a version string. Peyvand supports 10, 11 and 12;
new rooms are created as ``DEFAULT_ROOM_VERSION`` (12, the spec's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class StateResAlgorithm(Enum):
    V2 = "v2"
    V2_1 = "v2.1"


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    state_res: StateResAlgorithm
    # v11 (MSC2174/MSC2176/MSC3821/MSC3989): `creator` dropped from m.room.create, `redacts`
    # moves into content, new redaction rules.
    implicit_room_creator: bool
    updated_redaction_rules: bool
    redacts_in_content: bool
    # v12 (MSC4291, MSC4289, MSC4297): room ID is the create event's reference hash; the create
    # event has no room_id and is never an auth event; creators have infinite power.
    room_id_is_create_event_hash: bool
    creators_have_infinite_power: bool
    # Common to 10-12.
    strict_canonicaljson: bool = True
    enforce_int_power_levels: bool = True
    knock_join_rule: bool = True
    restricted_join_rule: bool = True
    knock_restricted_join_rule: bool = True
    limit_notifications_power_levels: bool = True


ROOM_V10 = RoomVersion(
    identifier="10",
    state_res=StateResAlgorithm.V2,
    implicit_room_creator=False,
    updated_redaction_rules=False,
    redacts_in_content=False,
    room_id_is_create_event_hash=False,
    creators_have_infinite_power=False,
)
ROOM_V11 = RoomVersion(
    identifier="11",
    state_res=StateResAlgorithm.V2,
    implicit_room_creator=True,
    updated_redaction_rules=True,
    redacts_in_content=True,
    room_id_is_create_event_hash=False,
    creators_have_infinite_power=False,
)
ROOM_V12 = RoomVersion(
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    implicit_room_creator=True,
    updated_redaction_rules=True,
    redacts_in_content=True,
    room_id_is_create_event_hash=True,
    creators_have_infinite_power=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (ROOM_V10, ROOM_V11, ROOM_V12)
}
DEFAULT_ROOM_VERSION = ROOM_V12


def room_version_or_none(identifier: str) -> RoomVersion | None:
    return KNOWN_ROOM_VERSIONS.get(identifier)
