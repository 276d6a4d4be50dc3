"""The ``notification`` object sent to a push gateway (Push Gateway API,
``POST /_matrix/push/v1/notify``, push_notifier.yaml), built as Synapse builds it
(``synapse/push/httppusher.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.storage.pushers import PusherRow
from peyvand.types import JsonDict, UserID

EVENT_ID_ONLY = "event_id_only"


@dataclass(frozen=True, slots=True)
class RoomContext:
    """What the notification names besides the event: the room's ``m.room.name`` and
    ``m.room.canonical_alias`` and the sender's display name, when set."""

    room_name: str | None
    room_alias: str | None
    sender_display_name: str | None


def priority(event_type: str, tweaks: Mapping[str, Any]) -> str:
    """``prio``: ``high`` for an encrypted event (its effect is unknown) or one whose actions
    highlight or make a sound (a mention, a one-to-one message, a call invite with the
    default rules), ``low`` otherwise, as Synapse decides."""
    if event_type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound"):
        return "high"
    return "low"


def device(pusher: PusherRow, tweaks: Mapping[str, Any] | None) -> JsonDict:
    """The ``devices`` entry of the pusher: ``data`` as the client gave it minus ``url``;
    ``pushkey_ts`` in seconds."""
    entry: JsonDict = {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts // 1000,
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
    }
    if tweaks:
        entry["tweaks"] = dict(tweaks)
    return entry


def event_notification(
    pusher: PusherRow,
    pdu: Pdu,
    tweaks: Mapping[str, Any],
    badge: int,
    context: RoomContext,
    *,
    include_content: bool,
) -> JsonDict:
    """The notification of ``pdu`` for ``pusher``'s user. With ``data.format`` set to
    ``event_id_only`` only the event and room IDs, counts, priority and device (without
    tweaks) are sent."""
    prio = priority(pdu.type, tweaks)
    if pusher.data.get("format") == EVENT_ID_ONLY:
        return {
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "prio": prio,
            "counts": {"unread": badge},
            "devices": [device(pusher, None)],
        }
    notification: JsonDict = {
        # The notification's pre-r0 name for the event ID: Synapse still sends it, and
        # gateways written against it (and sytest) read it.
        "id": pdu.event_id,
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "type": pdu.type,
        "sender": pdu.sender,
        "prio": prio,
        "counts": {"unread": badge},
        "devices": [device(pusher, tweaks)],
    }
    if pdu.type == "m.room.member" and pdu.state_key is not None:
        membership = pdu.content.get("membership")
        if isinstance(membership, str):
            notification["membership"] = membership
        notification["user_is_target"] = pdu.state_key == UserID(pusher.user_id)
    if include_content and pdu.content:
        notification["content"] = pdu.content
    if context.sender_display_name:
        notification["sender_display_name"] = context.sender_display_name
    # The room's human-readable name, its canonical alias when it has no name, as Synapse
    # sends it (the alias also in its own field, as the Push Gateway API lists it).
    if room_name := context.room_name or context.room_alias:
        notification["room_name"] = room_name
    if context.room_alias:
        notification["room_alias"] = context.room_alias
    return notification


def counts_notification(pusher: PusherRow, badge: int) -> JsonDict:
    """A badge update (a read receipt lowered the count): counts and the device only."""
    return {"counts": {"unread": badge}, "devices": [device(pusher, None)]}
