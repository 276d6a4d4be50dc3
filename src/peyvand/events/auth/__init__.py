"""Event authorization rules for room versions 10, 11 and 12, as pure functions.

Spec: "Room Versions" (each version's "Authorization rules") and Server-Server API,
"Auth events selection". No I/O: the caller prefetches the auth events and room state.

- ``auth_types_for_event``: which state events authorise an event.
- ``check_auth_events_list``: rules on an event's ``auth_events`` (rule 3; v12 rule 2).
- ``check_auth_rules``: every other rule, against the room state.
- Power-level helpers shared with the service layer.
"""

from peyvand.events.auth.errors import AuthError
from peyvand.events.auth.membership import SignatureVerifier
from peyvand.events.auth.power_levels import (
    get_named_level,
    get_send_level,
    get_user_power_level,
    room_creators,
)
from peyvand.events.auth.rules import check_auth_rules
from peyvand.events.auth.selection import (
    auth_types_for_event,
    check_auth_events_list,
    check_room_id_is_create_event,
)

__all__ = [
    "AuthError",
    "SignatureVerifier",
    "auth_types_for_event",
    "check_auth_events_list",
    "check_auth_rules",
    "check_room_id_is_create_event",
    "get_named_level",
    "get_send_level",
    "get_user_power_level",
    "room_creators",
]
