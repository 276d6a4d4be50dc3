"""Rules 1 (m.room.create), 2 (v12 room ID) and 4 (m.federate), per room version."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.auth_room import ALICE, BOB, AuthRoom
from peyvand.events.auth import AuthError, check_auth_rules, room_creators
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.types import EventID


def create_event(version: RoomVersion, **changes: Any) -> Pdu:
    content: dict[str, Any] = {"room_version": version.identifier}
    if not version.implicit_room_creator:
        content["creator"] = ALICE
    data: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "sender": ALICE,
        "content": content,
        "prev_events": [],
        "auth_events": [],
    }
    if not version.room_id_is_create_event_hash:
        data["room_id"] = "!room:a.test"
    data.update(changes)
    return Pdu(data, EventID("$create"), version)


def rule_of(pdu: Pdu) -> str:
    with pytest.raises(AuthError) as info:
        check_auth_rules(pdu, {})
    return info.value.rule


# 1. m.room.create ------------------------------------------------------------------------


def test_1_5_valid_create_allowed(version: RoomVersion) -> None:
    check_auth_rules(create_event(version), {})


def test_1_1_create_with_prev_events_rejected(version: RoomVersion) -> None:
    assert rule_of(create_event(version, prev_events=["$x"])) == "1.1"


@pytest.mark.parametrize("version", [ROOM_V10, ROOM_V11], ids=["v10", "v11"])
def test_1_2_create_room_id_domain_must_match_sender(version: RoomVersion) -> None:
    assert rule_of(create_event(version, room_id="!room:b.test")) == "1.2"


def test_1_2_v12_create_with_room_id_rejected() -> None:
    assert rule_of(create_event(ROOM_V12, room_id="!create")) == "1.2"


def test_1_3_unknown_room_version_rejected(version: RoomVersion) -> None:
    pdu = create_event(version, content={"room_version": "nope", "creator": ALICE})
    assert rule_of(pdu) == "1.3"


def test_1_4_v10_create_without_creator_rejected() -> None:
    assert rule_of(create_event(ROOM_V10, content={"room_version": "10"})) == "1.4"


def test_1_4_v11_create_without_creator_allowed() -> None:
    check_auth_rules(create_event(ROOM_V11, content={"room_version": "11"}), {})


@pytest.mark.parametrize(
    "additional",
    ["@bob:b.test", [1], ["bob"], ["@bob"], [None], ["@" + "b" * 250 + ":b.test"], {"a": 1}],
)
def test_1_4_v12_invalid_additional_creators_rejected(additional: object) -> None:
    pdu = create_event(ROOM_V12, content={"room_version": "12", "additional_creators": additional})
    assert rule_of(pdu) == "1.4"


@given(
    st.lists(st.from_regex(r"@[a-z0-9._=/+-]{1,20}:[a-z]{1,10}\.test", fullmatch=True), max_size=5)
)
def test_1_4_v12_valid_additional_creators_allowed(additional: list[str]) -> None:
    pdu = create_event(ROOM_V12, content={"room_version": "12", "additional_creators": additional})
    check_auth_rules(pdu, {})
    assert room_creators(pdu) == {ALICE, *additional}


def test_room_creators_per_version() -> None:
    assert room_creators(create_event(ROOM_V10, sender=BOB)) == {ALICE}  # content.creator
    assert room_creators(create_event(ROOM_V11, content={"additional_creators": [BOB]})) == {ALICE}
    v12 = create_event(ROOM_V12, content={"additional_creators": [BOB]})
    assert room_creators(v12) == {ALICE, BOB}


# 2. v12: the room ID is the create event's ID ---------------------------------------------


def test_2_v12_room_id_must_name_the_create_event() -> None:
    room = AuthRoom(ROOM_V12)
    room.set_join_rule("public")
    room.allows(room.member(BOB, "join"))
    room.rejects(room.event("m.room.message", ALICE, room_id="!SomeOtherRoom"), "2")
    room.rejects(room.event("m.room.message", ALICE, room_id="$" + room.room_id[1:]), "2")


def test_2_v12_rejected_create_event_rejects_everything() -> None:
    room = AuthRoom(ROOM_V12)
    room.add(Pdu(dict(room.create.data), room.create.event_id, ROOM_V12, rejected_reason="x"))
    room.rejects(room.event("m.room.message", ALICE), "2")


def test_missing_create_event_rejected_by_2_or_2_4(version: RoomVersion) -> None:
    room = AuthRoom(version)
    del room.state[("m.room.create", "")]
    room.rejects(room.event("m.room.message", ALICE), "2" if version is ROOM_V12 else "3.4")


# 4. m.federate ---------------------------------------------------------------------------


def test_4_unfederated_room_rejects_other_servers(
    make_room: type[AuthRoom], version: RoomVersion
) -> None:
    room = make_room(version, join_rule="public", create_content={"m.federate": False})
    room.rejects(room.member(BOB, "join"), "4")
    room.allows(room.member("@dave:a.test", "join"))


def test_4_federate_true_or_absent_allows_other_servers(
    make_room: type[AuthRoom], version: RoomVersion
) -> None:
    room = make_room(version, join_rule="public", create_content={"m.federate": True})
    room.allows(room.member(BOB, "join"))
