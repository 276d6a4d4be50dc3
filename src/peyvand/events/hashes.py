"""Content hashes, reference hashes and event IDs.

Server-Server API, "Signing Events": "Calculating the content hash for an event" and
"Calculating the reference hash for an event"; rooms v3 and v4+ "Event IDs" (the event
ID is ``$`` + the standard (v3) or URL-safe (v4+) unpadded Base64 reference hash); rooms
v1/v2 "Event IDs" (``$opaque_id:domain``, chosen by the creating server and carried in
the event).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from peyvand.events.canonical_json import encode_canonical_json
from peyvand.events.redaction import redact
from peyvand.events.room_versions import EventIdFormat, RoomVersion
from peyvand.types import EventID, JsonDict, ServerName


def compute_content_hash(data: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical event without ``unsigned``, ``signatures`` and ``hashes``."""
    stripped = {
        key: value for key, value in data.items() if key not in ("unsigned", "signatures", "hashes")
    }
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(data: Mapping[str, Any]) -> JsonDict:
    """A copy of ``data`` whose ``hashes`` is ``{"sha256": <unpadded Base64 content hash>}``.

    ("Adding hashes and signatures to outgoing events".) Other hash algorithms already
    in ``hashes`` are kept.
    """
    event = dict(data)
    hashes = event.get("hashes")
    event["hashes"] = {
        **(hashes if isinstance(hashes, Mapping) else {}),
        "sha256": encode_base64(compute_content_hash(data)),
    }
    return event


def check_content_hash(data: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` matches the event's content hash.

    ("Validating hashes and signatures on received events": on a mismatch the receiver
    keeps only the redacted copy of the event.)
    """
    hashes = data.get("hashes")
    claimed = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        return False
    try:
        expected = decode_base64(claimed)
    except ValueError:  # binascii.Error, or non-ASCII text
        return False
    return hmac.compare_digest(expected, compute_content_hash(data))


def compute_reference_hash(data: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 of the canonical redacted event without ``signatures`` and ``unsigned``."""
    redacted = redact(data, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def reference_hashes(events: Iterable[Mapping[str, Any]], room_version: RoomVersion) -> JsonDict:
    """The Event Hash of each event (``{"sha256": <unpadded Base64 reference hash>}``) by
    its ID, as events of rooms v1/v2 cite their ``prev_events`` and ``auth_events``
    (``pdu_v1.yaml``: "Event IDs and reference hashes"; Synapse sends the same)."""
    return {
        compute_event_id(data, room_version): {
            "sha256": encode_base64(compute_reference_hash(data, room_version))
        }
        for data in events
    }


def compute_event_id(data: Mapping[str, Any], room_version: RoomVersion) -> EventID:
    """The event's ID: ``$`` + unpadded Base64 of the reference hash, URL-safe from v4;
    in v1/v2 the ``event_id`` the event carries (``ValueError`` if it has none)."""
    if room_version.event_id_format is EventIdFormat.CARRIED:
        event_id = data.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("this room version's events carry their 'event_id'")
        return EventID(event_id)
    urlsafe = room_version.event_id_format is EventIdFormat.HASH_URLSAFE
    return EventID("$" + encode_base64(compute_reference_hash(data, room_version), urlsafe=urlsafe))


def new_carried_event_id(data: Mapping[str, Any], server_name: ServerName) -> EventID:
    """A v1/v2 event ID, ``$opaque_id:server_name``, for an event this server creates.

    Rooms v1 "Event IDs": ``opaque_id`` only has to be unique here. It is derived from
    the SHA-256 of the event's canonical JSON (which holds its prev events, timestamp and
    content), so it is deterministic and as unique as the events are.
    """
    stripped = {k: v for k, v in data.items() if k not in ("event_id", "signatures", "unsigned")}
    digest = hashlib.sha256(encode_canonical_json(stripped)).digest()
    return EventID(f"${encode_base64(digest[:18], urlsafe=True)}:{server_name}")
