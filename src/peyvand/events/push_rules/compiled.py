"""A ruleset compiled for evaluation, shared by every user whose rules differ only by
their own user ID and display name (Client-Server API, "Push Rules"; DESIGN.md §1: a send
costs well under a millisecond of CPU, so evaluating it for a room's members must not
repeat per member what is the same for all of them).

The predefined rules name the user they belong to in two conditions
(``.m.rule.invite_for_me``'s ``state_key`` and ``.m.rule.is_user_mention``'s
``m.mentions.user_ids``), and ``contains_display_name`` reads the user's name in the room.
A ruleset's *shape* is its enabled rules with the user's own ID replaced by a placeholder:
every user with the default rules has the same shape, so they share one ``CompiledRuleset``
(interned here), whose matchers never name a user (``conditions.SelfMatcher``). Identical
conditions are compiled once and shared between shapes too, so an evaluation can reuse a
condition's result for every shape that has it (``evaluation.EventEvaluation``), and so
are the ``Actions`` of identical rules.

Both tables are bounded; an entry dropped from them only stops being shared with rulesets
compiled later.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar, cast

from peyvand.events.push_rules.actions import Actions, actions_of
from peyvand.events.push_rules.conditions import (
    Matcher,
    SelfMatcher,
    compile_condition,
    compile_implicit,
    compile_self_condition,
    compile_self_pattern,
    is_self_condition,
)
from peyvand.events.push_rules.rule import CONDITION_KINDS, PushRule

# Distinct shapes kept for sharing (the default ruleset is one; each user-defined set
# of rules makes another).
_MAX_SHAPES: Final = 1024
# Distinct compiled conditions and actions kept for sharing between shapes.
_MAX_PARTS: Final = 16_384
# Stands for the user's own ID in a shape.
_SELF: Final = ("self",)

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One enabled rule: it matches when every ``shared`` matcher matches the event and
    every ``own`` matcher matches for the user; then ``actions`` apply."""

    shared: tuple[Matcher, ...]
    own: tuple[SelfMatcher, ...]
    actions: Actions


class CompiledRuleset:
    """The enabled rules of one shape, in evaluation order. Immutable; compared by
    identity (one object per shape)."""

    __slots__ = ("rules",)

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules


_shapes: dict[Hashable, CompiledRuleset] = {}
_parts: dict[Hashable, object] = {}


def compile_ruleset(user_id: str, rules: Iterable[PushRule]) -> CompiledRuleset:
    """The compiled form of ``user_id``'s ``rules`` (in evaluation order), shared with
    every user whose rules have the same shape."""
    enabled = [rule for rule in rules if rule.enabled]
    shape = tuple(_interned_shape(_rule_shape(rule, user_id)) for rule in enabled)
    compiled = _shapes.get(shape)
    if compiled is None:
        compiled = CompiledRuleset(
            tuple(_compile_rule(rule, key) for rule, key in zip(enabled, shape, strict=True))
        )
        _bounded_put(_shapes, shape, compiled, _MAX_SHAPES)
    return compiled


def _rule_shape(rule: PushRule, user_id: str) -> Hashable:
    """What decides how ``rule`` evaluates for whoever owns it: its kind, ID, actions,
    and its conditions (or pattern) with ``user_id`` as a placeholder."""
    if rule.kind in CONDITION_KINDS:
        extra: Hashable = tuple(_condition_shape(c, user_id) for c in rule.conditions)
    elif rule.kind == "content":
        extra = _SELF if rule.pattern == user_id else rule.pattern
    else:
        extra = None
    return (rule.kind, rule.rule_id, _freeze(rule.actions), extra)


def _condition_shape(condition: Mapping[str, Any], user_id: str) -> tuple[bool, Hashable]:
    """(whether it is on the user, the condition without the user's ID)."""
    if not is_self_condition(condition, user_id):
        return (False, _freeze(condition))
    literal = "pattern" if condition.get("kind") == "event_match" else "value"
    return (True, _freeze({k: v for k, v in condition.items() if k != literal}))


def _compile_rule(rule: PushRule, shape: Any) -> CompiledRule:
    shared: list[Matcher] = []
    own: list[SelfMatcher] = []
    if rule.kind in CONDITION_KINDS:
        for condition, key in zip(rule.conditions, shape[3], strict=True):
            if key[0]:
                own.append(_interned(key, partial(compile_self_condition, condition)))
            else:
                shared.append(_interned(key, partial(compile_condition, condition)))
    elif rule.kind == "content" and shape[3] is _SELF:
        own.append(_interned(("content", _SELF), compile_self_pattern))
    else:
        literal = rule.pattern if rule.kind == "content" else rule.rule_id
        shared.append(_interned((rule.kind, literal), lambda: compile_implicit(rule)))
    actions = _interned(("actions", rule.rule_id, shape[2]), lambda: actions_of(rule))
    return CompiledRule(tuple(shared), tuple(own), actions)


def _interned(key: Hashable, build: Callable[[], _V]) -> _V:
    """The part (matcher or actions) built for ``key``, built once."""
    part = _parts.get(key)
    if part is None:
        part = build()
        _bounded_put(_parts, key, part, _MAX_PARTS)
    return cast(_V, part)


def _interned_shape(shape: Hashable) -> Hashable:
    """The one kept object equal to a rule's ``shape``: shapes of rulesets that differ by
    one rule share the other rules' shapes (most are the default rules')."""
    key = ("rule", shape)
    kept = _parts.get(key)
    if kept is None:
        _bounded_put(_parts, key, shape, _MAX_PARTS)
        return shape
    return kept


def _bounded_put(table: dict[Hashable, _V], key: Hashable, value: _V, limit: int) -> None:
    if len(table) >= limit:
        del table[next(iter(table))]
    table[key] = value


def _freeze(value: Any) -> Hashable:
    """A hashable form of a JSON value, equal only for equal values of the same types
    (``1``, ``1.0`` and ``true`` differ); a value of any other type equals nothing."""
    if isinstance(value, Mapping):
        return ("{", tuple((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("[", tuple(_freeze(v) for v in value))
    if value is None or type(value) in (str, int, float, bool):
        return (type(value), value)
    return object()
