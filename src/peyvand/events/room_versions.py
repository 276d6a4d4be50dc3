"""Room versions as frozen feature-flag objects (spec: "Room Versions").

Code branches on a flag, never on a version string. Peyvand supports versions 1 to 12;
new rooms are created as ``DEFAULT_ROOM_VERSION`` (12, the spec's default) unless a client
asks for another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class StateResAlgorithm(Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"


class EventIdFormat(Enum):
    """How an event gets its ID ("Room Versions", each version's "Event IDs").

    ``CARRIED``: v1, v2: ``$opaque_id:domain`` chosen by the creating server and carried in
    the event as ``event_id``; ``prev_events``/``auth_events`` are ``[event_id, hashes]``
    pairs. ``HASH_BASE64``: v3: ``$`` + the standard unpadded Base64 reference hash, not
    carried. ``HASH_URLSAFE``: v4+: the same in URL-safe unpadded Base64.
    """

    CARRIED = "carried"
    HASH_BASE64 = "hash_base64"
    HASH_URLSAFE = "hash_urlsafe"


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    state_res: StateResAlgorithm
    event_id_format: EventIdFormat
    # v1-v5 (removed in v6): auth rule 4 for m.room.aliases, and redaction keeps `aliases`.
    special_case_aliases: bool
    # v5: a signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v6: canonical JSON values (no floats, integers in range), `notifications` levels
    # checked like `events`.
    strict_canonicaljson: bool
    limit_notifications_power_levels: bool
    # v7: knock membership and join rule.
    knock_join_rule: bool
    # v8: restricted join rule (join_authorised_via_users_server); redaction keeps `allow`.
    restricted_join_rule: bool
    # v9: redaction keeps join_authorised_via_users_server.
    redaction_keeps_join_authoriser: bool
    # v10: knock_restricted join rule; power levels must be integers.
    knock_restricted_join_rule: bool
    enforce_int_power_levels: bool
    # v11 (MSC2174/MSC2176/MSC3821/MSC3989): `creator` dropped from m.room.create, `redacts`
    # moves into content, new redaction rules.
    implicit_room_creator: bool
    updated_redaction_rules: bool
    redacts_in_content: bool
    # v12 (MSC4291, MSC4289, MSC4297): room ID is the create event's reference hash; the create
    # event has no room_id and is never an auth event; creators have infinite power.
    room_id_is_create_event_hash: bool
    creators_have_infinite_power: bool

    @property
    def event_id_carried(self) -> bool:
        """v1, v2: the event ID is part of the event and ``prev_events`` hold pairs."""
        return self.event_id_format is EventIdFormat.CARRIED


ROOM_V1 = RoomVersion(
    identifier="1",
    state_res=StateResAlgorithm.V1,
    event_id_format=EventIdFormat.CARRIED,
    special_case_aliases=True,
    enforce_key_validity=False,
    strict_canonicaljson=False,
    limit_notifications_power_levels=False,
    knock_join_rule=False,
    restricted_join_rule=False,
    redaction_keeps_join_authoriser=False,
    knock_restricted_join_rule=False,
    enforce_int_power_levels=False,
    implicit_room_creator=False,
    updated_redaction_rules=False,
    redacts_in_content=False,
    room_id_is_create_event_hash=False,
    creators_have_infinite_power=False,
)
ROOM_V2 = replace(ROOM_V1, identifier="2", state_res=StateResAlgorithm.V2)
ROOM_V3 = replace(ROOM_V2, identifier="3", event_id_format=EventIdFormat.HASH_BASE64)
ROOM_V4 = replace(ROOM_V3, identifier="4", event_id_format=EventIdFormat.HASH_URLSAFE)
ROOM_V5 = replace(ROOM_V4, identifier="5", enforce_key_validity=True)
ROOM_V6 = replace(
    ROOM_V5,
    identifier="6",
    special_case_aliases=False,
    strict_canonicaljson=True,
    limit_notifications_power_levels=True,
)
ROOM_V7 = replace(ROOM_V6, identifier="7", knock_join_rule=True)
ROOM_V8 = replace(ROOM_V7, identifier="8", restricted_join_rule=True)
ROOM_V9 = replace(ROOM_V8, identifier="9", redaction_keeps_join_authoriser=True)
ROOM_V10 = replace(
    ROOM_V9, identifier="10", knock_restricted_join_rule=True, enforce_int_power_levels=True
)
ROOM_V11 = replace(
    ROOM_V10,
    identifier="11",
    implicit_room_creator=True,
    updated_redaction_rules=True,
    redacts_in_content=True,
)
ROOM_V12 = replace(
    ROOM_V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    room_id_is_create_event_hash=True,
    creators_have_infinite_power=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        ROOM_V1,
        ROOM_V2,
        ROOM_V3,
        ROOM_V4,
        ROOM_V5,
        ROOM_V6,
        ROOM_V7,
        ROOM_V8,
        ROOM_V9,
        ROOM_V10,
        ROOM_V11,
        ROOM_V12,
    )
}
DEFAULT_ROOM_VERSION = ROOM_V12


def room_version_or_none(identifier: str) -> RoomVersion | None:
    return KNOWN_ROOM_VERSIONS.get(identifier)
