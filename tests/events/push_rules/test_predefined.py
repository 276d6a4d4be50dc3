"""The server-default push rules are shared between users (issue 15, memory): only the
two rules that name their user are built per user."""

from __future__ import annotations

from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.ruleset import build_ruleset

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
PER_USER = {".m.rule.invite_for_me", ".m.rule.is_user_mention"}


def test_two_users_default_rules_share_every_rule_that_does_not_name_them() -> None:
    alice, bob = default_rules(ALICE), default_rules(BOB)
    assert [r.rule_id for r in alice] == [r.rule_id for r in bob]
    for a, b in zip(alice, bob, strict=True):
        if a.rule_id in PER_USER:
            assert a != b
            assert ALICE in str(a.conditions) and BOB in str(b.conditions)
            assert BOB not in str(a) and ALICE not in str(b)
        else:
            assert a is b


def test_two_users_rulesets_share_rule_objects_and_compiled_form() -> None:
    alice, bob = build_ruleset(ALICE, []), build_ruleset(BOB, [])
    shared = [a for a, b in zip(alice.rules, bob.rules, strict=True) if a is b]
    assert len(shared) == len(alice.rules) - len(PER_USER)
    assert alice.compiled is bob.compiled
    # Each still names its own user where the spec says so.
    invite = alice.get("override", ".m.rule.invite_for_me")
    assert invite is not None and invite.conditions[2]["pattern"] == ALICE
    mention = bob.get("override", ".m.rule.is_user_mention")
    assert mention is not None and mention.conditions[0]["value"] == BOB


def test_reading_the_json_does_not_change_the_shared_rules() -> None:
    out = build_ruleset(ALICE, []).to_json()
    out["override"][1]["conditions"][0]["pattern"] = "mutated"
    out["underride"][0]["actions"].clear()
    bob = build_ruleset(BOB, []).to_json()
    assert bob["override"][1]["conditions"][0]["pattern"] == "m.notice"
    assert bob["underride"][0]["actions"] == ["notify", {"set_tweak": "sound", "value": "ring"}]
