"""The redaction algorithm (Client-Server API, "Redactions"; per room version).

Rooms v1-v5 use rooms/fragments/v1-redactions.md (``m.room.aliases`` keeps ``aliases``,
``RoomVersion.special_case_aliases``), v6 and v7 the same without the aliases case
(v6-redactions.md), v8 keeps ``allow`` in ``m.room.join_rules`` (``restricted_join_rule``),
v9 and v10 also ``join_authorised_via_users_server`` in ``m.room.member``
(v9-redactions.md, ``redaction_keeps_join_authoriser``). v11 changed them
(rooms/fragments/v11-redactions.md) and v12 uses the v11 rules unchanged. The v11
differences are driven by ``RoomVersion.updated_redaction_rules``:

* top level: ``origin``, ``membership`` and ``prev_state`` are no longer kept;
* ``m.room.create`` keeps its whole content (not just ``creator``);
* ``m.room.power_levels`` also keeps ``invite``;
* ``m.room.member`` also keeps ``third_party_invite.signed``;
* ``m.room.redaction`` keeps ``redacts`` in content.

``unsigned`` is not among the kept keys: client-facing data such as
``redacted_because`` is added by the serializer, outside the PDU.

Whether a redaction event takes effect (rooms v3+, "Handling redactions"; v10-v12 use
those rules unchanged; in v1 and v2 the authorization rules decide, see
``redaction_takes_effect``) is decided here too: ``has_redact_power`` is the first condition,
``redaction_takes_effect`` the whole rule, for local and received redactions alike.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from peyvand.events.auth.power_levels import (
    POWER_LEVELS_KEY,
    get_named_level,
    get_user_power_level,
)
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.room_versions import RoomVersion
from peyvand.types import JsonDict, server_name_of

_TOP_LEVEL_KEYS: Final = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
_TOP_LEVEL_KEYS_BEFORE_V11: Final = _TOP_LEVEL_KEYS | {"prev_state", "origin", "membership"}

_CONTENT_KEYS_V1: Final[Mapping[str, frozenset[str]]] = {
    "m.room.member": frozenset({"membership"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule"}),
    "m.room.power_levels": frozenset(
        {
            "ban",
            "events",
            "events_default",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        }
    ),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}
_ALIASES_KEYS: Final = frozenset({"aliases"})
_JOIN_RULES_KEYS_V8: Final = _CONTENT_KEYS_V1["m.room.join_rules"] | {"allow"}
_MEMBER_KEYS_V9: Final = _CONTENT_KEYS_V1["m.room.member"] | {"join_authorised_via_users_server"}
_CONTENT_KEYS_V11: Final[Mapping[str, frozenset[str]]] = {
    **_CONTENT_KEYS_V1,
    "m.room.member": _MEMBER_KEYS_V9,
    "m.room.join_rules": _JOIN_RULES_KEYS_V8,
    "m.room.power_levels": _CONTENT_KEYS_V1["m.room.power_levels"] | {"invite"},
    "m.room.redaction": frozenset({"redacts"}),
}


def redact(data: Mapping[str, Any], room_version: RoomVersion) -> JsonDict:
    """Return a redacted deep copy of the event JSON ``data``; ``data`` is untouched.

    The result always has a ``content`` object (empty if nothing is kept), as every
    PDU must.
    """
    new_rules = room_version.updated_redaction_rules
    top_keys = _TOP_LEVEL_KEYS if new_rules else _TOP_LEVEL_KEYS_BEFORE_V11
    redacted = {
        key: copy.deepcopy(value)
        for key, value in data.items()
        if key in top_keys and key != "content"
    }
    content = data.get("content")
    if not isinstance(content, Mapping):
        content = {}
    redacted["content"] = copy.deepcopy(_redact_content(data.get("type"), content, room_version))
    return redacted


def redact_pdu(pdu: Pdu) -> Pdu:
    """The redacted form of ``pdu``, with the same event ID and room version.

    The event ID is unchanged because it is the reference hash, which is computed over
    the redacted event in the first place.
    """
    return Pdu(redact(pdu.data, pdu.room_version), pdu.event_id, pdu.room_version)


def _redact_content(
    event_type: object, content: Mapping[str, Any], room_version: RoomVersion
) -> JsonDict:
    new_rules = room_version.updated_redaction_rules
    if new_rules and event_type == "m.room.create":
        return dict(content)
    allowed = (
        _allowed_content_keys(event_type, room_version) if isinstance(event_type, str) else None
    )
    if allowed is None:
        return {}
    kept = {key: value for key, value in content.items() if key in allowed}
    if new_rules and event_type == "m.room.member":
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping) and "signed" in invite:
            kept["third_party_invite"] = {"signed": invite["signed"]}
    return kept


def _allowed_content_keys(event_type: str, room_version: RoomVersion) -> frozenset[str] | None:
    """The content keys a redaction keeps for ``event_type`` in ``room_version``."""
    if room_version.updated_redaction_rules:
        return _CONTENT_KEYS_V11.get(event_type)
    if event_type == "m.room.aliases":
        return _ALIASES_KEYS if room_version.special_case_aliases else None
    if event_type == "m.room.join_rules" and room_version.restricted_join_rule:
        return _JOIN_RULES_KEYS_V8
    if event_type == "m.room.member" and room_version.redaction_keeps_join_authoriser:
        return _MEMBER_KEYS_V9
    return _CONTENT_KEYS_V1.get(event_type)


def has_redact_power(
    sender: str, auth_state: Mapping[StateKey, Pdu], room_version: RoomVersion
) -> bool:
    """Rooms v3+ "Handling redactions", condition 1: the power level of ``sender`` in the
    room whose state is ``auth_state`` is at least the room's *redact level* (whatever
    the type of the redacted event)."""
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    redact_level = get_named_level(
        power_levels.content if power_levels is not None else None, "redact"
    )
    return get_user_power_level(sender, auth_state, room_version) >= redact_level


def redaction_takes_effect(
    redaction: Pdu,
    *,
    by_power: bool,
    original_room_id: str,
    original_sender: str,
    original_type: str,
) -> bool:
    """Whether the server applies ``redaction`` to the event it names (rooms v3+,
    "Handling redactions"), both events being known and valid.

    ``by_power``: condition 1 held (``has_redact_power``) in the state the redaction
    was authorised against; otherwise condition 2 must: the redaction's sender is on the
    server of the original's sender. A redaction never reaches into another room, and
    an ``m.room.create`` event is never redacted (Synapse ignores such redactions too:
    the room would lose its version and creators).

    Rooms v1 and v2 have no "Handling redactions": their authorization rule 11 allows
    a redaction by power or when the redacted event's ID has the redaction's event ID
    domain, and an allowed redaction takes effect; so condition 2 compares event ID
    domains there.
    """
    if original_room_id != redaction.room_id or original_type == "m.room.create":
        return False
    if by_power:
        return True
    if redaction.room_version.event_id_carried:
        redacts = redaction.redacts
        domain = server_name_of(redaction.event_id)
        return redacts is not None and domain != "" and domain == server_name_of(redacts)
    domain = server_name_of(redaction.sender)
    return domain != "" and domain == server_name_of(original_sender)
