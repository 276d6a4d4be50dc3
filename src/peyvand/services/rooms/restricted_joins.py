"""Joining restricted rooms (Client-Server API, "Restricted rooms"; room versions with the
``restricted`` / ``knock_restricted`` join rules).

A user who is neither invited nor joined may join when they are a member of one of the
rooms the join rule's ``allow`` list names. The resident server checks that, with what it
knows of those rooms, and names one of its own joined users who may invite as
``join_authorised_via_users_server``; the auth rules then require that user's server to
have signed the join. Only in room versions that know the rule (``restricted`` from v8,
``knock_restricted`` from v10): elsewhere it is an unknown join rule, which lets no one
in, and no authoriser is named (as Synapse's ``has_restricted_join_rules``).
"""

from __future__ import annotations

from peyvand.errors import Errcode, MatrixError
from peyvand.events.auth import get_named_level, get_user_power_level
from peyvand.events.pdu import StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import RoomID, ServerName, UserID, server_name_of

_JOIN_RULES: StateKey = ("m.room.join_rules", "")
_POWER_LEVELS: StateKey = ("m.room.power_levels", "")
_CREATE: StateKey = ("m.room.create", "")


async def join_authoriser(
    state: StateService, snapshot: RoomSnapshot, user_id: UserID, server_name: ServerName
) -> UserID | None:
    """The local user to name in ``join_authorised_via_users_server`` for ``user_id``'s
    join: None when the join needs none (not a restricted room, or already invited or
    joined); ``M_UNABLE_TO_AUTHORISE_JOIN`` when the allow conditions are not met here or
    no local user may vouch."""
    events = await state.get_state_events(snapshot.state, [_JOIN_RULES, _POWER_LEVELS, _CREATE])
    join_rules = events.get(_JOIN_RULES)
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    if not _is_restricted(rule, snapshot.room_version):
        return None
    if snapshot.memberships.get(user_id) in ("invite", "join"):
        return None
    allow = join_rules.content.get("allow") if join_rules is not None else None
    entries = allow if isinstance(allow, list) else []
    allowed_by = [
        RoomID(entry["room_id"])
        for entry in entries
        if isinstance(entry, dict)
        and entry.get("type") == "m.room_membership"
        and isinstance(entry.get("room_id"), str)
    ]
    for room_id in allowed_by:
        other = await state.get_room(room_id)
        if other is not None and other.memberships.get(user_id) == "join":
            break
    else:
        raise MatrixError(
            Errcode.UNABLE_TO_AUTHORISE_JOIN,
            "You are not a member of any room this room lets in",
        )
    member_keys: list[StateKey] = [
        ("m.room.member", u)
        for u, m in snapshot.memberships.items()
        if m == "join" and server_name_of(u) == server_name
    ]
    auth_state = {**events, **await state.get_state_events(snapshot.state, member_keys)}
    power_levels = events.get(_POWER_LEVELS)
    invite_level = get_named_level(
        power_levels.content if power_levels is not None else None, "invite"
    )
    candidates = sorted(
        (
            (get_user_power_level(key[1], auth_state, snapshot.room_version), key[1])
            for key in member_keys
        ),
        reverse=True,
    )
    for level, candidate in candidates:
        if level >= invite_level:
            return UserID(candidate)
    raise MatrixError(Errcode.UNABLE_TO_AUTHORISE_JOIN, "No user of this server may let you in")


def _is_restricted(join_rule: object, room_version: RoomVersion) -> bool:
    """Whether ``join_rule`` is a restricted rule of ``room_version`` (rooms v8
    "Authorization rules" 5.3.5; ``knock_restricted`` from v10)."""
    if join_rule == "restricted":
        return room_version.restricted_join_rule
    if join_rule == "knock_restricted":
        return room_version.knock_restricted_join_rule
    return False
