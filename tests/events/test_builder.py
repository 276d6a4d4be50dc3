"""Building signed PDUs for rooms v10-v12 (rooms "Event format"; Client-Server API,
"Size limits"; Appendices, "Room IDs")."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from peyvand.events.builder import (
    MAX_KEY_SIZE,
    MAX_PDU_SIZE,
    EventTooLargeError,
    build_pdu,
    finalize_pdu,
    room_id_from_create_event_id,
)
from peyvand.events.canonical_json import MAX_DEPTH, encode_canonical_json
from peyvand.events.hashes import check_content_hash, compute_event_id
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.events.signing import SigningKey, get_verify_key, verify_event_signature
from peyvand.types import EventID, RoomID, ServerName, UserID

ALL = [ROOM_V10, ROOM_V11, ROOM_V12]
ids = [v.identifier for v in ALL]


def build(version: RoomVersion, key: SigningKey, **overrides: Any) -> Pdu:
    args: dict[str, Any] = {
        "room_id": RoomID("!r:x"),
        "event_type": "m.room.message",
        "sender": UserID("@u:x"),
        "content": {"body": "hi"},
        "prev_events": [EventID("$p")],
        "auth_events": [EventID("$a")],
        "depth": 3,
        "origin_server_ts": 1234,
        "origin_server_name": "x",
        "signing_key": key,
        **overrides,
    }
    return build_pdu(version, **args)


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_message_event(version: RoomVersion, signing_key: SigningKey) -> None:
    pdu = build(version, signing_key)
    data = dict(pdu.data)
    signatures = data.pop("signatures")
    hashes = data.pop("hashes")
    assert data == {
        "room_id": "!r:x",
        "type": "m.room.message",
        "sender": "@u:x",
        "content": {"body": "hi"},
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "depth": 3,
        "origin_server_ts": 1234,
    }
    assert set(hashes) == {"sha256"}
    assert set(signatures) == {"x"}
    assert pdu.room_version is version
    assert pdu.event_id == compute_event_id(pdu.data, version)
    assert check_content_hash(pdu.data)
    assert verify_event_signature(pdu.data, version, ServerName("x"), get_verify_key(signing_key))


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_state_event_has_state_key(version: RoomVersion, signing_key: SigningKey) -> None:
    pdu = build(version, signing_key, event_type="m.room.name", state_key="", content={})
    assert pdu.is_state() and pdu.state_key == ""
    assert "state_key" not in build(version, signing_key).data


def test_content_is_copied(signing_key: SigningKey) -> None:
    content: dict[str, Any] = {"info": {"w": 1}}
    pdu = build(ROOM_V11, signing_key, content=content)
    content["info"]["w"] = 2
    assert pdu.content == {"info": {"w": 1}}
    assert check_content_hash(pdu.data)


# --- room IDs ---------------------------------------------------------------------------


def test_v12_create_event_has_no_room_id(signing_key: SigningKey) -> None:
    pdu = build(
        ROOM_V12,
        signing_key,
        room_id=None,
        event_type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        prev_events=[],
        auth_events=[],
        depth=1,
    )
    assert "room_id" not in pdu.data
    assert pdu.room_id == room_id_from_create_event_id(pdu.event_id)
    assert pdu.room_id == "!" + pdu.event_id[1:]


@pytest.mark.parametrize("version", [ROOM_V10, ROOM_V11], ids=["10", "11"])
def test_create_event_before_v12_has_a_room_id(
    version: RoomVersion, signing_key: SigningKey
) -> None:
    create = {"event_type": "m.room.create", "state_key": "", "content": {}}
    assert build(version, signing_key, **create).data["room_id"] == "!r:x"
    with pytest.raises(ValueError, match="room_id is required"):
        build(version, signing_key, room_id=None, **create)


def test_v12_create_with_room_id_is_refused(signing_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="has no room_id"):
        build(ROOM_V12, signing_key, event_type="m.room.create", state_key="", content={})


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_other_events_need_a_room_id(version: RoomVersion, signing_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="room_id is required"):
        build(version, signing_key, room_id=None)
    # An m.room.create that is not the create event (state_key != "") is not exempt.
    with pytest.raises(ValueError, match="room_id is required"):
        build(version, signing_key, room_id=None, event_type="m.room.create", state_key="x")


@pytest.mark.parametrize("bad", ["", "$", "!abc", "abc"])
def test_room_id_from_create_event_id_refuses_non_event_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        room_id_from_create_event_id(EventID(bad))


# --- redactions -------------------------------------------------------------------------


def test_v10_redacts_is_top_level(signing_key: SigningKey) -> None:
    pdu = build(
        ROOM_V10,
        signing_key,
        event_type="m.room.redaction",
        content={"reason": "spam"},
        redacts=EventID("$bad"),
    )
    assert pdu.data["redacts"] == "$bad"
    assert pdu.content == {"reason": "spam"}
    assert pdu.redacts == "$bad"


@pytest.mark.parametrize("version", [ROOM_V11, ROOM_V12], ids=["11", "12"])
def test_v11_redacts_is_in_content(version: RoomVersion, signing_key: SigningKey) -> None:
    content = {"reason": "spam"}
    pdu = build(
        version,
        signing_key,
        event_type="m.room.redaction",
        content=content,
        redacts=EventID("$bad"),
    )
    assert "redacts" not in pdu.data
    assert pdu.content == {"reason": "spam", "redacts": "$bad"}
    assert content == {"reason": "spam"}
    assert pdu.redacts == "$bad"


def test_redacts_only_on_redactions(signing_key: SigningKey) -> None:
    with pytest.raises(ValueError, match=r"only m\.room\.redaction"):
        build(ROOM_V11, signing_key, redacts=EventID("$bad"))


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, 2**53, -(2**53), "\ud800"])
def test_non_canonical_content_is_refused(bad: object, signing_key: SigningKey) -> None:
    with pytest.raises(ValueError, match=r"content\.x") as info:
        build(ROOM_V11, signing_key, content={"x": [bad]})
    assert not isinstance(info.value, EventTooLargeError)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_content_nesting_limit_is_the_canonical_json_limit(signing_key: SigningKey) -> None:
    build(ROOM_V11, signing_key, content=nested(MAX_DEPTH))
    with pytest.raises(ValueError, match="nested too deeply"):
        build(ROOM_V11, signing_key, content=nested(MAX_DEPTH + 1))


def test_event_size_limit_is_inclusive(signing_key: SigningKey) -> None:
    # Hash and signature have fixed lengths, so size grows one byte per body character.
    overhead = len(encode_canonical_json(build(ROOM_V11, signing_key, content={"body": ""}).data))
    fits = "x" * (MAX_PDU_SIZE - overhead)
    pdu = build(ROOM_V11, signing_key, content={"body": fits})
    assert len(encode_canonical_json(pdu.data)) == MAX_PDU_SIZE
    with pytest.raises(EventTooLargeError, match="65536"):
        build(ROOM_V11, signing_key, content={"body": fits + "x"})


@pytest.mark.parametrize(
    ("field", "argument"),
    [("type", "event_type"), ("state_key", "state_key"), ("sender", "sender")],
)
def test_key_size_limits(field: str, argument: str, signing_key: SigningKey) -> None:
    prefix = "@" if field == "sender" else ""
    suffix = ":x" if field == "sender" else ""
    fits = prefix + "a" * (MAX_KEY_SIZE - len(prefix) - len(suffix)) + suffix
    build(ROOM_V11, signing_key, **{argument: fits})
    too_long = prefix + "é" * (MAX_KEY_SIZE // 2 + 1) + suffix  # 256+ UTF-8 bytes
    with pytest.raises(EventTooLargeError, match=f"'{field}'"):
        build(ROOM_V11, signing_key, **{argument: too_long})


def test_room_id_size_limit(signing_key: SigningKey) -> None:
    build(ROOM_V11, signing_key, room_id=RoomID("!" + "a" * 252 + ":x"))
    with pytest.raises(EventTooLargeError, match="'room_id'"):
        build(ROOM_V11, signing_key, room_id=RoomID("!" + "a" * 253 + ":x"))


def test_event_too_large_is_a_value_error() -> None:
    assert issubclass(EventTooLargeError, ValueError)


# --- finalize_pdu -----------------------------------------------------------------------


def test_finalize_pdu_drops_unsigned_and_event_id(signing_key: SigningKey) -> None:
    template = dict(build(ROOM_V11, signing_key).data)
    template.pop("signatures")
    template.pop("hashes")
    original = copy.deepcopy(template)
    pdu = finalize_pdu(
        {**template, "unsigned": {"age": 1}, "event_id": "$old"},
        ROOM_V11,
        origin_server_name=ServerName("x"),
        signing_key=signing_key,
    )
    assert "unsigned" not in pdu.data and "event_id" not in pdu.data
    assert pdu.event_id == build(ROOM_V11, signing_key).event_id
    assert template == original
