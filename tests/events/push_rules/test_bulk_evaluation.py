"""Evaluating one event for a room's members at once (``EventEvaluation`` over rulesets
compiled per shape) gives each member exactly the actions of their own rules evaluated
alone, in the spec's order (Client-Server API, "Push Rules"): checked against a direct
reading of the spec over random rulesets, display names and events."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.events.dotted_paths import parse_dotted_path
from peyvand.events.glob import compile_glob
from peyvand.events.push_rules.actions import NO_ACTIONS, Actions, actions_of
from peyvand.events.push_rules.evaluation import EventEvaluation
from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.rule import PushRule, RuleOverride
from peyvand.events.push_rules.ruleset import Ruleset, build_ruleset
from peyvand.types import JsonDict

USERS = ["@al:x.org", "@AL:x.org", "@bo:x.org", "@cy:x.org"]
OTHER = "@zed:x.org"
ROOM = "!r:x.org"
SELF = "<self>"  # replaced by the owner's user ID in a generated rule
_ABSENT = object()


# A direct reading of "Push Rules" -------------------------------------------------------


def _lookup(event: Mapping[str, Any], key: str) -> Any:
    value: Any = event
    for part in parse_dotted_path(key):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _scalar_equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _condition_holds(
    condition: Mapping[str, Any],
    event: Mapping[str, Any],
    name: str | None,
    member_count: int,
    sender_level: int,
    levels: Mapping[str, int],
) -> bool:
    kind, key = condition.get("kind"), condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = _lookup(event, key)
        words = parse_dotted_path(key) == ("content", "body")
        glob = compile_glob(pattern, words=words, max_length=None)
        return isinstance(value, str) and glob.matches(value)
    if kind in ("event_property_is", "event_property_contains"):
        expected = condition.get("value", _ABSENT)
        scalar = expected is None or type(expected) in (str, bool, int)
        if not isinstance(key, str) or not scalar:
            return False
        value = _lookup(event, key)
        if kind == "event_property_is":
            return _scalar_equal(value, expected)
        return isinstance(value, list) and any(_scalar_equal(v, expected) for v in value)
    if kind == "contains_display_name":
        body = _lookup(event, "content.body")
        if not name or not isinstance(body, str):
            return False
        pattern = rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"
        return re.search(pattern, body, re.IGNORECASE) is not None
    if kind == "room_member_count":
        found = re.fullmatch(r"(==|<=|>=|<|>)?([0-9]+)", str(condition.get("is")))
        if found is None or not isinstance(condition.get("is"), str):
            return False
        n, op = int(found.group(2)), found.group(1) or "=="
        return {
            "==": member_count == n,
            "<": member_count < n,
            ">": member_count > n,
            "<=": member_count <= n,
            ">=": member_count >= n,
        }[op]
    if kind == "sender_notification_permission" and isinstance(key, str):
        required = levels.get(key, {"room": 50}.get(key))
        return required is not None and sender_level >= required
    return False


def _alone(
    rules: Sequence[PushRule],
    event: Mapping[str, Any],
    user_id: str,
    name: str | None,
    member_count: int,
    sender_level: int,
    levels: Mapping[str, int],
) -> Actions:
    if event.get("sender") == user_id:
        return NO_ACTIONS
    for rule in rules:
        if not rule.enabled:
            continue
        conditions: Sequence[Mapping[str, Any]] = rule.conditions
        if rule.kind == "content":
            conditions = [{"kind": "event_match", "key": "content.body", "pattern": rule.pattern}]
        elif rule.kind in ("room", "sender"):
            key = "room_id" if rule.kind == "room" else "sender"
            conditions = [{"kind": "event_property_is", "key": key, "value": rule.rule_id}]
        if all(
            _condition_holds(c, event, name, member_count, sender_level, levels) for c in conditions
        ):
            return actions_of(rule)
    return NO_ACTIONS


# Random rulesets and events ---------------------------------------------------------------

literals = st.sampled_from([SELF, *USERS, OTHER, "al", "hello", "m.notice", "*al*", "@?l:x.org"])
conditions = st.one_of(
    st.builds(
        lambda key, pattern: {"kind": "event_match", "key": key, "pattern": pattern},
        st.sampled_from(["content.body", "state_key", "sender", "content.msgtype", "type"]),
        literals,
    ),
    st.builds(
        lambda kind, key, value: {"kind": kind, "key": key, "value": value},
        st.sampled_from(["event_property_is", "event_property_contains"]),
        st.sampled_from(["content.m\\.mentions.user_ids", "sender", "content.m\\.mentions.room"]),
        literals | st.sampled_from([True, 1, None]),
    ),
    st.just({"kind": "contains_display_name"}),
    st.builds(
        lambda spec: {"kind": "room_member_count", "is": spec},
        st.sampled_from(["2", ">2", "<=3", "bad"]),
    ),
    st.builds(
        lambda key: {"kind": "sender_notification_permission", "key": key},
        st.sampled_from(["room", "other"]),
    ),
    st.just({"kind": "unknown_kind"}),
)
actions = st.sampled_from(
    [
        ("notify",),
        ("notify", {"set_tweak": "highlight"}),
        ("notify", {"set_tweak": "sound", "value": "default"}),
        ("dont_notify",),
        (),
    ]
)
user_rules = st.one_of(
    st.builds(
        lambda kind, i, conds, acts, enabled: PushRule(
            kind, f"r{i}", acts, tuple(conds), None, enabled
        ),
        st.sampled_from(["override", "underride"]),
        st.integers(0, 3),
        st.lists(conditions, max_size=3),
        actions,
        st.booleans(),
    ),
    st.builds(
        lambda pattern, acts: PushRule("content", f"c-{pattern}", acts, (), pattern),
        literals,
        actions,
    ),
    st.builds(lambda acts: PushRule("room", ROOM, acts), actions),
    st.builds(lambda who, acts: PushRule("sender", who, acts), st.sampled_from(USERS), actions),
)
DEFAULT_IDS = [(r.kind, r.rule_id) for r in default_rules(OTHER)]
overrides = st.dictionaries(
    st.sampled_from(DEFAULT_IDS),
    st.builds(RuleOverride, st.none() | st.booleans(), st.none() | actions),
    max_size=3,
)
rulesets = st.tuples(st.lists(user_rules, max_size=4, unique_by=lambda r: r.rule_id), overrides)
names = st.none() | st.sampled_from(["al", "Bo", "cy cy", ""])
words = st.sampled_from(["al", "AL", "bo", "hello", "cy cy", "@al:x.org", "x", "!"])
events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["m.room.message", "m.room.member", "m.room.encrypted"]),
        "sender": st.sampled_from([*USERS, OTHER]),
        "room_id": st.just(ROOM),
        "content": st.fixed_dictionaries(
            {
                "body": st.lists(words, max_size=4).map(" ".join),
                "membership": st.sampled_from(["invite", "join"]),
                "msgtype": st.sampled_from(["m.text", "m.notice"]),
                "m.mentions": st.fixed_dictionaries(
                    {
                        "user_ids": st.lists(st.sampled_from([*USERS, OTHER, 1, None])),
                        "room": st.sampled_from([True, False, 1]),
                    }
                ),
            }
        ),
    },
    optional={"state_key": st.sampled_from([*USERS, OTHER, ""])},
)


def _own(user_id: str, rule: PushRule) -> PushRule:
    """``rule`` with the placeholder replaced by its owner's ID."""

    def fill(value: Any) -> Any:
        return user_id if value == SELF else value

    return PushRule(
        rule.kind,
        rule.rule_id,
        rule.actions,
        tuple({k: fill(v) for k, v in c.items()} for c in rule.conditions),
        fill(rule.pattern),
        rule.enabled,
    )


@settings(max_examples=400, deadline=None)
@given(
    members=st.lists(
        st.tuples(st.sampled_from(USERS), rulesets, names), min_size=1, max_size=6
    ).map(lambda ms: list({m[0]: m for m in ms}.values())),
    event=events,
    member_count=st.integers(1, 4),
    sender_level=st.sampled_from([0, 50, 100]),
    levels=st.sampled_from([{}, {"room": 100}, {"room": 0, "other": 10}]),
)
def test_members_evaluated_together_get_what_each_gets_alone(
    members: list[
        tuple[str, tuple[list[PushRule], dict[tuple[str, str], RuleOverride]], str | None]
    ],
    event: JsonDict,
    member_count: int,
    sender_level: int,
    levels: dict[str, int],
) -> None:
    together = EventEvaluation(
        event,
        member_count=member_count,
        sender_power_level=sender_level,
        notification_power_levels=levels,
    )
    for user_id, (rules, changes), name in members:
        ruleset = build_ruleset(user_id, [_own(user_id, r) for r in rules], changes)
        expected = _alone(ruleset.rules, event, user_id, name, member_count, sender_level, levels)
        assert together.actions_for(ruleset.compiled, user_id, name) == expected


def test_users_with_the_default_rules_share_one_compiled_ruleset() -> None:
    rulesets = [build_ruleset(f"@user{i}:x.org", []) for i in range(50)]
    assert len({id(r.compiled) for r in rulesets}) == 1
    keyword = PushRule("content", "kw", ("notify",), pattern="tea")
    with_keyword = build_ruleset("@tea:x.org", [keyword])
    assert with_keyword.compiled is not rulesets[0].compiled
    assert build_ruleset("@cake:x.org", [keyword]).compiled is with_keyword.compiled
    # A rule naming its owner is shared by shape; one naming someone else is not.
    self_rule = PushRule("content", "me", ("notify",), pattern="@me:x.org")
    mine = build_ruleset("@me:x.org", [self_rule])
    assert build_ruleset("@you:x.org", [_own("@you:x.org", _pattern(SELF))]).compiled is (
        build_ruleset("@me:x.org", [_own("@me:x.org", _pattern(SELF))]).compiled
    )
    assert build_ruleset("@you:x.org", [self_rule]).compiled is not mine.compiled


def _pattern(pattern: str) -> PushRule:
    return PushRule("content", "me", ("notify",), pattern=pattern)


def test_one_plan_serves_every_member_with_the_default_rules() -> None:
    members = [f"@user{i}:x.org" for i in range(200)]
    rulesets: dict[str, Ruleset] = {u: build_ruleset(u, []) for u in members}
    event = {
        "type": "m.room.message",
        "sender": members[0],
        "room_id": ROOM,
        "content": {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [members[7]]}},
    }
    evaluation = EventEvaluation(event, member_count=200)
    results = {u: evaluation.actions_for(rulesets[u].compiled, u, None) for u in members}
    assert results[members[0]] == NO_ACTIONS
    assert results[members[7]].rule_id == ".m.rule.is_user_mention"
    assert results[members[7]].highlight
    # The same Actions object for all 198 others: nothing was evaluated per member.
    others = {id(results[u]) for u in members[1:] if u != members[7]}
    assert len(others) == 1
    plain = results[members[1]]
    assert plain.rule_id == ".m.rule.message" and plain.notify and not plain.highlight
