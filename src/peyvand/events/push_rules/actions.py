"""Push-rule actions (Client-Server API, "Push Rules: Actions"): what a matched rule
means for the event (notify, highlight, sound, tweaks), and checking a client's actions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.events.push_rules.rule import Action, PushRule

# "Historical Actions": MUST be ignored. They are kept as the client gave them (as Synapse
# does) and ignored by the evaluator, which acts only on ``notify`` and tweaks.
_HISTORICAL_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})


@dataclass(frozen=True, slots=True)
class Actions:
    """The outcome of evaluating an event for one user.

    ``notify`` is whether the event notifies; ``highlight`` and ``sound`` only count for
    notifying events (False/None otherwise). ``rule_id`` is the matched rule, if any.
    """

    actions: tuple[Action, ...] = ()
    rule_id: str | None = None
    notify: bool = False
    highlight: bool = False
    sound: str | None = None
    tweaks: Mapping[str, Any] = field(default_factory=dict)


NO_ACTIONS: Final = Actions()


def actions_of(rule: PushRule) -> Actions:
    """What the matched ``rule`` does to the event."""
    notify = False
    tweaks: dict[str, Any] = {}
    for action in rule.actions:
        if action == "notify":
            notify = True
        elif isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            # "Actions": a highlight tweak without a value means true.
            default = True if action["set_tweak"] == "highlight" else None
            tweaks[action["set_tweak"]] = action.get("value", default)
    sound = tweaks.get("sound")
    return Actions(
        actions=rule.actions,
        rule_id=rule.rule_id,
        notify=notify,
        highlight=notify and tweaks.get("highlight") is True,
        sound=sound if notify and isinstance(sound, str) else None,
        tweaks=tweaks,
    )


def parse_actions(actions: Any) -> tuple[Action, ...]:
    """Validate an ``actions`` array. The historical ``dont_notify``/``coalesce`` are
    accepted and kept, so a client reads back what it wrote; "Historical Actions" are
    no-ops for the evaluator."""
    if not isinstance(actions, list):
        raise MatrixError(Errcode.BAD_JSON, "'actions' must be an array")
    for action in actions:
        if isinstance(action, str):
            known = action == "notify" or action in _HISTORICAL_ACTIONS
        else:
            known = isinstance(action, dict) and isinstance(action.get("set_tweak"), str)
        if not known:
            raise MatrixError(Errcode.INVALID_PARAM, f"Unrecognised action: {action!r}")
    return tuple(actions)
