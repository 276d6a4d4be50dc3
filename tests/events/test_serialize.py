"""Client formats (Client-Server API, "Room event format": ClientEvent and
ClientEventWithoutRoomID; rooms v11 on serving ``redacts``)."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.events.pdu import Pdu
from peyvand.events.redaction import redact_pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.events.serialize import client_event
from peyvand.types import EventID

ALL = [ROOM_V10, ROOM_V11, ROOM_V12]
ids = [v.identifier for v in ALL]


def pdu(version: RoomVersion = ROOM_V11, **fields: Any) -> Pdu:
    data = {
        "room_id": "!r:x",
        "type": "m.room.message",
        "sender": "@u:x",
        "content": {"body": "hi"},
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "depth": 3,
        "origin_server_ts": 1234,
        "hashes": {"sha256": "h"},
        "signatures": {"x": {"ed25519:1": "s"}},
        **fields,
    }
    # A field passed as None is left out.
    return Pdu({k: v for k, v in data.items() if v is not None}, EventID("$e"), version)


def test_message_event() -> None:
    assert client_event(pdu()) == {
        "event_id": "$e",
        "type": "m.room.message",
        "sender": "@u:x",
        "origin_server_ts": 1234,
        "content": {"body": "hi"},
        "room_id": "!r:x",
    }


def test_without_room_id_and_with_unsigned() -> None:
    unsigned = {"age": 5, "transaction_id": "t1"}
    event = client_event(pdu(), unsigned=unsigned, include_room_id=False)
    assert "room_id" not in event
    assert event["unsigned"] == unsigned
    assert event["unsigned"] is not unsigned


def test_state_key_is_present_exactly_for_state_events() -> None:
    assert client_event(pdu(type="m.room.name", state_key=""))["state_key"] == ""
    assert client_event(pdu(type="m.room.member", state_key="@u:x"))["state_key"] == "@u:x"
    assert "state_key" not in client_event(pdu())


def test_v12_create_event_gets_its_derived_room_id() -> None:
    create = pdu(ROOM_V12, type="m.room.create", state_key="", content={}, room_id=None)
    assert "room_id" not in create.data
    assert client_event(create)["room_id"] == "!e"


def test_v10_redaction_serves_redacts_in_both_places() -> None:
    event = client_event(pdu(ROOM_V10, type="m.room.redaction", redacts="$bad", content={}))
    assert event["redacts"] == "$bad"
    assert event["content"] == {"redacts": "$bad"}


@pytest.mark.parametrize("version", [ROOM_V11, ROOM_V12], ids=["11", "12"])
def test_v11_redaction_serves_redacts_in_both_places(version: RoomVersion) -> None:
    source = pdu(version, type="m.room.redaction", content={"redacts": "$bad", "reason": "r"})
    event = client_event(source)
    assert event["redacts"] == "$bad"
    assert event["content"] == {"redacts": "$bad", "reason": "r"}
    assert source.content == {"redacts": "$bad", "reason": "r"}


def test_redacts_is_not_added_to_other_events() -> None:
    event = client_event(pdu(ROOM_V11, content={"redacts": "$x"}))
    assert "redacts" not in event


def test_serializing_does_not_touch_the_pdu() -> None:
    source = pdu(ROOM_V10, type="m.room.redaction", redacts="$bad", content={"reason": "r"})
    client_event(source)["content"]["extra"] = 1
    assert source.content == {"reason": "r"}


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_redacted_event(version: RoomVersion) -> None:
    because = {"type": "m.room.redaction", "event_id": "$r", "sender": "@m:x"}
    event = client_event(redact_pdu(pdu(version)), unsigned={"redacted_because": because})
    assert event["content"] == {}
    assert event["unsigned"] == {"redacted_because": because}
    assert event["event_id"] == "$e"


def test_redacted_v10_redaction_has_no_redacts() -> None:
    source = pdu(ROOM_V10, type="m.room.redaction", redacts="$bad", content={"reason": "r"})
    event = client_event(redact_pdu(source))
    assert "redacts" not in event
    assert event["content"] == {}
