"""The redaction algorithm (Client-Server API, "Redactions"; per room version).

Rooms v10 use the v9 rules (rooms/fragments/v9-redactions.md); v11 changed them
(rooms/fragments/v11-redactions.md) and v12 uses the v11 rules unchanged. The differences
are driven by ``RoomVersion.updated_redaction_rules``:

* top level: ``origin``, ``membership`` and ``prev_state`` are no longer kept;
* ``m.room.create`` keeps its whole content (not just ``creator``);
* ``m.room.power_levels`` also keeps ``invite``;
* ``m.room.member`` also keeps ``third_party_invite.signed``;
* ``m.room.redaction`` keeps ``redacts`` in content.

``unsigned`` is not among the kept keys: client-facing data such as
``redacted_because`` is added by the serializer, outside the PDU.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import RoomVersion
from peyvand.types import JsonDict

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

_CONTENT_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
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
_CONTENT_KEYS_V11: Final[Mapping[str, frozenset[str]]] = {
    **_CONTENT_KEYS,
    "m.room.power_levels": _CONTENT_KEYS["m.room.power_levels"] | {"invite"},
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
    redacted["content"] = copy.deepcopy(_redact_content(data.get("type"), content, new_rules))
    return redacted


def redact_pdu(pdu: Pdu) -> Pdu:
    """The redacted form of ``pdu``, with the same event ID and room version.

    The event ID is unchanged because it is the reference hash, which is computed over
    the redacted event in the first place.
    """
    return Pdu(redact(pdu.data, pdu.room_version), pdu.event_id, pdu.room_version)


def _redact_content(event_type: object, content: Mapping[str, Any], new_rules: bool) -> JsonDict:
    if new_rules and event_type == "m.room.create":
        return dict(content)
    rules = _CONTENT_KEYS_V11 if new_rules else _CONTENT_KEYS
    allowed = rules.get(event_type) if isinstance(event_type, str) else None
    if allowed is None:
        return {}
    kept = {key: value for key, value in content.items() if key in allowed}
    if new_rules and event_type == "m.room.member":
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping) and "signed" in invite:
            kept["third_party_invite"] = {"signed": invite["signed"]}
    return kept
