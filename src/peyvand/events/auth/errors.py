"""The one error the authorization rules raise.

    Exception
     └── AuthError(rule, message)   an event fails a step of the authorization rules

``AuthError`` is pure: it names the failing spec step and says why. The service layer
maps it to ``M_FORBIDDEN``; federation marks the event rejected.

Step numbers follow the room version's own numbering (spec: "Room Versions", each
version's "Authorization rules"). Room version 12 inserted a new rule 2 (the room ID is
the create event's hash), so from rule 3 onwards v12 numbers every top-level rule one
higher than v10 and v11 do. The code and its comments use v12's numbering throughout;
``spec_rule`` translates a v12 number into the number the event's own version uses.
"""

from __future__ import annotations

from peyvand.events.room_versions import RoomVersion


class AuthError(Exception):
    """An event is not allowed by the authorization rules.

    ``rule`` is the failing step as the room version's spec numbers it, e.g. ``"5.3.3"``.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"auth rule {rule}: {message}")
        self.rule = rule
        self.message = message


def spec_rule(room_version: RoomVersion, v12_rule: str) -> str:
    """The number of step ``v12_rule`` (v12 numbering) in ``room_version``'s rules."""
    if room_version.room_id_is_create_event_hash:
        return v12_rule
    top, sep, rest = v12_rule.partition(".")
    if int(top) < 3:
        return v12_rule
    return f"{int(top) - 1}{sep}{rest}"


def reject(room_version: RoomVersion, v12_rule: str, message: str) -> AuthError:
    """An ``AuthError`` for step ``v12_rule`` (v12 numbering), numbered for the version."""
    return AuthError(spec_rule(room_version, v12_rule), message)
