"""A user's push ruleset and its evaluation (Client-Server API, "Push Rules").

The evaluator runs once per event for every local member, so a ruleset is compiled once,
when its ``Ruleset`` is built, into a form shared by every user with rules of the same
shape (``compiled``), globs never backtrack (``events.glob``), and a room's members are
evaluated together (``evaluation.EventEvaluation``).

    build_ruleset(user_id, ...)        a user's rules merged with the server-default rules
    Ruleset(user_id, rules, changes)   rules in evaluation order, compiled
    evaluate(ruleset, event, ctx)      -> Actions (notify, highlight, sound, tweaks), one user
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any, Final

from peyvand.events.push_rules.actions import Actions
from peyvand.events.push_rules.compiled import CompiledRuleset, compile_ruleset
from peyvand.events.push_rules.conditions import PushContext
from peyvand.events.push_rules.evaluation import EventEvaluation
from peyvand.events.push_rules.predefined import default_rules
from peyvand.events.push_rules.rule import KINDS, PushRule, RuleOverride
from peyvand.types import JsonDict

# Any user: the default rules compile to the same form for everyone.
_ANY_USER: Final = "@any:invalid"


def build_ruleset(
    user_id: str,
    user_rules: Iterable[PushRule],
    overrides: Mapping[tuple[str, str], RuleOverride] | None = None,
) -> Ruleset:
    """``user_id``'s ruleset: ``user_rules`` (each kind in its stored order) merged with
    the default rules, to which ``overrides`` holds the user's ``enabled``/``actions``
    changes, keyed by (kind, rule_id)."""
    return Ruleset(user_id, user_rules, overrides)


def _merge(
    user_id: str,
    user_rules: Iterable[PushRule],
    overrides: Mapping[tuple[str, str], RuleOverride],
) -> tuple[PushRule, ...]:
    """ "Predefined Rules": server-default rules rank below user-defined rules of the same
    kind, except ``.m.rule.master``, which ranks above every rule."""
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
    return tuple(head + [rule for kind in KINDS for rule in by_kind[kind]])


@lru_cache(maxsize=1)
def _default_compiled() -> CompiledRuleset:
    return compile_ruleset(_ANY_USER, _merge(_ANY_USER, (), {}))


class Ruleset:
    """A user's complete ruleset, compiled once. Immutable.

    Only the user's own rules and changes are kept (most users have none): ``rules``, in
    evaluation order, is merged again when read (the push rules API), and ``compiled`` is
    shared with every user whose rules differ only by their own ID.
    """

    __slots__ = ("_overrides", "_user_id", "_user_rules", "compiled")

    def __init__(
        self,
        user_id: str,
        user_rules: Iterable[PushRule] = (),
        overrides: Mapping[tuple[str, str], RuleOverride] | None = None,
    ) -> None:
        self._user_id = user_id
        self._user_rules = tuple(user_rules)
        self._overrides = dict(overrides or {})
        self.compiled: CompiledRuleset = (
            compile_ruleset(user_id, self.rules)
            if self._user_rules or self._overrides
            else _default_compiled()
        )

    @property
    def rules(self) -> tuple[PushRule, ...]:
        """Every rule in evaluation order: the master rule, then each kind in the spec's
        order, the user's rules before the server-default ones."""
        return _merge(self._user_id, self._user_rules, self._overrides)

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
    """The actions of the first enabled rule that matches ``event`` (a client-format event)
    for ``ctx.user_id``: ``EventEvaluation`` for a single user.

    "Push Rules": homeservers MUST NOT notify users of events they sent themselves, and an
    event that matches no rule does not notify.
    """
    evaluation = EventEvaluation(
        event,
        member_count=ctx.member_count,
        sender_power_level=ctx.sender_power_level,
        notification_power_levels=ctx.notification_power_levels,
    )
    return evaluation.actions_for(ruleset.compiled, ctx.user_id, ctx.user_display_name)
