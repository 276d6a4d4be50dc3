"""Moderation policy rules (Client-Server API, "Moderation policy lists"): parsing and the
matcher, with the spec's examples."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.events.policy_rules import RULE_TYPES, PolicyMatcher, PolicyRule, parse_rule
from peyvand.types import ServerName

ROOM = "!list:example.org"


def _rule(event_type: str, entity: Any, recommendation: Any = "m.ban", **extra: Any) -> Any:
    content = {"entity": entity, "recommendation": recommendation, "reason": "spam", **extra}
    return parse_rule(ROOM, event_type, f"rule:{entity}", content)


def _matcher(*rules: PolicyRule | None) -> PolicyMatcher:
    return PolicyMatcher(tuple(r for r in rules if r is not None))


def test_spec_examples() -> None:
    matcher = _matcher(
        _rule("m.policy.rule.user", "@alice*:example.org"),
        _rule("m.policy.rule.server", "*.example.org"),
        _rule("m.policy.rule.room", "#*:example.org"),
    )
    assert matcher.user("@alice:example.org") is not None
    assert matcher.user("@alice2:example.org") is not None
    assert matcher.user("@bob:example.org") is None
    assert matcher.user("@alice:example.org.evil") is None  # the whole ID must match
    assert matcher.server(ServerName("matrix.example.org")) is not None
    assert matcher.server(ServerName("example.org")) is None  # "*." needs a subdomain
    assert matcher.room(["!abc:elsewhere", "#lobby:example.org"]) is not None
    assert matcher.room(["!abc:example.org"]) is None


def test_parsed_rule_keeps_where_it_came_from() -> None:
    rule = _rule("m.policy.rule.user", "@spam:evil.example")
    assert rule == PolicyRule(
        kind="user",
        entity="@spam:evil.example",
        reason="spam",
        room_id=ROOM,
        event_type="m.policy.rule.user",
        state_key="rule:@spam:evil.example",
    )


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("@a?c:x.org", ["@abc:x.org", "@a.c:x.org"], ["@ac:x.org", "@abbc:x.org"]),
        ("@*:x.org", ["@:x.org", "@anyone:x.org"], ["@anyone:y.org"]),
        ("@[x]+:x.org", ["@[x]+:x.org"], ["@xx:x.org"]),  # no regex syntax: literal
        ("@Spam:X.org", ["@spam:x.org", "@SPAM:X.ORG"], ["@spam2:x.org"]),  # case-insensitive
    ],
)
def test_user_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    matcher = _matcher(_rule("m.policy.rule.user", pattern))
    for user in matches:
        assert matcher.user(user) is not None, user
    for user in misses:
        assert matcher.user(user) is None, user


def test_server_rules_ignore_the_port_unless_they_name_one() -> None:
    matcher = _matcher(
        _rule("m.policy.rule.server", "evil.example"),
        _rule("m.policy.rule.server", "10.0.0.?"),
        _rule("m.policy.rule.server", "ported.example:8448"),
    )
    assert matcher.server(ServerName("evil.example")) is not None
    assert matcher.server(ServerName("evil.example:8448")) is not None
    assert matcher.server(ServerName("EVIL.example:1")) is not None
    assert matcher.server(ServerName("10.0.0.7:8008")) is not None
    assert matcher.server(ServerName("10.0.0.17")) is None
    assert matcher.server(ServerName("ported.example:8448")) is not None
    assert matcher.server(ServerName("ported.example:9000")) is None
    assert matcher.server(ServerName("good.example")) is None


def test_legacy_event_types_count() -> None:
    for prefix in ("m.room.rule", "org.matrix.mjolnir.rule"):
        matcher = _matcher(
            _rule(f"{prefix}.user", "@old:x.org"),
            _rule(f"{prefix}.server", "old.example"),
            _rule(f"{prefix}.room", "!old:x.org"),
        )
        assert matcher.user("@old:x.org") is not None, prefix
        assert matcher.server(ServerName("old.example")) is not None, prefix
        assert matcher.room(["!old:x.org"]) is not None, prefix
    assert len(RULE_TYPES) == 9


def test_only_ban_recommendations_are_kept() -> None:
    assert _rule("m.policy.rule.user", "@a:x.org", "m.mute") is None
    assert _rule("m.policy.rule.user", "@a:x.org", "org.matrix.mjolnir.ban") is None
    assert _rule("m.policy.rule.user", "@a:x.org", None) is None


@pytest.mark.parametrize(
    "content",
    [
        {},  # a removed (or redacted) rule
        {"entity": "", "recommendation": "m.ban"},
        {"entity": 7, "recommendation": "m.ban"},
        {"entity": ["@a:x.org"], "recommendation": "m.ban"},
        {"entity": "@a:x.org", "recommendation": ["m.ban"]},
        {"recommendation": "m.ban", "reason": "no entity"},
    ],
)
def test_invalid_content_is_ignored(content: dict[str, Any]) -> None:
    assert parse_rule(ROOM, "m.policy.rule.user", "k", content) is None


def test_a_bad_reason_keeps_the_rule() -> None:
    rule = parse_rule(
        ROOM, "m.policy.rule.user", "k", {"entity": "@a:x", "recommendation": "m.ban", "reason": 5}
    )
    assert rule is not None and rule.reason == ""


def test_other_event_types_are_not_rules() -> None:
    assert (
        parse_rule(ROOM, "m.room.message", "", {"entity": "@a:x", "recommendation": "m.ban"})
        is None
    )
    assert (
        parse_rule(ROOM, "m.policy.rule.alien", "", {"entity": "@a:x", "recommendation": "m.ban"})
        is None
    )


def test_kinds_do_not_mix_and_the_first_matching_rule_is_given() -> None:
    user_rule = _rule("m.policy.rule.user", "@*:evil.example")
    matcher = _matcher(user_rule, _rule("m.policy.rule.user", "@spam*:evil.example"))
    assert matcher.server(ServerName("evil.example")) is None
    assert matcher.room(["@spam:evil.example"]) is None
    assert matcher.user("@spam:evil.example") == user_rule
    assert PolicyMatcher().user("@a:x") is None


def test_many_rules() -> None:
    rules = [_rule("m.policy.rule.user", f"@user{i}-*:x.org") for i in range(2000)]
    rules += [_rule("m.policy.rule.user", f"@exact{i}:x.org") for i in range(2000)]
    matcher = _matcher(*rules)
    assert matcher.user("@user1999-more:x.org") == rules[1999]
    assert matcher.user("@exact1999:x.org") == rules[3999]
    assert matcher.user("@someone:x.org") is None
