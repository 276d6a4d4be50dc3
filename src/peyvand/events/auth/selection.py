"""Which state events authorise an event, and checks on an event's ``auth_events``.

``auth_types_for_event`` is the "Auth events selection" algorithm (Server-Server API,
"Authorization rules"). ``check_auth_events_list`` applies the room version's rule about
the event's ``auth_events`` (rule 3 in v12, rule 2 in v10 and v11) and, in v12, rule 2
(the room ID names an accepted create event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peyvand.events.auth.errors import AuthError, reject
from peyvand.events.auth.power_levels import CREATE_KEY, POWER_LEVELS_KEY
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion

JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The ``(type, state_key)`` pairs of the state events that may authorise an event.

    Server-Server API, "Auth events selection": the create event (not from v12, where the
    room ID implies it), the power levels event, the sender's membership and, for
    ``m.room.member``, the target's membership, the join rules (join, invite, knock), the
    ``m.room.third_party_invite`` named by a third-party invite's token, and the
    membership of ``join_authorised_via_users_server`` for a restricted join. The
    ``m.room.create`` event itself has no auth events.
    """
    if event_type == "m.room.create":
        return set()
    selected: set[StateKey] = {POWER_LEVELS_KEY, ("m.room.member", sender)}
    if not room_version.room_id_is_create_event_hash:
        selected.add(CREATE_KEY)
    if event_type != "m.room.member" or state_key is None:
        return selected
    selected.add(("m.room.member", state_key))
    membership = content.get("membership")
    if membership in ("join", "invite", "knock"):
        selected.add(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_invite_token(content)
        if token is not None:
            selected.add(("m.room.third_party_invite", token))
    if membership == "join" and room_version.restricted_join_rule:
        authoriser = content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str):
            selected.add(("m.room.member", authoriser))
    return selected


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def check_auth_events_list(
    event: Pdu, auth_events: Sequence[Pdu], *, create_event: Pdu | None = None
) -> None:
    """Check ``event``'s fetched ``auth_events`` (rule 3, v12 numbering; rule 2 in v10/v11).

    Raises ``AuthError`` on duplicate ``(type, state_key)`` entries, entries the selection
    algorithm would not pick (in v12 that includes any ``m.room.create``), rejected
    entries, entries from another room and, before v12, a missing create event.
    In v12, if ``create_event`` (the event ``$`` + room ID without ``!``) is given, rule 2
    is checked too. ``m.room.create`` events are checked by rule 1 alone.
    """
    version = event.room_version
    if event.type == "m.room.create":
        return
    if version.room_id_is_create_event_hash and create_event is not None:
        check_room_id_is_create_event(event, create_event)
    expected = auth_types_for_event(
        version, event.type, event.sender, event.state_key, event.content
    )
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        key = auth_event.state_tuple
        # 3.1 If there are duplicate entries for a given type and state_key pair, reject.
        if key in seen:
            raise reject(version, "3.1", f"duplicate auth events for {key}")
        seen.add(key)
        # 3.2 If there are entries whose type and state_key don't match those specified by
        # the auth events selection algorithm described in the server specification, reject.
        if not auth_event.is_state() or key not in expected:
            raise reject(version, "3.2", f"unexpected auth event {auth_event.event_id} {key}")
        # 3.3 If there are entries which were themselves rejected under the checks
        # performed on receipt of a PDU, reject.
        if auth_event.rejected_reason is not None:
            raise reject(version, "3.3", f"auth event {auth_event.event_id} was rejected")
        # 3.5 If any event in auth_events has a room_id which does not match that of the
        # event being authorised, reject.
        if auth_event.room_id != event.room_id:
            raise reject(version, "3.5", f"auth event {auth_event.event_id} is in another room")
    # 3.4 (v10, v11 only: rule 2.4) If there is no m.room.create event among the entries,
    # reject.
    if not version.room_id_is_create_event_hash and CREATE_KEY not in seen:
        raise reject(version, "3.4", "no m.room.create event among the auth events")


def check_room_id_is_create_event(event: Pdu, create_event: Pdu | None) -> None:
    """v12 rule 2: the ``room_id`` must be an accepted create event's ID with ``!`` for ``$``.

    ``create_event`` is the event the caller found for that ID (None if it has none).
    """
    room_id = event.get("room_id")
    if (
        create_event is None
        or create_event.type != "m.room.create"
        or create_event.rejected_reason is not None
        or not isinstance(room_id, str)
        or not room_id.startswith("!")
        or create_event.event_id != "$" + room_id[1:]
    ):
        raise AuthError(
            "2", f"room ID {room_id!r} is not the ID of an accepted m.room.create event"
        )
