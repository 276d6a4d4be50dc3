"""Evaluating one event for every member of a room (Client-Server API, "Push Rules"):
what does not depend on the member is done once per event, the rest is O(1) per member.

    evaluation = EventEvaluation(event, member_count=..., sender_power_level=..., ...)
    evaluation.actions_for(ruleset.compiled, user_id, display_name)    -> Actions

For each shape of ruleset (``compiled.CompiledRuleset``; every user with the default
rules has the same one) the first ``actions_for`` makes a *plan*: the rules are walked in
order, each condition that reads only the event and the room is evaluated (once per event
across all shapes), rules that cannot match are dropped, and the walk stops at the first
rule that matches whoever evaluates it. What is left are the rules that match only for
some users (a mention, an invite, a display name), each with its per-user tests prepared
from the event; for an ordinary message there are none and every member gets the same
``Actions``. The result is exactly that of evaluating each member's rules in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peyvand.events.push_rules.actions import NO_ACTIONS, Actions
from peyvand.events.push_rules.compiled import CompiledRuleset
from peyvand.events.push_rules.conditions import Matcher, PushContext, SelfMatcher, SelfTest


@dataclass(frozen=True, slots=True)
class _Plan:
    """A shape's rules left for one event: ``steps`` (per-user tests, actions) in order,
    then ``final`` for users none of them matched."""

    steps: tuple[tuple[tuple[SelfTest, ...], Actions], ...]
    final: Actions


class EventEvaluation:
    """One event (client format) evaluated for many users of one room."""

    __slots__ = ("_event", "_plans", "_prepared", "_room", "_sender", "_shared")

    def __init__(
        self,
        event: Mapping[str, Any],
        *,
        member_count: int,
        sender_power_level: int | float = 0,
        notification_power_levels: Mapping[str, int] | None = None,
    ) -> None:
        self._event = event
        self._sender = event.get("sender")
        # The room's facts; the user fields are never read by a shared matcher.
        self._room = PushContext(
            "", member_count, None, sender_power_level, notification_power_levels or {}
        )
        self._plans: dict[CompiledRuleset, _Plan] = {}
        self._shared: dict[Matcher, bool] = {}
        self._prepared: dict[SelfMatcher, SelfTest | None] = {}

    def actions_for(
        self, compiled: CompiledRuleset, user_id: str, display_name: str | None
    ) -> Actions:
        """The actions of the first enabled rule of ``compiled`` that matches the event for
        ``user_id`` (whose display name in the room is ``display_name``).

        "Push Rules": homeservers MUST NOT notify users of events they sent themselves,
        and an event that matches no rule does not notify.
        """
        if self._sender == user_id:
            return NO_ACTIONS
        plan = self._plan_of(compiled)
        for tests, actions in plan.steps:
            for test in tests:
                if not test(user_id, display_name):
                    break
            else:
                return actions
        return plan.final

    def uniform_actions(self, compiled: CompiledRuleset) -> Actions | None:
        """The actions of ``compiled`` for every user but the sender when no rule left for
        this event depends on the user (no mention, invite or display name can match), so
        a whole group of users sharing ``compiled`` is decided at once; else None."""
        plan = self._plan_of(compiled)
        return None if plan.steps else plan.final

    def _plan_of(self, compiled: CompiledRuleset) -> _Plan:
        plan = self._plans.get(compiled)
        if plan is None:
            plan = self._plans[compiled] = self._plan(compiled)
        return plan

    def _plan(self, compiled: CompiledRuleset) -> _Plan:
        steps: list[tuple[tuple[SelfTest, ...], Actions]] = []
        for rule in compiled.rules:
            if not all(self._matches(m) for m in rule.shared):
                continue
            if not rule.own:
                return _Plan(tuple(steps), rule.actions)
            tests = [self._prepare(m) for m in rule.own]
            if all(t is not None for t in tests):
                steps.append((tuple(t for t in tests if t is not None), rule.actions))
        return _Plan(tuple(steps), NO_ACTIONS)

    def _matches(self, matcher: Matcher) -> bool:
        result = self._shared.get(matcher)
        if result is None:
            result = self._shared[matcher] = matcher.matches(self._event, self._room)
        return result

    def _prepare(self, matcher: SelfMatcher) -> SelfTest | None:
        if matcher in self._prepared:
            return self._prepared[matcher]
        test = self._prepared[matcher] = matcher.prepare(self._event)
        return test
