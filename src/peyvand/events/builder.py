"""Assembling, hashing and signing new PDUs for room versions 1-12.

Server-Server API, "Signing Events" > "Adding hashes and signatures to outgoing events";
the PDU shape is each version's "Event format" (``pdu_v1`` ... ``pdu_v12``): no ``origin``
(optional before v11, and Synapse omits it too); in v1/v2 the event carries its
``event_id`` and ``prev_events``/``auth_events`` are ``[event_id, hashes]`` pairs, the
hashes being the cited event's reference hash (``hashes.reference_hashes``; ``{}`` for an
event the caller could not give, as no receiver checks them); ``redacts`` is top-level
before v11 and in ``content`` from v11; in v12 ``m.room.create`` has no ``room_id`` because
the room ID is derived from its event ID (Appendices, "Room IDs").

Errors, which callers map to Matrix error codes:

    ValueError                  malformed input or non-canonical content -> M_BAD_JSON
     └── EventTooLargeError     over a size limit ("Size limits")         -> M_TOO_LARGE
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from peyvand.events.canonical_json import (
    MAX_DEPTH,
    check_canonical_json_values,
    encode_canonical_json,
)
from peyvand.events.hashes import add_content_hash, compute_event_id, new_carried_event_id
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import RoomVersion
from peyvand.events.signing import SigningKey, sign_event
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

# Client-Server API, "Size limits".
MAX_PDU_SIZE: Final = 65536
MAX_KEY_SIZE: Final = 255  # bytes, for sender, room_id, type and state_key


class EventTooLargeError(ValueError):
    """The event, or one of its size-limited keys, exceeds the spec's size limits."""


def build_pdu(
    room_version: RoomVersion,
    *,
    room_id: RoomID | None,
    event_type: str,
    sender: UserID,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_events: Sequence[EventID],
    auth_events: Sequence[EventID],
    depth: int,
    origin_server_ts: int,
    redacts: EventID | None = None,
    origin_server_name: ServerName,
    signing_key: SigningKey,
    cited_hashes: Mapping[str, Any] | None = None,
) -> Pdu:
    """Build a signed PDU for a locally created event.

    ``room_id`` must be ``None`` exactly for a v12 ``m.room.create``. ``redacts`` is only
    for ``m.room.redaction`` and is placed where ``room_version`` wants it. Choosing
    ``auth_events`` (which in v12 never include the create event) is the caller's job, and
    so, in v1/v2, is giving the ``cited_hashes`` of the prev and auth events
    (``hashes.reference_hashes``). Raises ``EventTooLargeError`` or ``ValueError``, see
    the module docstring.
    """
    is_create = event_type == "m.room.create" and state_key == ""
    room_id_from_hash = is_create and room_version.room_id_is_create_event_hash
    if room_id_from_hash and room_id is not None:
        raise ValueError("this room version's m.room.create event has no room_id")
    if not room_id_from_hash and room_id is None:
        raise ValueError("room_id is required")
    if redacts is not None and event_type != "m.room.redaction":
        raise ValueError("only m.room.redaction events have redacts")

    event: JsonDict = {
        "type": event_type,
        "sender": sender,
        "content": copy.deepcopy(dict(content)),
        "prev_events": event_references(room_version, prev_events, cited_hashes),
        "auth_events": event_references(room_version, auth_events, cited_hashes),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        event["room_id"] = room_id
    if state_key is not None:
        event["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            event["content"]["redacts"] = redacts
        else:
            event["redacts"] = redacts
    return finalize_pdu(
        event,
        room_version,
        origin_server_name=origin_server_name,
        signing_key=signing_key,
    )


def finalize_pdu(
    data: Mapping[str, Any],
    room_version: RoomVersion,
    *,
    origin_server_name: ServerName,
    signing_key: SigningKey,
) -> Pdu:
    """Hash, sign and wrap an assembled event (``build_pdu``, or a ``make_join`` template).

    Drops any ``unsigned`` and ``event_id``, checks the values are canonical (content may
    nest ``MAX_DEPTH`` deep), gives a v1/v2 event its new event ID, adds the content hash
    and this server's signature, enforces the size limits and computes the event ID.
    """
    event = {key: value for key, value in data.items() if key not in ("unsigned", "event_id")}
    check_canonical_json_values(event, max_depth=MAX_DEPTH + 1)
    _check_key_sizes(event)
    if room_version.event_id_carried:
        event["event_id"] = new_carried_event_id(event, origin_server_name)
    event = sign_event(add_content_hash(event), room_version, origin_server_name, signing_key)
    if len(encode_canonical_json(event)) > MAX_PDU_SIZE:
        raise EventTooLargeError(f"event is larger than {MAX_PDU_SIZE} bytes")
    return Pdu(event, compute_event_id(event, room_version), room_version)


def event_references(
    room_version: RoomVersion,
    event_ids: Sequence[EventID],
    cited_hashes: Mapping[str, Any] | None = None,
) -> list[Any]:
    """``prev_events``/``auth_events`` in the version's format: IDs, or in v1/v2
    ``[event_id, hashes]`` pairs, the hashes from ``cited_hashes`` (``{}`` if not there)."""
    if room_version.event_id_carried:
        known = cited_hashes or {}
        return [[event_id, copy.deepcopy(known.get(event_id, {}))] for event_id in event_ids]
    return list(event_ids)


def room_id_from_create_event_id(event_id: EventID) -> RoomID:
    """The v12 room ID: the create event's ID with ``!`` for ``$`` (Appendices, "Room IDs")."""
    if not event_id.startswith("$") or len(event_id) < 2:
        raise ValueError(f"not an event ID: {event_id!r}")
    return RoomID("!" + event_id[1:])


def _check_key_sizes(event: Mapping[str, Any]) -> None:
    for key in ("sender", "room_id", "type", "state_key"):
        value = event.get(key)
        if isinstance(value, str) and len(value.encode()) > MAX_KEY_SIZE:
            raise EventTooLargeError(f"'{key}' is longer than {MAX_KEY_SIZE} bytes")
