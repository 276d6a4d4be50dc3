"""Validating PDUs received from other servers, before anything else looks at them.

Server-Server API, "Checks performed on receipt of a PDU":

1. "Is a valid event, otherwise it is dropped": ``parse_pdu`` checks the room version's
   event format ("Event format", schemas ``pdu_v1`` (v1, v2: the event carries its
   ``event_id``; ``prev_events``/``auth_events`` are ``[event_id, hashes]`` pairs),
   ``pdu_v3``/``pdu_v4`` (v3-v5), ``pdu_v6`` (v6-v10), ``pdu_v11``, ``pdu_v12``),
   canonical JSON values (rooms v6+ "Canonical JSON": a violation means "discarding of
   events over federation"; v1-v5 allow floats and any integer) and the size limits
   (Client-Server API, "Size limits"), and computes the event ID from the reference hash
   (v3+) or takes the one the event carries (v1, v2).
3. "Passes hash checks, otherwise it is redacted before being processed further":
   ``check_content_hash_or_redact``.

Step 2 (signatures) is ``signing.verify_event_signature`` with keys the caller fetched,
for each server ``required_signatures`` names.

Beyond the spec, as Synapse does (``event_from_pdu_json``, ``_strip_unsigned_values``):
``unsigned`` is covered by neither hashes nor signatures, so any server relaying the event
can change it; it is therefore never a reason to drop an event. Only ``age`` (all events)
and ``invite_room_state``/``knock_room_state`` (``m.room.member``) are kept, and only when
their values are themselves clean; everything else in it is discarded before the checks.
Also beyond the spec: no string or object key may contain U+0000 (PostgreSQL ``TEXT``
cannot store it).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final

from peyvand.events.builder import MAX_KEY_SIZE, MAX_PDU_SIZE, room_id_from_create_event_id
from peyvand.events.canonical_json import (
    MAX_DEPTH,
    MAX_INT,
    check_canonical_json_values,
    encode_canonical_json,
)
from peyvand.events.hashes import check_content_hash, compute_event_id
from peyvand.events.pdu import Pdu
from peyvand.events.redaction import redact_pdu
from peyvand.events.room_versions import RoomVersion
from peyvand.types import (
    EventID,
    JsonDict,
    ServerName,
    is_valid_server_name,
    is_valid_user_id,
    server_name_of,
    split_id,
)

# Rooms v4+ "Event format" (auth_events_prev_events_v4.yaml).
MAX_PREV_EVENTS: Final = 20
MAX_AUTH_EVENTS: Final = 10
MAX_EVENT_ID_SIZE: Final = 255  # Appendices, "Event IDs"

# The unsigned keys kept from a received PDU (Synapse's whitelist).
_UNSIGNED_KEYS: Final = ("age",)
_UNSIGNED_KEYS_MEMBER: Final = ("age", "invite_room_state", "knock_room_state")

# "!" or "$" + the URL-safe unpadded Base64 of a SHA-256 (43 characters, the last one
# carrying 4 bits): a v12 room ID (Appendices, "Room IDs") and a v4+ event ID.
_HASH_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


class InvalidPdu(ValueError):
    """The PDU is malformed for its room version; the server drops it (never stored)."""


def parse_pdu(data: object, room_version: RoomVersion, *, room_id: str | None = None) -> Pdu:
    """A ``Pdu`` for JSON received from another server, or ``InvalidPdu``.

    ``room_id`` is the room the request names (e.g. in the URL); the event must be in it.
    The returned PDU owns a deep copy of ``data`` (with ``unsigned`` filtered, see the
    module docstring); from v3 its event ID is computed, never read from ``data``. Hashes
    and signatures are not checked here.
    """
    if not isinstance(data, dict):
        raise InvalidPdu(f"a PDU must be a JSON object, not {type(data).__name__}")
    if room_version.event_id_carried:
        _check_carried_event_id(data.get("event_id"))
    elif "event_id" in data:
        # Rooms v3+: the event ID is the reference hash and is not part of the event.
        raise InvalidPdu("'event_id' is not allowed in this room version's event format")
    event: JsonDict = {key: value for key, value in data.items() if key != "unsigned"}
    unsigned = _filter_unsigned(data.get("type"), data.get("unsigned"))
    if unsigned is not None:
        event["unsigned"] = unsigned

    # Content may nest MAX_DEPTH deep, as in builder.py.
    _check_clean(event, MAX_DEPTH + 1, strict=room_version.strict_canonicaljson)
    if len(encode_canonical_json(event)) > MAX_PDU_SIZE:
        raise InvalidPdu(f"event is larger than {MAX_PDU_SIZE} bytes")
    _check_fields(event, room_version)
    event_id = compute_event_id(event, room_version)
    _check_room_id(event, room_version, room_id, event_id)
    return Pdu(copy.deepcopy(event), event_id, room_version)


def required_signatures(pdu: Pdu) -> list[tuple[ServerName, int]]:
    """The servers whose signatures ``pdu`` needs, each with the minimum ``valid_until_ts``
    of the key that signed it (Server-Server API, "Validating hashes and signatures on
    received events").

    The sender's server always; in v1/v2 also the server of the event ID's domain (rooms
    v3 "Authorization rules": "In room versions 1 and 2, events need a signature from the
    domain of the event_id"); from v8 the server of a restricted join's authorising user.
    From v5 the key must be valid at the event's ``origin_server_ts`` (rooms v5 "Signing
    key validity period"); before, any key of the server will do (0).
    """
    version = pdu.room_version
    servers = {server_name_of(pdu.sender)}
    if version.event_id_carried:
        servers.add(server_name_of(pdu.event_id))
    via = pdu.content.get("join_authorised_via_users_server")
    if (
        version.restricted_join_rule
        and pdu.type == "m.room.member"
        and pdu.membership == "join"
        and isinstance(via, str)
    ):
        servers.add(server_name_of(via))
    valid_at = pdu.origin_server_ts if version.enforce_key_validity else 0
    return [(server, valid_at) for server in sorted(servers) if server]


def check_content_hash_or_redact(pdu: Pdu) -> tuple[Pdu, bool]:
    """``(pdu, True)`` if its content hash matches, else ``(redacted pdu, False)``.

    Step 3 of "Checks performed on receipt of a PDU": "Passes hash checks, otherwise it is
    redacted before being processed further". The redacted PDU keeps the event ID (the
    reference hash is computed over the redacted event anyway).
    """
    if check_content_hash(pdu.data):
        return pdu, True
    return redact_pdu(pdu), False


def _filter_unsigned(event_type: object, unsigned: object) -> JsonDict | None:
    if not isinstance(unsigned, dict):
        return None
    allowed = _UNSIGNED_KEYS_MEMBER if event_type == "m.room.member" else _UNSIGNED_KEYS
    kept: JsonDict = {}
    for key in allowed:
        if key not in unsigned:
            continue
        value = unsigned[key]
        if key == "age" and not _is_int(value):
            continue
        try:
            _check_clean(value, MAX_DEPTH - 1)
        except InvalidPdu:
            continue
        kept[key] = value
    return kept


def _check_carried_event_id(event_id: object) -> None:
    """Rooms v1/v2 "Event IDs": ``$opaque_id:domain``, at most 255 bytes (Appendices)."""
    if (
        not isinstance(event_id, str)
        or not event_id.startswith("$")
        or len(event_id.encode()) > MAX_EVENT_ID_SIZE
    ):
        raise InvalidPdu("this room version's events carry an 'event_id'")
    opaque_id, sep, domain = event_id[1:].partition(":")
    if not sep or not opaque_id or not is_valid_server_name(domain):
        raise InvalidPdu("'event_id' is not of the form $opaque_id:domain")


def _check_clean(value: object, max_depth: int, *, strict: bool = True) -> None:
    """Canonical JSON values only, nested at most ``max_depth`` deep, and no U+0000.

    Not ``strict`` (rooms v1-v5): floats and integers of any size are allowed too."""
    try:
        check_canonical_json_values(value, max_depth=max_depth, strict=strict)
    except ValueError as exc:
        raise InvalidPdu(str(exc)) from None
    # Bounded by max_depth now, so recursion is safe.
    if _contains_nul(value):
        raise InvalidPdu("strings and keys must not contain U+0000")


def _contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(event: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Required fields and their types (``pdu_base.yaml`` and the v4/v6 components)."""
    for key in ("type", "sender"):
        _require_str(event, key)
    for key in ("type", "state_key"):
        value = event.get(key)
        if isinstance(value, str) and len(value.encode()) > MAX_KEY_SIZE:
            raise InvalidPdu(f"'{key}' is longer than {MAX_KEY_SIZE} bytes")
    if "state_key" in event:
        _require_str(event, "state_key")
    if len(event["sender"].encode()) > MAX_KEY_SIZE:
        raise InvalidPdu(f"'sender' is longer than {MAX_KEY_SIZE} bytes")
    if not is_valid_user_id(event["sender"]):
        raise InvalidPdu("'sender' is not a valid user ID")

    if not _is_int(event.get("origin_server_ts")):
        raise InvalidPdu("'origin_server_ts' must be an integer")
    depth: Any = event.get("depth")
    # depth_v6.yaml: at most 2**53 - 1 (servers at the limit keep using the limit).
    if not _is_int(depth) or not 0 <= depth <= MAX_INT:
        raise InvalidPdu(f"'depth' must be an integer in [0, {MAX_INT}]")
    for key in ("content", "hashes", "signatures"):
        if not isinstance(event.get(key), dict):
            raise InvalidPdu(f"'{key}' must be an object")
    if not isinstance(event["hashes"].get("sha256"), str):
        raise InvalidPdu("'hashes' must have a 'sha256' string")
    for server, signatures in event["signatures"].items():
        if not isinstance(signatures, dict) or not all(
            isinstance(signature, str) for signature in signatures.values()
        ):
            raise InvalidPdu(f"signatures of {server!r} must be an object of strings")

    pairs = room_version.event_id_carried
    _check_event_ids(event, "prev_events", MAX_PREV_EVENTS, pairs=pairs)
    _check_event_ids(event, "auth_events", MAX_AUTH_EVENTS, pairs=pairs)
    # pdu_v6.yaml (v10): a top-level 'redacts' string. From v11 'redacts' is part of the
    # m.room.redaction content, whose schema is the auth rules' business, not the format's.
    if not room_version.redacts_in_content and "redacts" in event:
        _require_str(event, "redacts")


def _require_str(event: Mapping[str, Any], key: str) -> None:
    if not isinstance(event.get(key), str):
        raise InvalidPdu(f"'{key}' must be a string")


def _check_event_ids(event: Mapping[str, Any], key: str, limit: int, *, pairs: bool) -> None:
    """An array of at most ``limit`` event IDs, or (``pairs``, v1/v2) of
    ``[event_id, hashes]`` pairs (``pdu_v1.yaml``; the hashes are not used)."""
    value = event.get(key)
    if not isinstance(value, list):
        raise InvalidPdu(f"'{key}' must be an array")
    if len(value) > limit:
        raise InvalidPdu(f"'{key}' has more than {limit} entries")
    for entry in value:
        if pairs:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
                raise InvalidPdu(f"'{key}' must hold [event_id, hashes] pairs")
            item = entry[0]
        else:
            item = entry
        if (
            not isinstance(item, str)
            or not item.startswith("$")
            or len(item.encode()) > MAX_EVENT_ID_SIZE
        ):
            raise InvalidPdu(f"'{key}' must hold event IDs")


def _check_room_id(
    event: Mapping[str, Any], room_version: RoomVersion, expected: str | None, event_id: EventID
) -> None:
    """``room_id`` per ``room_id_before_v12.yaml`` / ``room_id_v12.yaml``; it must match
    the room the request named."""
    is_create = event["type"] == "m.room.create" and event.get("state_key") == ""
    if room_version.room_id_is_create_event_hash and is_create:
        # Rooms v12: the create event has no room_id; the room ID is its event ID.
        if "room_id" in event:
            raise InvalidPdu("this room version's m.room.create event has no 'room_id'")
        actual = room_id_from_create_event_id(event_id)
    else:
        _require_str(event, "room_id")
        actual = event["room_id"]
        if len(actual.encode()) > MAX_KEY_SIZE:
            raise InvalidPdu(f"'room_id' is longer than {MAX_KEY_SIZE} bytes")
        if room_version.room_id_is_create_event_hash:
            if not (actual.startswith("!") and _HASH_ID_RE.fullmatch(actual, 1)):
                raise InvalidPdu("'room_id' is not a room ID of this room version")
        else:
            try:
                split_id(actual, "!")
            except ValueError:
                raise InvalidPdu("'room_id' is not a valid room ID") from None
    if expected is not None and actual != expected:
        raise InvalidPdu(f"event is in room {actual!r}, not {expected!r}")
