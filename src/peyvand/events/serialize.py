"""PDUs in the client formats (Client-Server API, "Room event format": ``ClientEvent``,
and ``ClientEventWithoutRoomID`` as used by ``/sync``).

For ``m.room.redaction`` events ``redacts`` is served both at the top level and in
``content`` whatever the room version (rooms v11, "Moving the ``redacts`` property of
``m.room.redaction`` events to a ``content`` property"), so old and new clients both find it.

A redacted event is serialized by passing its redacted PDU
(``redaction.redact_pdu``) and ``unsigned={"redacted_because": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.types import JsonDict


def client_event(
    pdu: Pdu,
    *,
    unsigned: Mapping[str, Any] | None = None,
    include_room_id: bool = True,
) -> JsonDict:
    """The ``ClientEvent`` (or, without ``include_room_id``, ``ClientEventWithoutRoomID``).

    ``unsigned`` is the per-request data (``age``, ``prev_content``, ``membership``,
    ``redacted_because``, ``transaction_id``...) and is included only when given. The
    result shares nested content values with ``pdu``: serialize it, do not mutate it.
    """
    event: JsonDict = {
        "event_id": pdu.event_id,
        "type": pdu.type,
        "sender": pdu.sender,
        "origin_server_ts": pdu.origin_server_ts,
        "content": dict(pdu.content),
    }
    if include_room_id:
        event["room_id"] = pdu.room_id
    if pdu.is_state():
        event["state_key"] = pdu.state_key
    if pdu.type == "m.room.redaction" and (redacts := pdu.redacts) is not None:
        event["redacts"] = redacts
        event["content"]["redacts"] = redacts
    if unsigned is not None:
        event["unsigned"] = dict(unsigned)
    return event


def well_formed_stripped_state(events: Sequence[object]) -> list[JsonDict]:
    """The entries of a stripped state list another server sent (``invite_room_state``,
    ``knock_room_state``) that are stripped state events: an object with a string
    ``type`` and ``state_key``, an object ``content`` and a string ``sender`` if any
    ("Stripped state"; older servers leave it out); the others are dropped, so what is
    kept can be read and served back as is."""
    return [
        e
        for e in events
        if isinstance(e, dict)
        and isinstance(e.get("type"), str)
        and isinstance(e.get("state_key"), str)
        and isinstance(e.get("content"), dict)
        and isinstance(e.get("sender", ""), str)
    ]


def invite_stripped_state(
    invite_state: Sequence[object], user_id: str, invite: Mapping[str, Any], sender: str
) -> list[JsonDict]:
    """What a client is shown of an invite to a room on another server: the stripped
    state its server sent (``well_formed_stripped_state``) with the user's own member
    event replaced by the ``invite`` PDU's content and ``sender``."""
    events: list[JsonDict] = [
        {key: e[key] for key in ("type", "state_key", "content", "sender") if key in e}
        for e in well_formed_stripped_state(invite_state)
        if e["type"] != "m.room.member" or e["state_key"] != user_id
    ]
    content = invite.get("content")
    events.append(
        {
            "type": "m.room.member",
            "state_key": user_id,
            "content": content if isinstance(content, dict) else {},
            "sender": sender,
        }
    )
    return events


def stripped_state_event(pdu: Pdu) -> JsonDict:
    """``pdu`` as a stripped state event (Client-Server API, "Stripped state": ``type``,
    ``state_key``, ``content``, ``sender``), as invites and knocks carry the room's state."""
    return {
        "type": pdu.type,
        "state_key": pdu.state_key,
        "content": dict(pdu.content),
        "sender": pdu.sender,
    }
