"""Rules 6-11 (v12 numbering; 5-10 in v10/v11): membership to send, third-party invites,
required power levels, user-owned state keys and m.room.power_levels; and the helpers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.auth_room import ALICE, BOB, CAROL, AuthRoom
from peyvand.events.auth import (
    AuthError,
    check_auth_rules,
    get_named_level,
    get_send_level,
    get_user_power_level,
)
from peyvand.events.room_versions import ROOM_V10, ROOM_V12, RoomVersion

# 6. Sender must be joined ------------------------------------------------------------------


def test_6_message_without_membership_rejected(room: AuthRoom) -> None:
    room.rejects(room.event("m.room.message", BOB, {"body": "hi"}), "6")


@pytest.mark.parametrize("membership", ["invite", "leave", "ban", "knock"])
def test_6_message_from_non_joined_member_rejected(room: AuthRoom, membership: str) -> None:
    room.set_membership(BOB, membership)
    room.rejects(room.event("m.room.message", BOB, {"body": "hi"}), "6")


def test_message_from_joined_member_allowed(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.allows(room.event("m.room.message", BOB, {"body": "hi"}))


# 7. m.room.third_party_invite ------------------------------------------------------------------


def test_7_1_third_party_invite_needs_invite_level(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_levels(invite=10, state_default=0)
    pdu = room.event("m.room.third_party_invite", BOB, {}, state_key="tok")
    room.rejects(pdu, "7.1")
    room.set_levels({BOB: 10}, invite=10, state_default=100)
    room.allows(pdu)  # allowed by 7.1 even though state_default is higher


# 8. Required power level ------------------------------------------------------------------------


def test_8_state_event_without_permission_rejected(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.rejects(room.event("m.room.name", BOB, {"name": "x"}, state_key=""), "8")
    room.allows(room.event("m.room.name", ALICE, {"name": "x"}, state_key=""))


@pytest.mark.parametrize(("level", "allowed"), [(49, False), (50, True), (51, True)])
def test_8_required_level_boundary(room: AuthRoom, level: int, allowed: bool) -> None:
    room.set_membership(BOB, "join")
    room.set_levels({BOB: level}, state_default=50)
    pdu = room.event("m.room.topic", BOB, {"topic": "x"}, state_key="")
    if allowed:
        room.allows(pdu)
    else:
        room.rejects(pdu, "8")


def test_8_events_override_and_events_default(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_levels({BOB: 20}, events_default=10, events={"m.room.name": 20, "m.sticker": 30})
    room.allows(room.event("m.room.message", BOB))
    room.allows(room.event("m.room.name", BOB, {"name": "x"}, state_key=""))
    room.rejects(room.event("m.sticker", BOB), "8")
    room.set_levels({BOB: 5}, events_default=10)
    room.rejects(room.event("m.room.message", BOB), "8")


def test_8_state_default_applies_without_power_levels(
    make_room: type[AuthRoom], version: RoomVersion
) -> None:
    """The schema: state_default is 50 even when the room has no power levels event."""
    room = make_room(version, with_power_levels=False)
    room.set_membership(BOB, "join")
    room.allows(room.event("m.room.message", BOB))
    room.rejects(room.event("m.room.topic", BOB, {"topic": "x"}, state_key=""), "8")
    room.allows(room.event("m.room.topic", ALICE, {"topic": "x"}, state_key=""))


def test_redaction_needs_no_redact_level(room: AuthRoom) -> None:
    """No redaction rule in v10-v12: the redact level is not part of auth."""
    room.set_membership(BOB, "join")
    room.set_levels(redact=100)
    redacts = "$someone-elses-event"
    top_level: dict[str, Any] = {} if room.version.redacts_in_content else {"redacts": redacts}
    content = {"redacts": redacts} if room.version.redacts_in_content else {}
    room.allows(room.event("m.room.redaction", BOB, content, **top_level))
    room.set_levels(events={"m.room.redaction": 50})
    room.rejects(room.event("m.room.redaction", BOB, content, **top_level), "8")


# 9. State keys naming users ---------------------------------------------------------------------


def test_9_state_key_of_another_user_rejected(room: AuthRoom) -> None:
    room.set_membership(BOB, "join")
    room.set_levels({BOB: 50})
    room.rejects(room.event("m.custom", BOB, {}, state_key=CAROL), "9")
    room.allows(room.event("m.custom", BOB, {}, state_key=BOB))
    room.allows(room.event("m.custom", BOB, {}, state_key="not-a-user"))


# 10. m.room.power_levels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ({"ban": "50"}, "10.1"),
        ({"kick": 50.0}, "10.1"),
        ({"users_default": True}, "10.1"),
        ({"events": {"m.room.name": "50"}}, "10.2"),
        ({"events": []}, "10.2"),
        ({"notifications": {"room": 1.5}}, "10.2"),
        ({"users": {"@bob:b.test": "50"}}, "10.3"),
        ({"users": {"not-a-user": 50}}, "10.3"),
        ({"users": []}, "10.3"),
    ],
)
def test_10_1_to_10_3_malformed_power_levels_rejected(
    room: AuthRoom, content: dict[str, Any], rule: str
) -> None:
    room.rejects(room.event("m.room.power_levels", ALICE, content, state_key=""), rule)


def test_10_1_v10_non_integer_power_levels_rejected(make_room: type[AuthRoom]) -> None:
    room = make_room(ROOM_V10)
    pdu = room.event("m.room.power_levels", ALICE, {"state_default": "50"}, state_key="")
    assert room.rejects(pdu, "10.1").rule == "9.1"


def test_10_4_v12_power_levels_listing_a_creator_rejected(make_room: type[AuthRoom]) -> None:
    room = make_room(ROOM_V12, create_content={"additional_creators": [CAROL]})
    for creator in (ALICE, CAROL):
        pdu = room.event("m.room.power_levels", ALICE, {"users": {creator: 100}}, state_key="")
        room.rejects(pdu, "10.4")
    room.allows(room.event("m.room.power_levels", ALICE, {"users": {BOB: 100}}, state_key=""))


def test_10_5_first_power_levels_allowed(make_room: type[AuthRoom], version: RoomVersion) -> None:
    room = make_room(version, with_power_levels=False)
    room.allows(room.event("m.room.power_levels", ALICE, {"users": {BOB: 100}}, state_key=""))


@pytest.fixture
def moderated(room: AuthRoom) -> AuthRoom:
    """Bob is a joined moderator (50) in ``room``; Carol a joined user (10)."""
    room.set_membership(BOB, "join")
    room.set_membership(CAROL, "join")
    room.set_levels({BOB: 50, CAROL: 10}, state_default=50, kick=50)
    return room


def power_levels_by_bob(room: AuthRoom, users: dict[str, int], **levels: Any) -> Any:
    if not room.version.creators_have_infinite_power:
        users = {ALICE: 100, **users}
    return room.event("m.room.power_levels", BOB, {**levels, "users": users}, state_key="")


def test_10_10_1_raise_above_own_level_rejected(moderated: AuthRoom) -> None:
    moderated.rejects(power_levels_by_bob(moderated, {BOB: 50, CAROL: 51}, kick=50), "10.10.1")
    moderated.rejects(power_levels_by_bob(moderated, {BOB: 60, CAROL: 10}, kick=50), "10.10.1")
    moderated.allows(power_levels_by_bob(moderated, {BOB: 50, CAROL: 50}, kick=50))


def test_10_9_1_change_level_equal_to_own_rejected(moderated: AuthRoom) -> None:
    moderated.set_levels({BOB: 50, CAROL: 50}, state_default=50, kick=50)
    moderated.rejects(power_levels_by_bob(moderated, {BOB: 50, CAROL: 0}, kick=50), "10.9.1")
    moderated.rejects(power_levels_by_bob(moderated, {BOB: 50}, kick=50), "10.9.1")


def test_10_9_own_level_may_be_lowered(moderated: AuthRoom) -> None:
    moderated.allows(power_levels_by_bob(moderated, {BOB: 20, CAROL: 10}, kick=50))


def test_10_6_named_levels(moderated: AuthRoom) -> None:
    users = {BOB: 50, CAROL: 10}
    moderated.allows(power_levels_by_bob(moderated, users, kick=40))
    moderated.rejects(power_levels_by_bob(moderated, users, kick=50, ban=60), "10.6.2")
    moderated.set_levels(users, kick=50, redact=80)
    moderated.rejects(power_levels_by_bob(moderated, users, kick=50), "10.6.1")  # removes redact


def test_10_7_and_10_8_events_and_notifications(moderated: AuthRoom) -> None:
    users = {BOB: 50, CAROL: 10}
    moderated.set_levels(users, kick=50, events={"m.room.tombstone": 100})
    moderated.rejects(power_levels_by_bob(moderated, users, kick=50), "10.7.1")
    events = {"m.room.tombstone": 100, "m.room.topic": 70}
    moderated.rejects(power_levels_by_bob(moderated, users, kick=50, events=events), "10.8.1")
    moderated.rejects(
        power_levels_by_bob(
            moderated,
            users,
            kick=50,
            events={"m.room.tombstone": 100},
            notifications={"room": 90},
        ),
        "10.8.1",
    )
    moderated.allows(
        power_levels_by_bob(moderated, users, kick=50, events={"m.room.tombstone": 100, "x": 50})
    )


def test_10_v12_creator_may_set_any_level(make_room: type[AuthRoom]) -> None:
    room = make_room(ROOM_V12)
    room.set_levels({BOB: 100}, kick=100)
    pdu = room.event(
        "m.room.power_levels", ALICE, {"users": {BOB: 9000}, "kick": 9000}, state_key=""
    )
    room.allows(pdu)


@given(sender_level=st.integers(0, 100), new_level=st.integers(-10, 200))
def test_10_10_property_cannot_grant_more_than_own(sender_level: int, new_level: int) -> None:
    """Whatever the levels, a non-creator never grants a level above their own."""
    for version in (ROOM_V10, ROOM_V12):
        room = AuthRoom(version)
        room.set_membership(BOB, "join")
        room.set_levels({BOB: sender_level}, state_default=0)
        pdu = power_levels_by_bob(room, {BOB: sender_level, CAROL: new_level}, state_default=0)
        if new_level > sender_level:
            room.rejects(pdu, "10.10.1")
        else:
            room.allows(pdu)


# Helpers --------------------------------------------------------------------------------------


def test_get_user_power_level_defaults(make_room: type[AuthRoom], version: RoomVersion) -> None:
    room = make_room(version, with_power_levels=False)
    creator_level = math.inf if version is ROOM_V12 else 100
    assert get_user_power_level(ALICE, room.state, version) == creator_level
    assert get_user_power_level(BOB, room.state, version) == 0
    room.set_levels({BOB: 30}, users_default=5)
    assert get_user_power_level(ALICE, room.state, version) == creator_level
    assert get_user_power_level(BOB, room.state, version) == 30
    assert get_user_power_level(CAROL, room.state, version) == 5


def test_get_named_level_defaults() -> None:
    no_content: tuple[dict[str, Any] | None, ...] = (None, {})
    for content in no_content:
        assert get_named_level(content, "invite") == 0
        assert get_named_level(content, "kick") == 50
        assert get_named_level(content, "ban") == 50
        assert get_named_level(content, "redact") == 50
        assert get_named_level(content, "state_default") == 50
        assert get_named_level(content, "events_default") == 0
        assert get_named_level(content, "users_default") == 0
    assert get_named_level({"kick": 7}, "kick") == 7
    assert get_named_level({}, "kick", 3) == 3


def test_get_send_level() -> None:
    assert get_send_level("m.room.message", None, None) == 0
    assert get_send_level("m.room.name", "", None) == 50
    content = {"events": {"m.room.name": 20}, "events_default": 5, "state_default": 40}
    assert get_send_level("m.room.name", "", content) == 20
    assert get_send_level("m.room.topic", "", content) == 40
    assert get_send_level("m.room.message", None, content) == 5


def test_auth_error_carries_rule_and_message() -> None:
    room = AuthRoom(ROOM_V12)
    with pytest.raises(AuthError) as info:
        check_auth_rules(room.event("m.room.message", BOB), room.state)
    assert info.value.rule == "6"
    assert BOB in info.value.message
