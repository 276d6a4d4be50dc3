"""Filters: validation and matching (Client-Server API, "Filtering")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peyvand.errors import Errcode, MatrixError
from peyvand.services.sync.filtering import (
    DEFAULT_LIMIT,
    MAX_TIMELINE_LIMIT,
    EventFilter,
    Filter,
    parse_event_filter,
    parse_event_filter_param,
    parse_filter,
    parse_filter_param,
    type_matches,
)
from peyvand.types import JsonDict

ROOM_A = "!a:example.org"
ROOM_B = "!b:example.org"
ALICE = "@alice:example.org"
SPAM = "@spam:example.org"

# The spec's example filter (POST /user/{userId}/filter).
SPEC_EXAMPLE: JsonDict = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {
            "limit": 10,
            "types": ["m.room.message"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
        "ephemeral": {
            "types": ["m.receipt", "m.typing"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


def event(
    event_type: str = "m.room.message",
    sender: str = ALICE,
    room_id: str | None = ROOM_A,
    **content: Any,
) -> JsonDict:
    out: JsonDict = {"type": event_type, "sender": sender, "content": content}
    if room_id is not None:
        out["room_id"] = room_id
    return out


def test_spec_example_parses() -> None:
    parsed = parse_filter(SPEC_EXAMPLE)
    assert parsed.event_fields == ("type", "content", "sender")
    assert parsed.room.timeline.types == ("m.room.message",)
    assert parsed.room.timeline.not_senders == {"@spam:example.com"}
    assert parsed.presence.not_senders == {"@alice:example.com"}
    assert parsed.room.state.matches(event("m.room.topic", room_id=None))
    assert not parsed.room.state.matches(event("m.room.topic", room_id="!726s6s6q:example.com"))


def test_empty_filter_has_defaults() -> None:
    parsed = parse_filter({})
    assert parsed == Filter()
    assert parsed.timeline_limit == DEFAULT_LIMIT
    assert not parsed.lazy_load_members and not parsed.include_leave
    assert parsed.event_format == "client"
    assert parsed.room.timeline.matches(event("anything", "@x:y", contains_url=None))


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("m.room.message", "m.room.message", True),
        ("m.room.message", "m.room.messages", False),
        ("m.room.*", "m.room.member", True),
        ("m.room.*", "m.room.", True),
        ("m.room.*", "m.roomX", False),
        ("*", "", True),
        ("*.call.*", "m.call.invite", True),
        ("m.*.invite", "m.call.invite", True),
        ("m.*.invite", "m.invite", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),
        ("M.ROOM.*", "m.room.message", False),  # types are case-sensitive
    ],
)
def test_type_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert type_matches(pattern, value) is expected


def test_not_types_win_over_types() -> None:
    flt = parse_event_filter({"types": ["m.room.*"], "not_types": ["m.room.member"]})
    assert flt.matches(event("m.room.message"))
    assert not flt.matches(event("m.room.member"))
    assert not flt.matches(event("m.reaction"))
    everything_but = parse_event_filter({"not_types": ["*"]})
    assert not everything_but.matches(event("m.room.message"))


def test_not_senders_win_over_senders() -> None:
    flt = parse_event_filter({"senders": [ALICE, SPAM], "not_senders": [SPAM]})
    assert flt.matches(event(sender=ALICE))
    assert not flt.matches(event(sender=SPAM))
    assert not flt.matches(event(sender="@carol:example.org"))


def test_empty_lists_exclude_everything() -> None:
    assert not parse_event_filter({"types": []}).matches(event())
    assert not parse_event_filter({"senders": []}).matches(event())
    assert parse_event_filter({"not_types": []}).matches(event())


def test_rooms_and_not_rooms() -> None:
    flt = parse_event_filter({"rooms": [ROOM_A, ROOM_B], "not_rooms": [ROOM_B]})
    assert flt.matches(event(room_id=ROOM_A))
    assert not flt.matches(event(room_id=ROOM_B))
    assert not flt.matches(event(room_id="!c:example.org"))
    # Events without a room_id (as in /sync's per-room sections) are filtered by room
    # at the room level instead.
    assert flt.matches(event(room_id=None))
    assert flt.filter_rooms([ROOM_B, "!c:example.org", ROOM_A]) == [ROOM_A]


def test_top_level_room_filter() -> None:
    parsed = parse_filter({"room": {"rooms": [ROOM_A, ROOM_B], "not_rooms": [ROOM_A]}})
    assert parsed.filter_rooms([ROOM_A, ROOM_B, "!c:example.org"]) == [ROOM_B]
    assert parse_filter({}).filter_rooms([ROOM_A, ROOM_B]) == [ROOM_A, ROOM_B]


def test_contains_url() -> None:
    with_url = event(msgtype="m.image", url="mxc://example.org/abc")
    without = event(msgtype="m.text", body="hi")
    odd = event(url=5)
    only = parse_event_filter({"contains_url": True})
    never = parse_event_filter({"contains_url": False})
    assert only.matches(with_url) and not only.matches(without) and not only.matches(odd)
    assert never.matches(without) and not never.matches(with_url) and never.matches(odd)
    assert parse_event_filter({}).matches(with_url)


def test_filter_keeps_order() -> None:
    flt = parse_event_filter({"types": ["m.room.message"]})
    events = [event(body="1"), event("m.room.topic"), event(body="2")]
    assert flt.filter(events) == [events[0], events[2]]


def test_limits() -> None:
    assert parse_filter({"room": {"timeline": {"limit": 5}}}).timeline_limit == 5
    assert parse_filter({"room": {"timeline": {"limit": 10**6}}}).timeline_limit == (
        MAX_TIMELINE_LIMIT
    )
    assert parse_event_filter({"limit": 0}).limit == 0
    assert parse_event_filter({}).limit == DEFAULT_LIMIT


def test_lazy_loading_flags() -> None:
    parsed = parse_filter(
        {
            "room": {
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "timeline": {"unread_thread_notifications": True},
                "include_leave": True,
            }
        }
    )
    assert parsed.lazy_load_members and parsed.include_redundant_members
    assert parsed.unread_thread_notifications and parsed.include_leave
    redundant_only = parse_filter({"room": {"state": {"include_redundant_members": True}}})
    assert not redundant_only.include_redundant_members


def test_nulls_count_as_absent_and_unknown_keys_are_ignored() -> None:
    parsed = parse_filter({"room": None, "event_fields": None, "org.example.future": [1]})
    assert parsed == Filter()
    assert parse_event_filter({"types": None, "limit": None}) == EventFilter()


@pytest.mark.parametrize(
    ("data", "errcode"),
    [
        ([], Errcode.BAD_JSON),
        ({"room": []}, Errcode.BAD_JSON),
        ({"room": {"timeline": "x"}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"limit": "10"}}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"limit": 1.5}}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"limit": True}}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"limit": -1}}}, Errcode.INVALID_PARAM),
        ({"room": {"timeline": {"types": "m.room.message"}}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"types": [1]}}}, Errcode.BAD_JSON),
        ({"room": {"state": {"senders": ["alice"]}}}, Errcode.INVALID_PARAM),
        ({"room": {"state": {"not_rooms": ["#alias:example.org"]}}}, Errcode.INVALID_PARAM),
        ({"room": {"rooms": ["room"]}}, Errcode.INVALID_PARAM),
        ({"room": {"include_leave": "yes"}}, Errcode.BAD_JSON),
        ({"room": {"state": {"lazy_load_members": 1}}}, Errcode.BAD_JSON),
        ({"room": {"timeline": {"contains_url": "true"}}}, Errcode.BAD_JSON),
        ({"presence": {"not_senders": ["@bad"]}}, Errcode.INVALID_PARAM),
        ({"account_data": 5}, Errcode.BAD_JSON),
        ({"event_format": "xml"}, Errcode.INVALID_PARAM),
        ({"event_format": 1}, Errcode.BAD_JSON),
        ({"event_fields": "type"}, Errcode.BAD_JSON),
    ],
)
def test_bad_filters_are_rejected(data: Any, errcode: Errcode) -> None:
    with pytest.raises(MatrixError) as info:
        parse_filter(data)
    assert info.value.errcode == errcode


def test_error_messages_name_the_field() -> None:
    with pytest.raises(MatrixError, match=r"room\.timeline\.limit"):
        parse_filter({"room": {"timeline": {"limit": "x"}}})


def test_filter_param_inline_or_id() -> None:
    inline = parse_filter_param('{"room": {"timeline": {"limit": 3}}}')
    assert isinstance(inline, Filter) and inline.timeline_limit == 3
    assert parse_filter_param("66696p746572") == "66696p746572"
    with pytest.raises(MatrixError) as info:
        parse_filter_param("{not json")
    assert info.value.errcode == Errcode.NOT_JSON
    with pytest.raises(MatrixError) as info:
        parse_filter_param('{"room": {"timeline": {"limit": "x"}}}')
    assert info.value.errcode == Errcode.BAD_JSON


def test_event_filter_param() -> None:
    flt = parse_event_filter_param('{"types": ["m.room.message"], "lazy_load_members": true}')
    assert flt.lazy_load_members and flt.types == ("m.room.message",)
    with pytest.raises(MatrixError) as info:
        parse_event_filter_param("[")
    assert info.value.errcode == Errcode.NOT_JSON


def test_project_event_fields() -> None:
    ev: JsonDict = {
        "type": "m.room.message",
        "sender": ALICE,
        "event_id": "$e",
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "x"}},
    }
    assert Filter().project_event(ev) is ev
    parsed = parse_filter(
        {"event_fields": ["type", "content.body", "content.m\\.relates_to", "missing.x", "type.x"]}
    )
    assert parsed.project_event(ev) == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    ev=st.dictionaries(
        st.sampled_from(["type", "sender", "room_id", "content", "x"]), json_values, max_size=5
    )
)
def test_matching_never_raises(ev: JsonDict) -> None:
    flt = parse_event_filter(
        {"types": ["m.*"], "not_senders": [ALICE], "rooms": [ROOM_A], "contains_url": True}
    )
    flt.matches(ev)
    EventFilter().matches(ev)
