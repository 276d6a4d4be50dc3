"""Push rules: predefined rules, conditions, merging and evaluation
(Client-Server API, "Push Notifications")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.errors import Errcode, MatrixError
from peyvand.events.dotted_paths import parse_dotted_path
from peyvand.events.push_rules.actions import parse_actions
from peyvand.events.push_rules.conditions import PushContext, notification_levels
from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.rule import KINDS, PushRule, RuleOverride
from peyvand.events.push_rules.ruleset import build_ruleset, evaluate
from peyvand.events.push_rules.validation import parse_rule
from peyvand.types import JsonDict

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"


def ctx(**kwargs: Any) -> PushContext:
    base: dict[str, Any] = {"user_id": ALICE, "member_count": 5, "user_display_name": "Alice"}
    base.update(kwargs)
    return PushContext(**base)


def message(body: str = "hello", /, **content: Any) -> JsonDict:
    return {
        "type": "m.room.message",
        "sender": BOB,
        "room_id": ROOM,
        "event_id": "$e:example.org",
        "origin_server_ts": 1,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def state(event_type: str, state_key: str = "", /, **content: Any) -> JsonDict:
    return {
        "type": event_type,
        "state_key": state_key,
        "sender": BOB,
        "room_id": ROOM,
        "event_id": "$s:example.org",
        "content": content,
    }


DEFAULTS = build_ruleset(ALICE, [])


# Predefined rules ------------------------------------------------------------------


def test_default_rules_are_the_spec_list_in_order() -> None:
    ids = [(r.kind, r.rule_id) for r in DEFAULTS.rules]
    assert ids == [
        ("override", ".m.rule.master"),
        ("override", ".m.rule.suppress_notices"),
        ("override", ".m.rule.invite_for_me"),
        ("override", ".m.rule.member_event"),
        ("override", ".m.rule.is_user_mention"),
        ("override", ".m.rule.is_room_mention"),
        ("override", ".m.rule.tombstone"),
        ("override", ".m.rule.reaction"),
        ("override", ".m.rule.room.server_acl"),
        ("override", ".m.rule.suppress_edits"),
        ("underride", ".m.rule.call"),
        ("underride", ".m.rule.encrypted_room_one_to_one"),
        ("underride", ".m.rule.room_one_to_one"),
        ("underride", ".m.rule.message"),
        ("underride", ".m.rule.encrypted"),
    ]
    assert all(r.default for r in DEFAULTS.rules)
    assert [r.rule_id for r in DEFAULTS.rules if not r.enabled] == [".m.rule.master"]


def test_default_rules_are_parametrised_by_user() -> None:
    invite = next(r for r in default_rules(BOB) if r.rule_id == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": BOB} in invite.conditions
    mention = next(r for r in default_rules(BOB) if r.rule_id == ".m.rule.is_user_mention")
    assert mention.conditions[0]["value"] == BOB


def test_ruleset_json_matches_spec_shape() -> None:
    out = DEFAULTS.to_json()
    assert set(out) == set(KINDS)
    assert out["content"] == out["room"] == out["sender"] == []
    assert out["override"][0] == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "conditions": [],
        "actions": [],
    }
    # to_json hands out copies: mutating them leaves the cached ruleset intact.
    out["override"][1]["conditions"][0]["pattern"] = "mutated"
    assert DEFAULTS.to_json()["override"][1]["conditions"][0]["pattern"] == "m.notice"


def outcome(event: JsonDict, **kwargs: Any) -> tuple[str | None, bool, bool, str | None]:
    result = evaluate(DEFAULTS, event, ctx(**kwargs))
    return result.rule_id, result.notify, result.highlight, result.sound


def test_master_disabled_by_default_and_enabled_silences_everything() -> None:
    ruleset = build_ruleset(ALICE, [], {("override", ".m.rule.master"): RuleOverride(True)})
    mention = message(**{"m.mentions": {"user_ids": [ALICE]}})
    result = evaluate(ruleset, mention, ctx())
    assert (result.rule_id, result.notify) == (".m.rule.master", False)


def test_suppress_notices() -> None:
    assert outcome(message(msgtype="m.notice")) == (".m.rule.suppress_notices", False, False, None)


def test_invite_for_me() -> None:
    invite = state("m.room.member", ALICE, membership="invite")
    assert outcome(invite) == (".m.rule.invite_for_me", True, False, "default")


def test_member_event_for_someone_else_is_silent() -> None:
    invite = state("m.room.member", "@carol:example.org", membership="invite")
    assert outcome(invite) == (".m.rule.member_event", False, False, None)
    join = state("m.room.member", BOB, membership="join")
    assert outcome(join)[0] == ".m.rule.member_event"


def test_is_user_mention() -> None:
    event = message("hey", **{"m.mentions": {"user_ids": [ALICE]}})
    assert outcome(event) == (".m.rule.is_user_mention", True, True, "default")
    other = message("hey", **{"m.mentions": {"user_ids": [BOB]}})
    assert outcome(other)[0] == ".m.rule.message"


def test_is_room_mention_needs_permission() -> None:
    event = message("@room", **{"m.mentions": {"room": True}})
    assert outcome(event, sender_power_level=50) == (".m.rule.is_room_mention", True, True, None)
    assert outcome(event, sender_power_level=49)[0] == ".m.rule.message"
    levels = notification_levels({"notifications": {"room": 100}})
    lowly = outcome(event, sender_power_level=50, notification_power_levels=levels)
    assert lowly[0] == ".m.rule.message"
    # room: "true" (a string) is not the boolean true.
    assert outcome(message(**{"m.mentions": {"room": "true"}}), sender_power_level=100)[0] == (
        ".m.rule.message"
    )


def test_tombstone_needs_state_key() -> None:
    tombstone = state("m.room.tombstone", "", body="moved", replacement_room="!new:example.org")
    assert outcome(tombstone) == (".m.rule.tombstone", True, True, None)
    not_state = dict(tombstone)
    del not_state["state_key"]
    assert outcome(not_state) == (None, False, False, None)


def test_reaction_server_acl_and_edits_are_silent() -> None:
    reaction = {
        "type": "m.reaction",
        "sender": BOB,
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}},
    }
    assert outcome(reaction) == (".m.rule.reaction", False, False, None)
    acl = state("m.room.server_acl", "", allow=["*"], deny=[])
    assert outcome(acl)[0] == ".m.rule.room.server_acl"
    edit = message(
        "* fixed",
        **{"m.new_content": {"body": "fixed"}, "m.relates_to": {"rel_type": "m.replace"}},
    )
    assert outcome(edit) == (".m.rule.suppress_edits", False, False, None)


def test_call_rings() -> None:
    call = {"type": "m.call.invite", "sender": BOB, "content": {"call_id": "1", "version": 1}}
    assert outcome(call) == (".m.rule.call", True, False, "ring")


def test_one_to_one_and_group_messages() -> None:
    encrypted = {"type": "m.room.encrypted", "sender": BOB, "content": {"algorithm": "x"}}
    assert outcome(encrypted, member_count=2) == (
        ".m.rule.encrypted_room_one_to_one",
        True,
        False,
        "default",
    )
    assert outcome(encrypted, member_count=3) == (".m.rule.encrypted", True, False, None)
    assert outcome(message(), member_count=2) == (".m.rule.room_one_to_one", True, False, "default")
    assert outcome(message(), member_count=3) == (".m.rule.message", True, False, None)


def test_unmatched_and_own_events_do_not_notify() -> None:
    topic = state("m.room.topic", "", topic="lunch")
    assert outcome(topic) == (None, False, False, None)
    own = message(**{"m.mentions": {"user_ids": [ALICE]}})
    own["sender"] = ALICE
    assert outcome(own) == (None, False, False, None)


# Conditions ------------------------------------------------------------------------


def test_event_match_absent_or_non_string_never_matches_even_star() -> None:
    rule = parse_rule(
        "override",
        "topic",
        {
            "conditions": [{"kind": "event_match", "key": "content.topic", "pattern": "*"}],
            "actions": ["notify"],
        },
    )
    ruleset = build_ruleset(ALICE, [rule])
    assert evaluate(ruleset, state("m.room.topic", topic="x"), ctx()).rule_id == "topic"
    assert evaluate(ruleset, state("m.room.topic", topic=None), ctx()).rule_id is None
    assert evaluate(ruleset, state("m.room.topic"), ctx()).rule_id is None


def test_dotted_paths_and_escapes() -> None:
    assert parse_dotted_path("content.body") == ("content", "body")
    assert parse_dotted_path("content.m\\.relates_to") == ("content", "m.relates_to")
    assert parse_dotted_path("content.m\\\\foo") == ("content", "m\\foo")
    assert parse_dotted_path("content.a\\xb") == ("content", "a\\xb")


def override(rule_id: str, *conditions: JsonDict) -> PushRule:
    return parse_rule("override", rule_id, {"conditions": list(conditions), "actions": ["notify"]})


def matches(condition: JsonDict, event: JsonDict, **kwargs: Any) -> bool:
    ruleset = build_ruleset(ALICE, [override("r", condition)])
    return evaluate(ruleset, event, ctx(**kwargs)).rule_id == "r"


def test_event_property_is_exact_and_typed() -> None:
    create = state("m.room.create", **{"m.federate": True, "room_version": "11"})
    cond = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert matches(cond, create)
    assert not matches(cond, state("m.room.create", **{"m.federate": "true"}))
    assert not matches(cond, state("m.room.create", **{"m.federate": 1}))
    one = {"kind": "event_property_is", "key": "content.n", "value": 1}
    assert matches(one, state("x", n=1))
    assert not matches(one, state("x", n=True))
    assert not matches(one, state("x", n=1.0))
    null = {"kind": "event_property_is", "key": "content.n", "value": None}
    assert matches(null, state("x", n=None))
    assert not matches(null, state("x"))


def test_event_property_contains() -> None:
    aliases = state("m.room.canonical_alias", alt_aliases=["#a:example.org", "#my:example.com"])
    cond = {"kind": "event_property_contains", "key": "content.alt_aliases"}
    assert matches({**cond, "value": "#my:example.com"}, aliases)
    assert not matches({**cond, "value": ":example.com"}, aliases)
    assert not matches({**cond, "value": "#my:example.com"}, state("x", alt_aliases="#my"))


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<3", 2, True),
        ("<3", 3, False),
        (">3", 4, True),
        (">3", 3, False),
        ("<=3", 3, True),
        ("<=3", 4, False),
        (">=3", 3, True),
        (">=3", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, expected: bool) -> None:
    cond = {"kind": "room_member_count", "is": spec}
    assert matches(cond, message(), member_count=count) is expected


def test_contains_display_name_word_boundaries() -> None:
    cond = {"kind": "contains_display_name"}
    assert matches(cond, message("hi Alice!"))
    assert matches(cond, message("ALICE: look"))
    assert not matches(cond, message("Alicent is here"))
    assert not matches(cond, message("hi Alice"), user_display_name=None)
    assert matches(cond, message("ping [bot].x"), user_display_name="[bot].x")
    assert not matches(cond, message("ping xbotx"), user_display_name="b?t")


def test_sender_notification_permission() -> None:
    cond = {"kind": "sender_notification_permission", "key": "room"}
    assert matches(cond, message(), sender_power_level=50)
    assert not matches(cond, message(), sender_power_level=10)
    assert matches(cond, message(), sender_power_level=float("inf"))
    other = {"kind": "sender_notification_permission", "key": "unknown"}
    assert not matches(other, message(), sender_power_level=100)


def test_notification_levels_defaults_and_ignores_non_integers() -> None:
    assert notification_levels(None) == {"room": 50}
    assert notification_levels({"notifications": {"room": "20", "x": 5}}) == {"room": 50, "x": 5}


def test_unknown_condition_disables_rule() -> None:
    assert not matches({"kind": "org.example.future"}, message())


# Merging and ordering --------------------------------------------------------------


def test_user_rules_rank_below_master_and_above_defaults() -> None:
    silence = PushRule(
        "override", "silence_bob", (), ({"kind": "event_match", "key": "sender", "pattern": BOB},)
    )
    ruleset = build_ruleset(ALICE, [silence])
    overrides = [r.rule_id for r in ruleset.rules if r.kind == "override"]
    assert overrides[:3] == [".m.rule.master", "silence_bob", ".m.rule.suppress_notices"]
    mention = message(**{"m.mentions": {"user_ids": [ALICE]}})
    assert evaluate(ruleset, mention, ctx()).rule_id == "silence_bob"


def test_kinds_are_checked_in_spec_order() -> None:
    rules = [
        PushRule("underride", "u", ("notify",), ()),
        PushRule("sender", BOB, ("notify", {"set_tweak": "sound", "value": "bob"})),
        PushRule("room", ROOM, ("notify", {"set_tweak": "sound", "value": "room"})),
        PushRule("content", "c", ("notify", {"set_tweak": "highlight"}), pattern="tea"),
    ]
    ruleset = build_ruleset(ALICE, rules)
    assert [r.kind for r in ruleset.rules if not r.default] == [
        "content",
        "room",
        "sender",
        "underride",
    ]
    assert evaluate(ruleset, message("time for tea"), ctx()).rule_id == "c"
    assert evaluate(ruleset, message("time"), ctx()).sound == "room"
    elsewhere = {**message("time"), "room_id": "!other:example.org"}
    assert evaluate(ruleset, elsewhere, ctx()).sound == "bob"
    # A user underride outranks the default underrides.
    assert evaluate(ruleset, {**elsewhere, "sender": "@carol:example.org"}, ctx()).rule_id == "u"


def test_same_kind_order_decides_the_tie() -> None:
    tea = PushRule("content", "tea", ("notify",), pattern="tea")
    time_ = PushRule("content", "time", ("notify", {"set_tweak": "highlight"}), pattern="time")
    sentence = message("It's time for tea")
    assert evaluate(build_ruleset(ALICE, [tea, time_]), sentence, ctx()).rule_id == "tea"
    assert evaluate(build_ruleset(ALICE, [time_, tea]), sentence, ctx()).rule_id == "time"


def test_disabled_rules_never_match_and_overrides_apply_to_defaults() -> None:
    off = PushRule("content", "tea", ("notify",), pattern="tea", enabled=False)
    overrides = {
        ("underride", ".m.rule.message"): RuleOverride(
            actions=("notify", {"set_tweak": "sound", "value": "x"})
        ),
        ("override", ".m.rule.suppress_notices"): RuleOverride(enabled=False),
    }
    ruleset = build_ruleset(ALICE, [off], overrides)
    result = evaluate(ruleset, message("tea"), ctx())
    assert (result.rule_id, result.sound) == (".m.rule.message", "x")
    notice = evaluate(ruleset, message("tea", msgtype="m.notice"), ctx())
    assert notice.rule_id == ".m.rule.message"
    rule = ruleset.get("underride", ".m.rule.message")
    assert rule is not None and rule.default and rule.to_json()["actions"][1]["value"] == "x"


def test_highlight_tweak_values_and_historical_actions() -> None:
    actions = parse_actions(
        ["notify", "dont_notify", "coalesce", {"set_tweak": "highlight", "value": False}]
    )
    assert actions == (
        "notify",
        "dont_notify",
        "coalesce",
        {"set_tweak": "highlight", "value": False},
    )
    rule = PushRule("content", "x", actions, pattern="x")
    result = evaluate(build_ruleset(ALICE, [rule]), message("x"), ctx())
    assert result.notify and not result.highlight
    silent = PushRule(
        "content", "x", parse_actions(["dont_notify", {"set_tweak": "highlight"}]), pattern="x"
    )
    result = evaluate(build_ruleset(ALICE, [silent]), message("x"), ctx())
    assert result.rule_id == "x" and not result.notify and not result.highlight


# Validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rule_id", "body", "errcode"),
    [
        ("bogus", "x", {"actions": []}, Errcode.INVALID_PARAM),
        ("override", ".mine", {"actions": []}, Errcode.INVALID_PARAM),
        ("override", "a/b", {"actions": []}, Errcode.INVALID_PARAM),
        ("override", "a\\b", {"actions": []}, Errcode.INVALID_PARAM),
        ("sender", "bob", {"actions": []}, Errcode.INVALID_PARAM),
        ("override", "x", {}, Errcode.MISSING_PARAM),
        ("override", "x", {"actions": "notify"}, Errcode.BAD_JSON),
        ("override", "x", {"actions": ["explode"]}, Errcode.INVALID_PARAM),
        ("override", "x", {"actions": [{"value": 1}]}, Errcode.INVALID_PARAM),
        ("override", "x", {"actions": [], "conditions": {}}, Errcode.BAD_JSON),
        ("override", "x", {"actions": [], "conditions": [{"key": "type"}]}, Errcode.BAD_JSON),
        (
            "override",
            "x",
            {"actions": [], "conditions": [{"kind": "event_match", "key": "t"}]},
            Errcode.INVALID_PARAM,
        ),
        (
            "override",
            "x",
            {
                "actions": [],
                "conditions": [{"kind": "event_property_is", "key": "t", "value": [1]}],
            },
            Errcode.INVALID_PARAM,
        ),
        (
            "override",
            "x",
            {"actions": [], "conditions": [{"kind": "room_member_count", "is": "~2"}]},
            Errcode.INVALID_PARAM,
        ),
        ("content", "x", {"actions": []}, Errcode.MISSING_PARAM),
        ("content", "x", {"actions": [], "pattern": 5}, Errcode.BAD_JSON),
    ],
)
def test_parse_rule_rejects(kind: str, rule_id: str, body: JsonDict, errcode: Errcode) -> None:
    with pytest.raises(MatrixError) as info:
        parse_rule(kind, rule_id, body)
    assert info.value.errcode == errcode


def test_parse_rule_accepts_and_shapes() -> None:
    room = parse_rule("room", ROOM, {"actions": ["notify"], "conditions": "ignored"})
    assert room.to_json() == {
        "rule_id": ROOM,
        "default": False,
        "enabled": True,
        "actions": ["notify"],
    }
    content = parse_rule("content", "cake", {"actions": [], "pattern": "cake*lie"})
    assert content.to_json()["pattern"] == "cake*lie"
    bare = parse_rule("underride", "all", {"actions": ["notify"]})
    assert bare.conditions == () and "conditions" in bare.to_json()
    future = parse_rule("override", "f", {"actions": [], "conditions": [{"kind": "future"}]})
    assert future.conditions == ({"kind": "future"},)


# Robustness ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
interesting_keys = st.sampled_from(
    [
        "type",
        "content",
        "state_key",
        "sender",
        "room_id",
        "body",
        "m.mentions",
        "user_ids",
        "room",
        "msgtype",
        "m.relates_to",
        "rel_type",
        "membership",
    ]
)
events = st.dictionaries(
    interesting_keys | st.text(max_size=8),
    json_values
    | st.dictionaries(interesting_keys, json_values, max_size=5)
    | st.dictionaries(interesting_keys, st.dictionaries(interesting_keys, json_values), max_size=3),
    max_size=8,
)
FUZZ_RULESET = build_ruleset(
    ALICE,
    [
        PushRule("content", "c", ("notify",), pattern="*a?b*"),
        override("name", {"kind": "contains_display_name"}),
        override("count", {"kind": "room_member_count", "is": ">=2"}),
    ],
)


@settings(max_examples=300, deadline=None)
@given(event=events, member_count=st.integers(0, 10), name=st.none() | st.text(max_size=5))
def test_evaluation_never_raises(event: JsonDict, member_count: int, name: str | None) -> None:
    context = PushContext(ALICE, member_count, name, 50, {"room": 50})
    result = evaluate(FUZZ_RULESET, event, context)
    assert result.highlight <= result.notify
    evaluate(DEFAULTS, event, context)
