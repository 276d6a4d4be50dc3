"""The one error the authorization rules raise.

    Exception
     └── AuthError(rule, message)   an event fails a step of the authorization rules

``AuthError`` is pure: it names the failing spec step and says why. The service layer
maps it to ``M_FORBIDDEN``; federation marks the event rejected.

Step numbers follow the room version's own numbering (spec: "Room Versions", each
version's "Authorization rules"). The code and its comments use v12's numbering
throughout; ``spec_rule`` translates a v12 number into the number the event's own version
uses. The versions differ by inserted or removed steps:

* v12 inserted a new rule 2 (the room ID is the create event's hash), so from rule 3
  onwards v12 numbers every top-level rule one higher than v6-v11 do; v1-v5 have rule 4
  for ``m.room.aliases``, so only their rules 2 and 3 are one lower than v12's.
* v8 inserted 5.2 (``join_authorised_via_users_server``) and 5.3.5 (restricted joins);
  v7 inserted 5.7 (knock).
* v10 inserted 10.1 and 10.2 (integer power levels), v12 10.4 (creators not listed).

Steps no version shares (v1-v5 rule 4, v1/v2 rule 11) raise ``AuthError`` directly.
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
    parts = [int(part) for part in v12_rule.split(".")]
    top = parts[0]
    if len(parts) > 1 and top == 5:
        parts[1:] = _membership_subrule(room_version, parts[1:])
    elif len(parts) > 1 and top == 10:
        parts[1] = _power_levels_subrule(room_version, parts[1])
    if top in (3, 4) or (top > 4 and not room_version.special_case_aliases):
        parts[0] = top - 1
    return ".".join(str(part) for part in parts)


def _membership_subrule(room_version: RoomVersion, sub: list[int]) -> list[int]:
    """Steps 5.x of v12 as ``room_version`` numbers them (no 5.2, 5.3.5 before v8; no
    knock, 5.7, before v7)."""
    if room_version.restricted_join_rule:
        return sub
    step = sub[0]
    if step == 3 and len(sub) > 1 and sub[1] > 5:
        sub = [step, sub[1] - 1, *sub[2:]]
    if step >= 3:
        step -= 1
    if step == 7 and not room_version.knock_join_rule:
        step -= 1
    return [step, *sub[1:]]


def _power_levels_subrule(room_version: RoomVersion, step: int) -> int:
    """Step 10.x of v12 as ``room_version`` numbers it (no 10.4 before v12; no 10.1, 10.2
    before v10)."""
    if step > 4:
        step -= 1
    if not room_version.enforce_int_power_levels and step >= 3:
        step -= 2
    return step


def reject(room_version: RoomVersion, v12_rule: str, message: str) -> AuthError:
    """An ``AuthError`` for step ``v12_rule`` (v12 numbering), numbered for the version."""
    return AuthError(spec_rule(room_version, v12_rule), message)
