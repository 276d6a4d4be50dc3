"""Push rules: the predefined ruleset, a user's rules merged with it, and the evaluator.

Client-Server API, "Push Notifications": "Push Rules", "Conditions", "Actions" and
"Predefined Rules" (the spec's v1.17 list, which removed the legacy body-matching mention
rules). Pure: no I/O. The evaluator runs once per event per local member, so every rule is
compiled once, when its ``Ruleset`` is built, and globs never backtrack (``events.glob``).

    Ruleset(rules)                     rules in evaluation order, compiled
    build_ruleset(user_id, ...)        a user's rules merged with the server-default rules
    evaluate(ruleset, event, ctx)      -> Actions (notify, highlight, sound, tweaks)
    parse_rule / parse_actions         validate a client's rule (M_INVALID_PARAM, ...)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.glob import WORD_CHARS, compile_glob
from peyvand.types import JsonDict, is_valid_user_id

# "Push Rules": the kinds, in the order they are checked.
KINDS: Final = ("override", "content", "room", "sender", "underride")
# Kinds whose rules carry explicit conditions; the others have predefined ones.
CONDITION_KINDS: Final = frozenset({"override", "underride"})

# "Historical Actions": MUST be ignored. They are kept as the client gave them (as Synapse
# does) and ignored by the evaluator, which acts only on ``notify`` and tweaks.
_HISTORICAL_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})
# m.room.power_levels: the default of ``notifications.room``.
_NOTIFICATION_DEFAULTS: Final = {"room": 50}
# Canonical JSON integers: [-(2**53)+1, (2**53)-1].
_MAX_SAFE_INT: Final = 2**53 - 1

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


@dataclass(frozen=True, slots=True)
class PushContext:
    """What the evaluator needs to know about the room and the user it evaluates for.

    ``notification_power_levels`` is the ``notifications`` object of the room's
    ``m.room.power_levels`` content (see ``notification_levels``); ``room`` defaults to 50.
    """

    user_id: str
    member_count: int
    user_display_name: str | None = None
    sender_power_level: int | float = 0
    notification_power_levels: Mapping[str, int] = field(default_factory=dict)


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


# Predefined rules -------------------------------------------------------------------


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


@lru_cache(maxsize=1024)
def default_rules(user_id: str) -> tuple[PushRule, ...]:
    """The server-default rules of "Predefined Rules", in the spec's order, for ``user_id``.

    ``.m.rule.master`` comes first; ``build_ruleset`` keeps it above the user's rules.
    """

    def rule(
        kind: str,
        rule_id: str,
        conditions: list[JsonDict],
        actions: list[Action],
        *,
        enabled: bool = True,
    ) -> PushRule:
        return PushRule(kind, rule_id, tuple(actions), tuple(conditions), None, enabled, True)

    return (
        # "Default Override Rules"
        rule("override", ".m.rule.master", [], [], enabled=False),
        rule("override", ".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        rule(
            "override",
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", _SOUND_DEFAULT],
        ),
        rule("override", ".m.rule.member_event", [_match("type", "m.room.member")], []),
        rule(
            "override",
            ".m.rule.is_user_mention",
            [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": user_id,
                }
            ],
            ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
        ),
        rule(
            "override",
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", _HIGHLIGHT],
        ),
        rule(
            "override",
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", _HIGHLIGHT],
        ),
        rule("override", ".m.rule.reaction", [_match("type", "m.reaction")], []),
        rule(
            "override",
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        rule(
            "override",
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": "content.m\\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
        # "Default Underride Rules"
        rule(
            "underride",
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        rule(
            "underride",
            ".m.rule.encrypted_room_one_to_one",
            [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
            ["notify", _SOUND_DEFAULT],
        ),
        rule(
            "underride",
            ".m.rule.room_one_to_one",
            [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
            ["notify", _SOUND_DEFAULT],
        ),
        rule("underride", ".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        rule("underride", ".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    )


def is_default_rule_id(rule_id: str) -> bool:
    """Server-default rule IDs start with a dot ("Predefined Rules")."""
    return rule_id.startswith(".")


# Merging ----------------------------------------------------------------------------


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
        self._compiled: tuple[tuple[PushRule, tuple[_Matcher, ...]], ...] = tuple(
            (rule, _compile_rule(rule)) for rule in self.rules if rule.enabled
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


# Evaluation -------------------------------------------------------------------------


def evaluate(ruleset: Ruleset, event: Mapping[str, Any], ctx: PushContext) -> Actions:
    """The actions of the first enabled rule that matches ``event`` (a client-format event).

    "Push Rules": homeservers MUST NOT notify users of events they sent themselves, and an
    event that matches no rule does not notify.
    """
    if event.get("sender") == ctx.user_id:
        return NO_ACTIONS
    for rule, matchers in ruleset._compiled:
        if all(m.matches(event, ctx) for m in matchers):
            return _actions_result(rule)
    return NO_ACTIONS


def notification_levels(power_levels_content: Mapping[str, Any] | None) -> dict[str, int]:
    """The ``notifications`` levels of an m.room.power_levels content (integers only),
    with the spec's default of 50 for ``room``."""
    levels = dict(_NOTIFICATION_DEFAULTS)
    raw = (power_levels_content or {}).get("notifications")
    if isinstance(raw, Mapping):
        levels.update({k: v for k, v in raw.items() if type(v) is int})
    return levels


def _actions_result(rule: PushRule) -> Actions:
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


class _Matcher(Protocol):
    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool: ...


_ABSENT: Final[Any] = object()


def _lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return _ABSENT
        value = value.get(part, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
    return value


@lru_cache(maxsize=4096)
def parse_dotted_path(key: str) -> tuple[str, ...]:
    """Split a key per Appendices, "Dot-separated property paths".

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other backslash is
    kept as it is.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


@lru_cache(maxsize=8192)
def _display_name_regex(display_name: str) -> re.Pattern[str]:
    return re.compile(
        f"(?<![{WORD_CHARS}]){re.escape(display_name)}(?![{WORD_CHARS}])", re.IGNORECASE
    )


class _EventMatch:
    """``event_match``: a glob over a string property; on ``content.body``, any substring
    between word boundaries."""

    __slots__ = ("_glob", "_path")

    def __init__(self, key: str, pattern: str) -> None:
        self._path = parse_dotted_path(key)
        self._glob = compile_glob(pattern, words=self._path == ("content", "body"), max_length=None)

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        value = _lookup(event, self._path)
        return isinstance(value, str) and self._glob.matches(value)


def _same_scalar(a: Any, b: Any) -> bool:
    """Exact equality of non-compound canonical JSON values: 1 is not true, nor "1"."""
    return type(a) is type(b) and a == b


def _is_scalar(value: Any) -> bool:
    if type(value) is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    return value is None or type(value) in (str, bool)


class _PropertyIs:
    """``event_property_is``: exact equality with a non-compound value."""

    __slots__ = ("_path", "_value")

    def __init__(self, key: str, value: Any) -> None:
        self._path = parse_dotted_path(key)
        self._value = value

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        return _same_scalar(_lookup(event, self._path), self._value)


class _PropertyContains:
    """``event_property_contains``: an array property holds exactly this value."""

    __slots__ = ("_path", "_value")

    def __init__(self, key: str, value: Any) -> None:
        self._path = parse_dotted_path(key)
        self._value = value

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        values = _lookup(event, self._path)
        return isinstance(values, list) and any(_same_scalar(v, self._value) for v in values)


class _ContainsDisplayName:
    """``contains_display_name`` (deprecated in v1.17): the user's display name in the
    room appears in ``content.body`` between word boundaries."""

    __slots__ = ()

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        name = ctx.user_display_name
        body = _lookup(event, ("content", "body"))
        if not name or not isinstance(body, str):
            return False
        return _display_name_regex(name).search(body) is not None


_MEMBER_COUNT_RE: Final = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


class _MemberCount:
    """``room_member_count``: ``is`` is an integer with an optional ==, <, >, <= or >=."""

    __slots__ = ("_count", "_op")

    def __init__(self, op: str, count: int) -> None:
        self._op = op
        self._count = count

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        n, op = ctx.member_count, self._op
        if op == "<":
            return n < self._count
        if op == ">":
            return n > self._count
        if op == "<=":
            return n <= self._count
        if op == ">=":
            return n >= self._count
        return n == self._count


class _SenderPermission:
    """``sender_notification_permission``: the sender's power level reaches
    ``notifications[key]`` of the room's power levels."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = key

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        required = ctx.notification_power_levels.get(self._key)
        if required is None:
            required = _NOTIFICATION_DEFAULTS.get(self._key)
        return required is not None and ctx.sender_power_level >= required


class _Never:
    """An unrecognised or malformed condition: "MUST NOT match any events"."""

    __slots__ = ()

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool:
        return False


_NEVER: Final = _Never()


def _compile_condition(condition: Mapping[str, Any]) -> _Matcher:
    kind, key = condition.get("kind"), condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if isinstance(key, str) and isinstance(pattern, str):
            return _EventMatch(key, pattern)
    elif kind in ("event_property_is", "event_property_contains"):
        value = condition.get("value", _ABSENT)
        if isinstance(key, str) and _is_scalar(value):
            cls = _PropertyIs if kind == "event_property_is" else _PropertyContains
            return cls(key, value)
    elif kind == "contains_display_name":
        return _ContainsDisplayName()
    elif kind == "room_member_count":
        spec = condition.get("is")
        found = _MEMBER_COUNT_RE.match(spec) if isinstance(spec, str) else None
        if found is not None:
            return _MemberCount(found.group(1) or "==", int(found.group(2)))
    elif kind == "sender_notification_permission" and isinstance(key, str):
        return _SenderPermission(key)
    return _NEVER


def _compile_rule(rule: PushRule) -> tuple[_Matcher, ...]:
    if rule.kind == "content":
        return (_EventMatch("content.body", rule.pattern or ""),)
    if rule.kind == "room":
        return (_PropertyIs("room_id", rule.rule_id),)
    if rule.kind == "sender":
        return (_PropertyIs("sender", rule.rule_id),)
    return tuple(_compile_condition(c) for c in rule.conditions)


# Validating client rules (PUT /pushrules/global/{kind}/{ruleId}) --------------------


def check_kind(kind: str) -> None:
    """M_INVALID_PARAM unless ``kind`` is one of the spec's five kinds."""
    if kind not in KINDS:
        raise MatrixError(Errcode.INVALID_PARAM, f"Unknown push rule kind: {kind}")


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


def _check_condition(condition: Any) -> JsonDict:
    if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
        raise MatrixError(Errcode.BAD_JSON, "Each condition must be an object with a 'kind'")
    kind = condition["kind"]
    needs_key = kind in (
        "event_match",
        "event_property_is",
        "event_property_contains",
        "sender_notification_permission",
    )
    if needs_key and not isinstance(condition.get("key"), str):
        raise MatrixError(Errcode.INVALID_PARAM, f"'{kind}' condition needs a string 'key'")
    if kind == "event_match" and not isinstance(condition.get("pattern"), str):
        raise MatrixError(Errcode.INVALID_PARAM, "'event_match' condition needs a 'pattern'")
    if kind in ("event_property_is", "event_property_contains") and not _is_scalar(
        condition.get("value", _ABSENT)
    ):
        raise MatrixError(Errcode.INVALID_PARAM, f"'{kind}' condition needs a non-compound 'value'")
    if kind == "room_member_count" and not (
        isinstance(condition.get("is"), str) and _MEMBER_COUNT_RE.match(condition["is"])
    ):
        raise MatrixError(Errcode.INVALID_PARAM, "'room_member_count' needs a valid 'is'")
    return condition


def check_new_rule_id(kind: str, rule_id: str) -> None:
    """The ``ruleId`` rules of PUT /pushrules/global/{kind}/{ruleId}.

    A leading dot is reserved for server-default rules; slashes and backslashes are not
    allowed; a sender rule's ID is a user ID ("Push Rules"). A room rule's ID is taken as
    it is, as Synapse does (clients and sytest use aliases such as ``#spam:example.com``);
    one that is not a room ID simply never matches.
    """
    check_kind(kind)
    if not rule_id or is_default_rule_id(rule_id):
        raise MatrixError(Errcode.INVALID_PARAM, "Rule IDs starting with '.' are reserved")
    if "/" in rule_id or "\\" in rule_id:
        raise MatrixError(Errcode.INVALID_PARAM, "Rule IDs may not contain slashes")
    if kind == "sender" and not is_valid_user_id(rule_id):
        raise MatrixError(Errcode.INVALID_PARAM, "A sender rule's ID must be a user ID")


def parse_rule(kind: str, rule_id: str, body: Mapping[str, Any]) -> PushRule:
    """The user-defined rule described by a PUT body; MatrixError if it is invalid.

    Override and underride rules take ``conditions`` (absent means none: the rule always
    matches), content rules a ``pattern``; all take ``actions``.
    """
    check_new_rule_id(kind, rule_id)
    if "actions" not in body:
        raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: actions")
    actions = parse_actions(body["actions"])
    conditions: tuple[JsonDict, ...] = ()
    pattern = None
    if kind in CONDITION_KINDS:
        raw = body.get("conditions", [])
        if not isinstance(raw, list):
            raise MatrixError(Errcode.BAD_JSON, "'conditions' must be an array")
        conditions = tuple(_check_condition(c) for c in raw)
    elif kind == "content":
        if "pattern" not in body:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: pattern")
        pattern = body["pattern"]
        if not isinstance(pattern, str):
            raise MatrixError(Errcode.BAD_JSON, "'pattern' must be a string")
    return PushRule(kind, rule_id, actions, conditions, pattern)


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value
