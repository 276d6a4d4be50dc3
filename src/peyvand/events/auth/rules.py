"""The authorization rules of room versions 1 to 12 ("Room Versions", each version's
"Authorization rules"), as one pure function.

Comments number the steps as room version 12 does; ``errors.spec_rule`` gives each
version's own numbers. Rule 3 (``auth_events`` themselves) is
``selection.check_auth_events_list``, as it needs the event's auth events rather than
the room state. The differences between versions are flags of ``RoomVersion``:
v1-v5 have a rule for ``m.room.aliases`` (``special_case_aliases``), v1 and v2 one for
``m.room.redaction`` (``event_id_carried``). From v3, as the spec notes,
``m.room.redaction`` has no rule of its own: the *redact level* is not part of auth and a
redaction is authorised like any other message event (the redact level is applied when
the redaction is enforced, see ``redaction.redaction_takes_effect``).
"""

from __future__ import annotations

from collections.abc import Mapping

from peyvand.events.auth.errors import AuthError, reject
from peyvand.events.auth.membership import SignatureVerifier, check_membership_event
from peyvand.events.auth.power_levels import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    check_power_levels_event,
    get_named_level,
    get_send_level,
    get_user_power_level,
)
from peyvand.events.auth.selection import check_room_id_is_create_event
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.types import is_valid_user_id, server_name_of


def check_auth_rules(
    event: Pdu,
    auth_state: Mapping[StateKey, Pdu],
    *,
    verify_signature: SignatureVerifier | None = None,
) -> None:
    """Raise ``AuthError`` unless ``event`` is allowed against ``auth_state``.

    ``auth_state`` is the room state the event is checked against, keyed by
    ``(type, state_key)``; it must hold the ``m.room.create`` event, also in v12 where the
    create event is never among ``auth_events``. ``verify_signature(event, server_name)``
    checks that ``server_name`` validly signed the event (rule 5.2.1); without it the
    caller vouches that every signature present was verified on receipt, and only the
    presence of the signature is checked.
    """
    version = event.room_version
    # 1. If type is m.room.create:
    if event.type == "m.room.create":
        _check_create_event(event)
        return
    create_event = auth_state.get(CREATE_KEY)
    if version.room_id_is_create_event_hash:
        # 2. If the event's room_id is not an event ID for an accepted (not rejected)
        # m.room.create event, with the sigil ! instead of $, reject.
        check_room_id_is_create_event(event, create_event)
    if create_event is None:
        # 3.4 (v10, v11: rule 2.4) If there is no m.room.create event among the entries,
        # reject. (v12 rejected the event above, by rule 2.)
        raise reject(version, "3.4", "no m.room.create event in the room state")
    # 4. If the content of the m.room.create event in the room state has the property
    # m.federate set to false, and the sender domain of the event does not match the
    # sender domain of the create event, reject.
    if create_event.content.get("m.federate", True) is False and server_name_of(
        event.sender
    ) != server_name_of(create_event.sender):
        raise reject(version, "4", "the room is not federated")
    # (v1-v5: rule 4) If type is m.room.aliases:
    if event.type == "m.room.aliases" and version.special_case_aliases:
        _check_aliases_event(event)
        return
    # 5. If type is m.room.member:
    if event.type == "m.room.member":
        check_membership_event(event, auth_state, verify_signature)
        return
    # 6. If the sender's current membership state is not join, reject.
    sender_member = auth_state.get(("m.room.member", event.sender))
    if sender_member is None or sender_member.membership != "join":
        raise reject(version, "6", f"{event.sender} is not joined")
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    power_levels_content = power_levels.content if power_levels is not None else None
    sender_level = get_user_power_level(event.sender, auth_state, version)
    # 7. If type is m.room.third_party_invite:
    if event.type == "m.room.third_party_invite":
        # 7.1 Allow if and only if sender's current power level is greater than or equal
        # to the invite level.
        if sender_level >= get_named_level(power_levels_content, "invite"):
            return
        raise reject(version, "7.1", f"{event.sender} may not invite users")
    # 8. If the event type's required power level is greater than the sender's power
    # level, reject.
    required = get_send_level(event.type, event.state_key, power_levels_content)
    if required > sender_level:
        raise reject(
            version, "8", f"sending {event.type} needs level {required}, sender has {sender_level}"
        )
    # 9. If the event has a state_key that starts with an @ and does not match the sender,
    # reject.
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise reject(version, "9", "state_key names another user")
    # 10. If type is m.room.power_levels:
    if event.type == "m.room.power_levels":
        check_power_levels_event(event, auth_state, sender_level)
    # (v1, v2: rule 11) If type is m.room.redaction:
    if event.type == "m.room.redaction" and version.event_id_carried:
        _check_redaction_event(event, sender_level, get_named_level(power_levels_content, "redact"))
    # 11. Otherwise, allow.


def _check_aliases_event(event: Pdu) -> None:
    """Rooms v1-v5, rule 4: an ``m.room.aliases`` event (numbered as those versions do)."""
    # 4.1 If event has no state_key, reject.
    if event.state_key is None:
        raise AuthError("4.1", "m.room.aliases without a state_key")
    # 4.2 If sender's domain doesn't match state_key, reject.
    if server_name_of(event.sender) != event.state_key:
        raise AuthError("4.2", "m.room.aliases of another server")
    # 4.3 Otherwise, allow.


def _check_redaction_event(event: Pdu, sender_level: int | float, redact_level: int) -> None:
    """Rooms v1, v2, rule 11: an ``m.room.redaction`` event (numbered as those versions do)."""
    # 11.1 If the sender's power level is greater than or equal to the redact level, allow.
    if sender_level >= redact_level:
        return
    # 11.2 If the domain of the event_id of the event being redacted is the same as the
    # domain of the event_id of the m.room.redaction, allow.
    redacts = event.redacts
    if redacts is not None and server_name_of(redacts) == server_name_of(event.event_id):
        return
    # 11.3 Otherwise, reject.
    raise AuthError("11.3", f"{event.sender} may not redact events of other servers")


def _check_create_event(event: Pdu) -> None:
    """Rule 1: an ``m.room.create`` event."""
    version = event.room_version
    content = event.content
    # 1.1 If it has any prev_events, reject.
    if event.get("prev_events"):
        raise reject(version, "1.1", "m.room.create has prev_events")
    if version.room_id_is_create_event_hash:
        # 1.2 (v12) If the event has a room_id, reject.
        if "room_id" in event.data:
            raise reject(version, "1.2", "m.room.create has a room_id")
    elif server_name_of(str(event.get("room_id", ""))) != server_name_of(event.sender):
        # 1.2 (v10, v11) If the domain of the room_id does not match the domain of the
        # sender, reject.
        raise reject(version, "1.2", "room_id and sender domains differ")
    # 1.3 If content.room_version is present and is not a recognised version, reject.
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        raise reject(version, "1.3", f"unknown room version {content['room_version']!r}")
    # 1.4 (v10) If content has no creator property, reject.
    if not version.implicit_room_creator and "creator" not in content:
        raise reject(version, "1.4", "m.room.create has no creator")
    # 1.4 (v12) If additional_creators is present in content and is not an array of
    # strings where each string passes the same user ID validation applied to sender,
    # reject.
    if version.creators_have_infinite_power and "additional_creators" in content:
        additional = content["additional_creators"]
        if not isinstance(additional, list) or not all(
            isinstance(user, str) and is_valid_user_id(user) for user in additional
        ):
            raise reject(version, "1.4", "additional_creators must be a list of user IDs")
    # 1.5 (v11: 1.4) Otherwise, allow.
