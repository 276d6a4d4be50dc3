"""Auth events selection (Server-Server API) and rule 3 (v12; rule 2 in v10/v11)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.auth_room import ALICE, BOB, CAROL, DAVE, AuthRoom
from peyvand.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_events_list,
    check_room_id_is_create_event,
)
from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.types import EventID

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def base(version: RoomVersion, sender: str) -> set[tuple[str, str]]:
    keys = {PL, ("m.room.member", sender)}
    return keys if version is ROOM_V12 else keys | {CREATE}


# Auth events selection --------------------------------------------------------------------


def test_selection_create_event_has_none(version: RoomVersion) -> None:
    assert auth_types_for_event(version, "m.room.create", ALICE, "", {}) == set()


def test_selection_message(version: RoomVersion) -> None:
    assert auth_types_for_event(version, "m.room.message", ALICE, None, {}) == base(version, ALICE)


@pytest.mark.parametrize("membership", ["join", "invite", "knock"])
def test_selection_membership_with_join_rules(version: RoomVersion, membership: str) -> None:
    content = {"membership": membership}
    expected = base(version, ALICE) | {("m.room.member", BOB), JR}
    assert auth_types_for_event(version, "m.room.member", ALICE, BOB, content) == expected


@pytest.mark.parametrize("membership", ["leave", "ban"])
def test_selection_membership_without_join_rules(version: RoomVersion, membership: str) -> None:
    content = {"membership": membership}
    expected = base(version, ALICE) | {("m.room.member", BOB)}
    assert auth_types_for_event(version, "m.room.member", ALICE, BOB, content) == expected


def test_selection_third_party_invite(version: RoomVersion) -> None:
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    expected = base(version, ALICE) | {
        ("m.room.member", BOB),
        JR,
        ("m.room.third_party_invite", "tok"),
    }
    assert auth_types_for_event(version, "m.room.member", ALICE, BOB, content) == expected


def test_selection_malformed_third_party_invite_ignored(version: RoomVersion) -> None:
    content = {"membership": "invite", "third_party_invite": "nonsense"}
    expected = base(version, ALICE) | {("m.room.member", BOB), JR}
    assert auth_types_for_event(version, "m.room.member", ALICE, BOB, content) == expected


def test_selection_restricted_join_authoriser(version: RoomVersion) -> None:
    content = {"membership": "join", "join_authorised_via_users_server": DAVE}
    expected = base(version, BOB) | {JR, ("m.room.member", DAVE)}
    assert auth_types_for_event(version, "m.room.member", BOB, BOB, content) == expected


# Rule 3 (v12 numbering) ---------------------------------------------------------------------


def auth_events_of(room: AuthRoom, *keys: tuple[str, str]) -> list[Pdu]:
    return [room.state[key] for key in keys]


def rule_of(event: Pdu, auth_events: list[Pdu], **kwargs: Pdu) -> str:
    with pytest.raises(AuthError) as info:
        check_auth_events_list(event, auth_events, **kwargs)
    return info.value.rule


def standard_auth_events(room: AuthRoom, sender: str) -> list[Pdu]:
    keys = [PL, ("m.room.member", sender)]
    if room.version is not ROOM_V12:
        keys.append(CREATE)
    return auth_events_of(room, *keys)


def test_3_valid_auth_events_accepted(room: AuthRoom) -> None:
    check_auth_events_list(room.event("m.room.message", ALICE), standard_auth_events(room, ALICE))


def test_3_1_duplicate_auth_events_rejected(room: AuthRoom) -> None:
    event = room.event("m.room.message", ALICE)
    other_pl = room.event("m.room.power_levels", ALICE, {}, state_key="")
    auth_events = [*standard_auth_events(room, ALICE), other_pl]
    assert rule_of(event, auth_events) == room.rule("3.1")


def test_3_2_unselected_auth_event_rejected(room: AuthRoom) -> None:
    event = room.event("m.room.message", ALICE)
    auth_events = [*standard_auth_events(room, ALICE), room.state[JR]]
    assert rule_of(event, auth_events) == room.rule("3.2")


def test_3_2_v12_create_event_among_auth_events_rejected() -> None:
    room = AuthRoom(ROOM_V12)
    event = room.event("m.room.message", ALICE)
    auth_events = [*standard_auth_events(room, ALICE), room.create]
    assert rule_of(event, auth_events) == "3.2"


def test_3_3_rejected_auth_event_rejected(room: AuthRoom) -> None:
    event = room.event("m.room.message", ALICE)
    pl = room.state[PL]
    rejected_pl = Pdu(dict(pl.data), pl.event_id, room.version, rejected_reason="auth")
    auth_events = [rejected_pl, *standard_auth_events(room, ALICE)[1:]]
    assert rule_of(event, auth_events) == room.rule("3.3")


def test_3_5_auth_event_from_another_room_rejected(room: AuthRoom) -> None:
    other = AuthRoom(room.version, creator=CAROL)
    event = room.event("m.room.message", ALICE)
    foreign_pl = other.state[PL]
    auth_events = [foreign_pl, *standard_auth_events(room, ALICE)[1:]]
    assert rule_of(event, auth_events) == room.rule("3.5")


@pytest.mark.parametrize("version", [ROOM_V10, ROOM_V11], ids=["v10", "v11"])
def test_2_4_pre_v12_missing_create_rejected(version: RoomVersion) -> None:
    room = AuthRoom(version)
    event = room.event("m.room.message", ALICE)
    assert rule_of(event, auth_events_of(room, PL, ("m.room.member", ALICE))) == "2.4"


def test_3_create_event_has_no_auth_event_rules(room: AuthRoom) -> None:
    check_auth_events_list(room.create, [])


def test_2_v12_room_id_checked_against_create_event() -> None:
    room = AuthRoom(ROOM_V12)
    event = room.event("m.room.message", ALICE)
    auth_events = standard_auth_events(room, ALICE)
    check_auth_events_list(event, auth_events, create_event=room.create)
    other = AuthRoom(ROOM_V12, creator=CAROL)
    mismatched = Pdu(dict(other.create.data), EventID("$AnotherCreateEvent"), ROOM_V12)
    assert rule_of(event, auth_events, create_event=mismatched) == "2"
    with pytest.raises(AuthError):
        check_room_id_is_create_event(event, None)
    not_create = room.state[PL]
    with pytest.raises(AuthError):
        check_room_id_is_create_event(event, not_create)


@given(st.permutations(range(4)), st.sampled_from(["join", "invite", "knock"]))
def test_3_property_order_of_auth_events_is_irrelevant(order: list[int], membership: str) -> None:
    """A valid auth event list stays valid, and a duplicate stays a duplicate, in any order."""
    for version in (ROOM_V10, ROOM_V12):
        room = AuthRoom(version)
        room.set_membership(BOB, "invite")
        event = room.member(BOB, membership)
        keys = [PL, ("m.room.member", BOB), JR, CREATE if version is not ROOM_V12 else PL]
        chosen = [room.state[keys[i]] for i in order]
        if version is ROOM_V12:
            assert rule_of(event, chosen) == "3.1"
        else:
            check_auth_events_list(event, chosen)
