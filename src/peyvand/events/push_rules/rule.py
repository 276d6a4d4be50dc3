"""One push rule (Client-Server API, "Push Rules"): the kinds, a rule in the shape of
the spec's ``PushRule`` schema, and a user's change to a server-default rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from peyvand.types import JsonDict

# "Push Rules": the kinds, in the order they are checked.
KINDS: Final = ("override", "content", "room", "sender", "underride")
# Kinds whose rules carry explicit conditions; the others have predefined ones.
CONDITION_KINDS: Final = frozenset({"override", "underride"})

Action = str | JsonDict


@dataclass(frozen=True, slots=True)
class PushRule:
    """One rule of one kind. ``conditions`` only for override/underride, ``pattern`` only
    for content rules; room and sender rules match on their ``rule_id``."""

    kind: str
    rule_id: str
    actions: tuple[Action, ...]
    conditions: tuple[JsonDict, ...] = ()
    pattern: str | None = None
    enabled: bool = True
    default: bool = False

    def to_json(self) -> JsonDict:
        """The rule in the shape of the spec's ``PushRule`` schema (a fresh copy)."""
        out: JsonDict = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": _copy_json(list(self.actions)),
        }
        if self.kind in CONDITION_KINDS:
            out["conditions"] = _copy_json(list(self.conditions))
        elif self.kind == "content" and self.pattern is not None:
            out["pattern"] = self.pattern
        return out


@dataclass(frozen=True, slots=True)
class RuleOverride:
    """A user's change to a server-default rule: None keeps the default."""

    enabled: bool | None = None
    actions: tuple[Action, ...] | None = None


def is_default_rule_id(rule_id: str) -> bool:
    """Server-default rule IDs start with a dot ("Predefined Rules")."""
    return rule_id.startswith(".")


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value
