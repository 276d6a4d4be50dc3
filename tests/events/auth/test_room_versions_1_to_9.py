"""Room versions 1 to 9: event IDs and format, redaction, signatures and the authorization
rules that differ from v10 ("Room Versions", v1.md ... v9.md and their fragments)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.auth_room import ALICE, BOB, AuthRoom
from peyvand.events.auth import AuthError, check_auth_rules
from peyvand.events.auth.errors import spec_rule
from peyvand.events.builder import build_pdu
from peyvand.events.hashes import compute_reference_hash
from peyvand.events.pdu import Pdu
from peyvand.events.received import InvalidPdu, parse_pdu, required_signatures
from peyvand.events.redaction import redact, redaction_takes_effect
from peyvand.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    ROOM_V1,
    ROOM_V2,
    ROOM_V3,
    ROOM_V4,
    ROOM_V5,
    ROOM_V6,
    ROOM_V7,
    ROOM_V8,
    ROOM_V9,
    ROOM_V10,
    RoomVersion,
    StateResAlgorithm,
)
from peyvand.events.signing import generate_signing_key
from peyvand.types import EventID, RoomID, UserID

KEY = generate_signing_key("test")
OLD = [ROOM_V1, ROOM_V2, ROOM_V3, ROOM_V4, ROOM_V5, ROOM_V6, ROOM_V7, ROOM_V8, ROOM_V9]
old_ids = [v.identifier for v in OLD]


def _message(version: RoomVersion, **args: Any) -> Pdu:
    fields: dict[str, Any] = {
        "room_id": RoomID("!room:x"),
        "event_type": "m.room.message",
        "sender": UserID("@alice:x"),
        "content": {"body": "hi"},
        "prev_events": [EventID("$prev:x")],
        "auth_events": [EventID("$create:x")],
        "depth": 2,
        "origin_server_ts": 1_700_000_000_000,
        "origin_server_name": "x",
        "signing_key": KEY,
    }
    return build_pdu(version, **{**fields, **args})


# -- versions and their flags ---------------------------------------------------------


def test_versions_1_to_12_are_known() -> None:
    assert sorted(KNOWN_ROOM_VERSIONS, key=int) == [str(n) for n in range(1, 13)]


def test_flags_switch_on_at_the_version_that_introduced_them() -> None:
    def first(flag: str) -> str:
        return next(v.identifier for v in KNOWN_ROOM_VERSIONS.values() if getattr(v, flag))

    assert ROOM_V1.state_res is StateResAlgorithm.V1
    assert ROOM_V2.state_res is StateResAlgorithm.V2
    assert first("enforce_key_validity") == "5"
    assert first("strict_canonicaljson") == "6"
    assert first("limit_notifications_power_levels") == "6"
    assert first("knock_join_rule") == "7"
    assert first("restricted_join_rule") == "8"
    assert first("redaction_keeps_join_authoriser") == "9"
    assert first("enforce_int_power_levels") == "10"
    assert [v.identifier for v in OLD if v.special_case_aliases] == ["1", "2", "3", "4", "5"]
    assert [v.identifier for v in OLD if v.event_id_carried] == ["1", "2"]


# -- event IDs and format --------------------------------------------------------------


@pytest.mark.parametrize("version", [ROOM_V1, ROOM_V2], ids=["1", "2"])
def test_v1_v2_events_carry_their_id_and_reference_pairs(version: RoomVersion) -> None:
    pdu = _message(version)
    assert re.fullmatch(r"\$[A-Za-z0-9_-]+:x", pdu.event_id)
    assert pdu.data["event_id"] == pdu.event_id
    assert pdu.data["prev_events"] == [["$prev:x", {}]]
    assert pdu.prev_event_ids == ["$prev:x"]
    assert pdu.auth_event_ids == ["$create:x"]
    parsed = parse_pdu(dict(pdu.data), version, room_id="!room:x")
    assert parsed.event_id == pdu.event_id
    assert parsed.prev_event_ids == ["$prev:x"]
    # Another message gets another ID.
    assert _message(version, content={"body": "other"}).event_id != pdu.event_id


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": None},
        {"event_id": "$nodomain"},
        {"event_id": 5},
        {"prev_events": ["$prev:x"]},
        {"prev_events": [["$prev:x"]]},
        {"auth_events": [["$create:x", "sha"]]},
    ],
)
def test_v1_malformed_ids_or_references_are_dropped(change: dict[str, Any]) -> None:
    data = dict(_message(ROOM_V1).data)
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(InvalidPdu):
        parse_pdu(data, ROOM_V1)


def test_v3_ids_are_standard_base64_v4_url_safe() -> None:
    # Find a message whose reference hash has a '+' or '/' in standard Base64.
    for n in range(200):
        v3 = _message(ROOM_V3, content={"body": str(n)})
        if re.search(r"[+/]", v3.event_id):
            break
    else:
        pytest.fail("no reference hash with + or / in 200 tries")
    assert re.fullmatch(r"\$[A-Za-z0-9+/]{43}", v3.event_id)
    assert "event_id" not in v3.data
    v4 = _message(ROOM_V4, content={"body": str(n)})
    assert compute_reference_hash(v3.data, ROOM_V3) == compute_reference_hash(v4.data, ROOM_V4)
    assert v4.event_id == v3.event_id.replace("+", "-").replace("/", "_")
    assert parse_pdu(dict(v3.data), ROOM_V3).event_id == v3.event_id
    with pytest.raises(InvalidPdu):
        parse_pdu({**v3.data, "event_id": v3.event_id}, ROOM_V3)


def test_floats_and_big_integers_are_accepted_before_v6_only() -> None:
    content = {"body": "x", "ratio": 0.5, "big": 2**60}
    for version in (ROOM_V4, ROOM_V5):
        data = {**_message(version).data, "content": content}
        assert parse_pdu(data, version).content["ratio"] == 0.5
    data = {**_message(ROOM_V6).data, "content": content}
    with pytest.raises(InvalidPdu):
        parse_pdu(data, ROOM_V6)
    # Beyond 64 bits no version takes (storage could not hold it).
    data = {**_message(ROOM_V5).data, "content": {"big": 2**64}}
    with pytest.raises(InvalidPdu):
        parse_pdu(data, ROOM_V5)


# -- signatures ------------------------------------------------------------------------


def test_required_signatures_per_version() -> None:
    v1 = Pdu(
        {"type": "m.room.message", "sender": "@a:x", "content": {}, "origin_server_ts": 7},
        EventID("$e:y"),
        ROOM_V1,
    )
    assert required_signatures(v1) == [("x", 0), ("y", 0)]
    v4 = Pdu(dict(v1.data), EventID("$hash"), ROOM_V4)
    assert required_signatures(v4) == [("x", 0)]
    v5 = Pdu(dict(v1.data), EventID("$hash"), ROOM_V5)
    assert required_signatures(v5) == [("x", 7)]
    join = {
        "type": "m.room.member",
        "state_key": "@a:x",
        "sender": "@a:x",
        "content": {"membership": "join", "join_authorised_via_users_server": "@b:z"},
        "origin_server_ts": 7,
    }
    assert required_signatures(Pdu(join, EventID("$h"), ROOM_V7)) == [("x", 7)]
    assert required_signatures(Pdu(join, EventID("$h"), ROOM_V8)) == [("x", 7), ("z", 7)]


# -- redaction -------------------------------------------------------------------------

CONTENTS: dict[str, dict[str, Any]] = {
    "m.room.aliases": {"aliases": ["#a:x"]},
    "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
    "m.room.member": {
        "membership": "join",
        "join_authorised_via_users_server": "@b:x",
        "displayname": "A",
    },
    "m.room.create": {"creator": "@a:x", "room_version": "1"},
    "m.room.power_levels": {"ban": 50, "invite": 0, "notifications": {"room": 50}},
}


@pytest.mark.parametrize(
    ("version", "event_type", "kept"),
    [
        (ROOM_V1, "m.room.aliases", {"aliases"}),
        (ROOM_V5, "m.room.aliases", {"aliases"}),
        (ROOM_V6, "m.room.aliases", set()),
        (ROOM_V7, "m.room.join_rules", {"join_rule"}),
        (ROOM_V8, "m.room.join_rules", {"join_rule", "allow"}),
        (ROOM_V8, "m.room.member", {"membership"}),
        (ROOM_V9, "m.room.member", {"membership", "join_authorised_via_users_server"}),
        (ROOM_V1, "m.room.create", {"creator"}),
        (ROOM_V9, "m.room.power_levels", {"ban"}),
    ],
)
def test_redaction_algorithm_per_version(
    version: RoomVersion, event_type: str, kept: set[str]
) -> None:
    data = {"type": event_type, "content": CONTENTS[event_type], "event_id": "$e:x", "origin": "x"}
    redacted = redact(data, version)
    assert set(redacted["content"]) == kept
    assert redacted["event_id"] == "$e:x"
    assert redacted["origin"] == "x"


def test_v1_redaction_takes_effect_by_event_id_domain() -> None:
    def redaction(version: RoomVersion, event_id: str) -> Pdu:
        data = {
            "type": "m.room.redaction",
            "room_id": "!r:x",
            "sender": "@mallory:evil",
            "redacts": "$orig:x",
            "content": {},
        }
        return Pdu(data, EventID(event_id), version)

    args: dict[str, Any] = {
        "by_power": False,
        "original_room_id": "!r:x",
        "original_sender": "@alice:evil",
        "original_type": "m.room.message",
    }
    # v1: the event ID domains decide, not the senders'.
    assert redaction_takes_effect(redaction(ROOM_V1, "$r:x"), **args)
    assert not redaction_takes_effect(redaction(ROOM_V1, "$r:evil"), **args)
    # v3+: the senders' domains.
    assert redaction_takes_effect(redaction(ROOM_V3, "$hash"), **args)


# -- authorization rules ---------------------------------------------------------------


@pytest.mark.parametrize("version", OLD, ids=old_ids)
def test_aliases_rule_before_v6(version: RoomVersion) -> None:
    room = AuthRoom(version)
    # Bob is not joined: only the aliases rule lets him set his server's aliases.
    own = room.event("m.room.aliases", BOB, {"aliases": []}, state_key="b.test")
    other = room.event("m.room.aliases", BOB, {"aliases": []}, state_key="a.test")
    if version.special_case_aliases:
        room.allows(own)
        with pytest.raises(AuthError) as info:
            room.allows(other)
        assert info.value.rule == "4.2"
    else:
        room.rejects(own, "6")


@pytest.mark.parametrize("version", [ROOM_V1, ROOM_V2, ROOM_V3], ids=["1", "2", "3"])
def test_redaction_rule_in_v1_v2(version: RoomVersion) -> None:
    room = AuthRoom(version)
    room.set_membership(BOB, "join")
    data = {
        "type": "m.room.redaction",
        "room_id": room.room_id,
        "sender": BOB,
        "content": {},
        "redacts": "$victim:a.test",
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
    }
    foreign = Pdu(data, EventID("$r:b.test"), version)
    same_domain = Pdu({**data, "redacts": "$victim:b.test"}, EventID("$r:b.test"), version)
    room.allows(same_domain)
    if version.event_id_carried:
        with pytest.raises(AuthError) as info:
            room.allows(foreign)
        assert info.value.rule == "11.3"
        # With the redact level, anything goes.
        room.set_levels({BOB: 50})
        room.allows(foreign)
    else:
        room.allows(foreign)


@pytest.mark.parametrize("version", [ROOM_V6, ROOM_V7], ids=["6", "7"])
def test_knock_from_v7(version: RoomVersion) -> None:
    room = AuthRoom(version, join_rule="knock")
    knock = room.member(BOB, "knock")
    if version.knock_join_rule:
        room.allows(knock)
        room.add(knock)
        room.allows(room.member(BOB, "leave"))
    else:
        error = room.rejects(knock, "5.8")
        assert error.rule == "4.6"
        room.add(knock)
        room.rejects(room.member(BOB, "leave"), "5.5.1")


@pytest.mark.parametrize("version", [ROOM_V7, ROOM_V8, ROOM_V9], ids=["7", "8", "9"])
def test_restricted_join_from_v8(version: RoomVersion) -> None:
    room = AuthRoom(version, join_rule="restricted")
    join = room.member(BOB, "join", join_authorised_via_users_server=ALICE)
    join = Pdu(
        {**join.data, "signatures": {"b.test": {"ed25519:k": "s"}, "a.test": {"ed25519:k": "s"}}},
        join.event_id,
        version,
    )
    if version.restricted_join_rule:
        room.allows(join)
    else:
        error = room.rejects(join, "5.3.7")
        assert error.rule == "4.2.6"


@pytest.mark.parametrize("version", [ROOM_V5, ROOM_V9, ROOM_V10], ids=["5", "9", "10"])
def test_stringy_power_levels_before_v10(version: RoomVersion) -> None:
    room = AuthRoom(version)
    room.set_membership(BOB, "join")
    levels = {"users": {ALICE: "100", BOB: " +050 "}, "events_default": "60", "ban": 50}
    event = room.event("m.room.power_levels", ALICE, levels, state_key="")
    if version.enforce_int_power_levels:
        room.rejects(event, "10.1")
        return
    room.allows(event)
    room.add(event)
    # Bob (50) may not send messages (events_default 60).
    room.rejects(room.event("m.room.message", BOB, {"body": "x"}), "8")
    room.set_power_levels({"users": {ALICE: 100, BOB: 60.9}, "events_default": 60})
    if version.strict_canonicaljson:
        return
    room.allows(room.event("m.room.message", BOB, {"body": "x"}))


def test_v1_create_event_needs_creator() -> None:
    create = {
        "type": "m.room.create",
        "state_key": "",
        "room_id": "!r:a.test",
        "sender": ALICE,
        "content": {"room_version": "1"},
        "prev_events": [],
        "auth_events": [],
    }
    with pytest.raises(AuthError) as info:
        check_auth_rules(Pdu(create, EventID("$c:a.test"), ROOM_V1), {})
    assert info.value.rule == "1.4"
    create["content"] = {"room_version": "1", "creator": ALICE}
    check_auth_rules(Pdu(create, EventID("$c:a.test"), ROOM_V1), {})


@pytest.mark.parametrize(
    ("version", "v12_rule", "expected"),
    [
        (ROOM_V1, "3.4", "2.4"),
        (ROOM_V1, "5.3.6", "5.2.5"),
        (ROOM_V1, "10.3", "10.1"),
        (ROOM_V6, "6", "5"),
        (ROOM_V7, "5.8", "4.7"),
        (ROOM_V8, "5.3.6", "4.3.6"),
        (ROOM_V9, "10.10.1", "9.7.1"),
        (ROOM_V10, "10.10.1", "9.9.1"),
    ],
)
def test_rule_numbers_per_version(version: RoomVersion, v12_rule: str, expected: str) -> None:
    assert spec_rule(version, v12_rule) == expected
