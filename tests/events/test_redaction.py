"""The redaction algorithm, rule by rule (rooms/fragments/v9-redactions.md for v10,
v11-redactions.md for v11 and v12)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.events.pdu import Pdu
from peyvand.events.redaction import redact, redact_pdu
from peyvand.events.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from peyvand.types import EventID

NEW_RULES = [ROOM_V11, ROOM_V12]
ALL = [ROOM_V10, *NEW_RULES]
ids = [v.identifier for v in ALL]

COMMON_TOP_LEVEL = {
    "event_id": "$e",
    "type": "m.room.message",
    "room_id": "!r:x",
    "sender": "@u:x",
    "state_key": "",
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:1": "s"}},
    "depth": 4,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "origin_server_ts": 1,
}
PRE_V11_TOP_LEVEL = {"origin": "x", "membership": "join", "prev_state": []}
NEVER_KEPT = {"unsigned": {"age": 5}, "redacts": "$r", "custom": 1, "age_ts": 2}


def event(event_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**COMMON_TOP_LEVEL, "type": event_type, "content": content, **extra}


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_common_top_level_keys_are_kept(version: RoomVersion) -> None:
    redacted = redact(event("m.room.message", {}), version)
    assert redacted == {**COMMON_TOP_LEVEL, "content": {}}


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_unsigned_top_level_redacts_and_unknown_keys_are_dropped(version: RoomVersion) -> None:
    redacted = redact(event("m.room.message", {}, **NEVER_KEPT), version)
    assert not set(NEVER_KEPT) & set(redacted)


def test_v10_keeps_origin_membership_prev_state() -> None:
    redacted = redact(event("m.room.message", {}, **PRE_V11_TOP_LEVEL), ROOM_V10)
    assert {key: redacted[key] for key in PRE_V11_TOP_LEVEL} == PRE_V11_TOP_LEVEL


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
def test_v11_drops_origin_membership_prev_state(version: RoomVersion) -> None:
    redacted = redact(event("m.room.message", {}, **PRE_V11_TOP_LEVEL), version)
    assert not set(PRE_V11_TOP_LEVEL) & set(redacted)


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_content_of_other_types_is_emptied(version: RoomVersion) -> None:
    content = {"body": "hi", "msgtype": "m.text", "membership": "join", "redacts": "$x"}
    assert redact(event("m.room.message", content), version)["content"] == {}
    assert redact(event("m.room.topic", {"topic": "t"}), version)["content"] == {}


@pytest.mark.parametrize("version", ALL, ids=ids)
@pytest.mark.parametrize("content", [None, [1], "text"])
def test_missing_or_non_object_content_becomes_empty(version: RoomVersion, content: Any) -> None:
    data = event("m.room.member", {})
    if content is None:
        del data["content"]
    else:
        data["content"] = content
    assert redact(data, version)["content"] == {}


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_member_keeps_membership_and_join_authorised_via(version: RoomVersion) -> None:
    content = {
        "membership": "join",
        "join_authorised_via_users_server": "@admin:x",
        "displayname": "Alice",
        "avatar_url": "mxc://x/y",
        "reason": "hello",
    }
    assert redact(event("m.room.member", content), version)["content"] == {
        "membership": "join",
        "join_authorised_via_users_server": "@admin:x",
    }


THIRD_PARTY_INVITE = {
    "display_name": "alice...@example.org",
    "signed": {"mxid": "@alice:x", "token": "abc", "signatures": {"id": {"ed25519:0": "s"}}},
}


def test_v10_member_drops_third_party_invite() -> None:
    content = {"membership": "invite", "third_party_invite": THIRD_PARTY_INVITE}
    assert redact(event("m.room.member", content), ROOM_V10)["content"] == {"membership": "invite"}


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
def test_v11_member_keeps_only_signed_of_third_party_invite(version: RoomVersion) -> None:
    content = {"membership": "invite", "third_party_invite": THIRD_PARTY_INVITE}
    assert redact(event("m.room.member", content), version)["content"] == {
        "membership": "invite",
        "third_party_invite": {"signed": THIRD_PARTY_INVITE["signed"]},
    }


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
@pytest.mark.parametrize("invite", [{"display_name": "a"}, "signed", ["signed"]])
def test_v11_third_party_invite_without_signed_is_dropped(
    version: RoomVersion, invite: Any
) -> None:
    content = {"membership": "invite", "third_party_invite": invite}
    assert redact(event("m.room.member", content), version)["content"] == {"membership": "invite"}


CREATE_CONTENT = {
    "creator": "@u:x",
    "room_version": "10",
    "m.federate": False,
    "predecessor": {"room_id": "!old:x"},
    "additional_creators": ["@b:x"],
}


def test_v10_create_keeps_only_creator() -> None:
    assert redact(event("m.room.create", CREATE_CONTENT), ROOM_V10)["content"] == {
        "creator": "@u:x"
    }


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
def test_v11_create_keeps_all_content(version: RoomVersion) -> None:
    assert redact(event("m.room.create", CREATE_CONTENT), version)["content"] == CREATE_CONTENT


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_join_rules_keep_join_rule_and_allow(version: RoomVersion) -> None:
    allow = [{"type": "m.room_membership", "room_id": "!s:x"}]
    content = {"join_rule": "restricted", "allow": allow, "other": 1}
    assert redact(event("m.room.join_rules", content), version)["content"] == {
        "join_rule": "restricted",
        "allow": allow,
    }


POWER_LEVELS_KEPT_BY_ALL = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@u:x": 100},
    "users_default": 0,
}
POWER_LEVELS = {**POWER_LEVELS_KEPT_BY_ALL, "invite": 0, "notifications": {"room": 50}}


def test_v10_power_levels_drop_invite_and_notifications() -> None:
    assert (
        redact(event("m.room.power_levels", POWER_LEVELS), ROOM_V10)["content"]
        == POWER_LEVELS_KEPT_BY_ALL
    )


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
def test_v11_power_levels_keep_invite(version: RoomVersion) -> None:
    assert redact(event("m.room.power_levels", POWER_LEVELS), version)["content"] == {
        **POWER_LEVELS_KEPT_BY_ALL,
        "invite": 0,
    }


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_history_visibility_keeps_history_visibility(version: RoomVersion) -> None:
    content = {"history_visibility": "shared", "other": 1}
    assert redact(event("m.room.history_visibility", content), version)["content"] == {
        "history_visibility": "shared"
    }


def test_v10_redaction_keeps_nothing_of_redacts() -> None:
    data = event("m.room.redaction", {"redacts": "$x", "reason": "spam"}, redacts="$x")
    redacted = redact(data, ROOM_V10)
    assert redacted["content"] == {}
    assert "redacts" not in redacted


@pytest.mark.parametrize("version", NEW_RULES, ids=["11", "12"])
def test_v11_redaction_keeps_redacts_in_content(version: RoomVersion) -> None:
    data = event("m.room.redaction", {"redacts": "$x", "reason": "spam"})
    assert redact(data, version)["content"] == {"redacts": "$x"}


@pytest.mark.parametrize("version", ALL, ids=ids)
def test_input_is_untouched_and_output_is_a_deep_copy(version: RoomVersion) -> None:
    data = event("m.room.power_levels", copy.deepcopy(POWER_LEVELS), **NEVER_KEPT)
    before = copy.deepcopy(data)
    redacted = redact(data, version)
    assert data == before
    redacted["content"]["users"]["@evil:x"] = 100
    redacted["prev_events"].append("$evil")
    assert data == before


text = st.text(max_size=6)
leaves = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
values = st.recursive(
    leaves, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=8
)
key_names = st.sampled_from(
    [*COMMON_TOP_LEVEL, *PRE_V11_TOP_LEVEL, *NEVER_KEPT, "content", "membership", "invite"]
)
events = st.builds(
    lambda top, event_type, content: {**top, "type": event_type, "content": content},
    st.dictionaries(key_names, values, max_size=8),
    st.sampled_from(
        [
            "m.room.member",
            "m.room.create",
            "m.room.join_rules",
            "m.room.power_levels",
            "m.room.history_visibility",
            "m.room.redaction",
            "m.room.message",
        ]
    ),
    st.dictionaries(
        st.sampled_from([*POWER_LEVELS, *CREATE_CONTENT, "membership", "third_party_invite"])
        | text,
        values,
        max_size=6,
    ),
)


@given(events, st.sampled_from(ALL))
def test_redaction_is_idempotent(data: dict[str, Any], version: RoomVersion) -> None:
    once = redact(data, version)
    assert redact(once, version) == once


def test_redact_pdu_keeps_event_id_and_version() -> None:
    pdu = Pdu(event("m.room.message", {"body": "hi"}), EventID("$e"), ROOM_V11)
    redacted = redact_pdu(pdu)
    assert (redacted.event_id, redacted.room_version) == (pdu.event_id, ROOM_V11)
    assert redacted.content == {}
    assert pdu.content == {"body": "hi"}
