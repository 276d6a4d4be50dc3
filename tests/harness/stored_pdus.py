"""PDUs for storage's own contract tests: the shape storage keeps, hashes and signatures
left as placeholders (storage never checks either)."""

from __future__ import annotations

from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.types import EventID

VERSION = KNOWN_ROOM_VERSIONS["10"]


def stored_pdu(event_id: str, room_id: str, sender: str, event_type: str, **extra: Any) -> Pdu:
    """A version 10 PDU of ``room_id`` (``extra``: more of its fields, ``state_key`` or
    ``redacts`` say); a message has a body."""
    data: dict[str, Any] = {
        "type": event_type,
        "room_id": room_id,
        "sender": sender,
        "content": {"body": "words"} if event_type == "m.room.message" else {},
        "origin_server_ts": 1000,
        "depth": 2,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
        **extra,
    }
    return Pdu(data, EventID(event_id), VERSION)
