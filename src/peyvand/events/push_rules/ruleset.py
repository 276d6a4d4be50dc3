"""A user's push ruleset and its evaluation (Client-Server API, "Push Rules").

The evaluator runs once per event per local member, so every rule is compiled once, when
its ``Ruleset`` is built, and globs never backtrack (``events.glob``).

    build_ruleset(user_id, ...)        a user's rules merged with the server-default rules
    Ruleset(rules)                     rules in evaluation order, compiled
    evaluate(ruleset, event, ctx)      -> Actions (notify, highlight, sound, tweaks)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from peyvand.events.push_rules.actions import NO_ACTIONS, Actions, actions_of
from peyvand.events.push_rules.conditions import Matcher, PushContext, compile_rule
from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.rule import KINDS, PushRule, RuleOverride
from peyvand.types import JsonDict


def build_ruleset(
    user_id: str,
    user_rules: Iterable[PushRule],
    overrides: Mapping[tuple[str, str], RuleOverride] | None = None,
) -> Ruleset:
    """Merge ``user_rules`` (each kind in its stored order) with the default rules.

    "Predefined Rules": server-default rules rank below user-defined rules of the same
    kind, except ``.m.rule.master``, which ranks above every rule. ``overrides`` holds the
    user's ``enabled``/``actions`` changes to default rules, keyed by (kind, rule_id).
    """
    overrides = overrides or {}
    by_kind: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
    for rule in user_rules:
        by_kind[rule.kind].append(rule)
    head: list[PushRule] = []
    for rule in default_rules(user_id):
        change = overrides.get((rule.kind, rule.rule_id))
        if change is not None:
            rule = replace(
                rule,
                actions=rule.actions if change.actions is None else change.actions,
                enabled=rule.enabled if change.enabled is None else change.enabled,
            )
        if rule.rule_id == ".m.rule.master":
            head.append(rule)
        else:
            by_kind[rule.kind].append(rule)
    return Ruleset(head + [rule for kind in KINDS for rule in by_kind[kind]])


class Ruleset:
    """A user's complete ruleset in evaluation order, compiled once. Immutable."""

    __slots__ = ("_compiled", "rules")

    def __init__(self, rules: Iterable[PushRule]) -> None:
        self.rules: tuple[PushRule, ...] = tuple(rules)
        self._compiled: tuple[tuple[PushRule, tuple[Matcher, ...]], ...] = tuple(
            (rule, compile_rule(rule)) for rule in self.rules if rule.enabled
        )

    def get(self, kind: str, rule_id: str) -> PushRule | None:
        for rule in self.rules:
            if rule.kind == kind and rule.rule_id == rule_id:
                return rule
        return None

    def to_json(self) -> JsonDict:
        """The ``global`` ruleset of GET /pushrules/ (``PushRuleset``), every kind present."""
        out: JsonDict = {kind: [] for kind in KINDS}
        for rule in self.rules:
            out[rule.kind].append(rule.to_json())
        return out


def evaluate(ruleset: Ruleset, event: Mapping[str, Any], ctx: PushContext) -> Actions:
    """The actions of the first enabled rule that matches ``event`` (a client-format event).

    "Push Rules": homeservers MUST NOT notify users of events they sent themselves, and an
    event that matches no rule does not notify.
    """
    if event.get("sender") == ctx.user_id:
        return NO_ACTIONS
    for rule, matchers in ruleset._compiled:
        if all(m.matches(event, ctx) for m in matchers):
            return actions_of(rule)
    return NO_ACTIONS
