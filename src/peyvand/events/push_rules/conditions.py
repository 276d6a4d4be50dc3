"""Push-rule conditions (Client-Server API, "Push Rules: Conditions"), each compiled once
into a matcher, and what the evaluator knows about the room and the user (``PushContext``).

Two kinds of matcher, so that one event is evaluated once for all the users it concerns:

- ``Matcher``: a condition on the event and the room alone (the same for every member);
- ``SelfMatcher``: a condition on the user it is evaluated for: ``contains_display_name``,
  and a condition whose literal is the user's own ID (the predefined
  ``.m.rule.invite_for_me`` and ``.m.rule.is_user_mention``). ``prepare`` reads the event
  once; the ``SelfTest`` it returns then costs O(1) per user (a set or string look-up).

A condition of an unknown kind, or malformed, compiles to a matcher that never matches
("MUST NOT match any events"); ``check_condition`` is the stricter check a client's new
rule must pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.dotted_paths import parse_dotted_path
from peyvand.events.glob import WORD_CHARS, compile_glob
from peyvand.events.push_rules.rule import PushRule
from peyvand.types import JsonDict

# m.room.power_levels: the default of ``notifications.room``.
_NOTIFICATION_DEFAULTS: Final = {"room": 50}
# Canonical JSON integers: [-(2**53)+1, (2**53)-1].
_MAX_SAFE_INT: Final = 2**53 - 1


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


def notification_levels(power_levels_content: Mapping[str, Any] | None) -> dict[str, int]:
    """The ``notifications`` levels of an m.room.power_levels content (integers only),
    with the spec's default of 50 for ``room``."""
    levels = dict(_NOTIFICATION_DEFAULTS)
    raw = (power_levels_content or {}).get("notifications")
    if isinstance(raw, Mapping):
        levels.update({k: v for k, v in raw.items() if type(v) is int})
    return levels


class Matcher(Protocol):
    """A compiled condition (or the implicit condition of a content, room or sender rule)
    that does not depend on the user: it reads only the event and the room's facts in
    ``ctx`` (member count, sender's power level, notification levels)."""

    def matches(self, event: Mapping[str, Any], ctx: PushContext) -> bool: ...


class SelfTest(Protocol):
    """A ``SelfMatcher`` prepared for one event: whether it matches for one user."""

    def __call__(self, user_id: str, display_name: str | None, /) -> bool: ...


class SelfMatcher(Protocol):
    """A compiled condition on the user it is evaluated for. ``prepare`` reads ``event``
    once for every user; None means it matches for no user."""

    def prepare(self, event: Mapping[str, Any]) -> SelfTest | None: ...


_ABSENT: Final[Any] = object()
_BODY: Final = ("content", "body")


def _lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return _ABSENT
        value = value.get(part, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
    return value


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


class _EventMatchSelf:
    """``event_match`` whose pattern is the user's own ID (``.m.rule.invite_for_me``:
    ``state_key``), matched as ``_EventMatch`` would with that pattern."""

    __slots__ = ("_path", "_words")

    def __init__(self, key: str) -> None:
        self._path = parse_dotted_path(key)
        self._words = self._path == _BODY

    def prepare(self, event: Mapping[str, Any]) -> SelfTest | None:
        value = _lookup(event, self._path)
        if not isinstance(value, str):
            return None
        words = self._words

        def test(user_id: str, display_name: str | None, /) -> bool:
            return compile_glob(user_id, words=words, max_length=None).matches(value)

        return test


class _PropertyIsSelf:
    """``event_property_is`` whose value is the user's own ID."""

    __slots__ = ("_path",)

    def __init__(self, key: str) -> None:
        self._path = parse_dotted_path(key)

    def prepare(self, event: Mapping[str, Any]) -> SelfTest | None:
        value = _lookup(event, self._path)
        if type(value) is not str:
            return None
        return lambda user_id, display_name, /: _same_scalar(user_id, value)


class _PropertyContainsSelf:
    """``event_property_contains`` whose value is the user's own ID
    (``.m.rule.is_user_mention``: ``content.m\\.mentions.user_ids``): the array's strings
    are collected once per event, each user is a set look-up."""

    __slots__ = ("_path",)

    def __init__(self, key: str) -> None:
        self._path = parse_dotted_path(key)

    def prepare(self, event: Mapping[str, Any]) -> SelfTest | None:
        values = _lookup(event, self._path)
        if not isinstance(values, list):
            return None
        strings = frozenset(v for v in values if type(v) is str)
        if not strings:
            return None
        return lambda user_id, display_name, /: type(user_id) is str and user_id in strings


class _ContainsDisplayName:
    """``contains_display_name`` (deprecated in v1.17): the user's display name in the
    room appears in ``content.body`` between word boundaries."""

    __slots__ = ()

    def prepare(self, event: Mapping[str, Any]) -> SelfTest | None:
        body = _lookup(event, _BODY)
        if not isinstance(body, str):
            return None

        def test(user_id: str, display_name: str | None, /) -> bool:
            return bool(display_name) and _display_name_regex(display_name).search(body) is not None

        return test


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


_SELF_KINDS: Final = frozenset({"event_match", "event_property_is", "event_property_contains"})


def is_self_condition(condition: Mapping[str, Any], user_id: str) -> bool:
    """Whether ``condition`` depends on the user evaluated for: ``contains_display_name``,
    or a well-formed ``event_match``/``event_property_is``/``event_property_contains``
    whose literal is exactly ``user_id``. Every other condition reads only the event and
    the room, and is the same for every user who has it."""
    kind = condition.get("kind")
    if kind == "contains_display_name":
        return True
    if kind not in _SELF_KINDS or not isinstance(condition.get("key"), str):
        return False
    literal = condition.get("pattern" if kind == "event_match" else "value")
    return type(literal) is str and literal == user_id


def compile_self_condition(condition: Mapping[str, Any]) -> SelfMatcher:
    """The matcher of a condition ``is_self_condition`` accepted, for whoever it is
    evaluated for."""
    kind, key = condition.get("kind"), str(condition.get("key"))
    if kind == "event_match":
        return _EventMatchSelf(key)
    if kind == "event_property_is":
        return _PropertyIsSelf(key)
    if kind == "event_property_contains":
        return _PropertyContainsSelf(key)
    return _ContainsDisplayName()


def compile_self_pattern() -> SelfMatcher:
    """The implicit condition of a content rule whose pattern is the user's own ID."""
    return _EventMatchSelf("content.body")


def compile_condition(condition: Mapping[str, Any]) -> Matcher:
    """The matcher of a condition that does not depend on the user."""
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
    elif kind == "room_member_count":
        spec = condition.get("is")
        found = _MEMBER_COUNT_RE.match(spec) if isinstance(spec, str) else None
        if found is not None:
            return _MemberCount(found.group(1) or "==", int(found.group(2)))
    elif kind == "sender_notification_permission" and isinstance(key, str):
        return _SenderPermission(key)
    return _NEVER


def compile_implicit(rule: PushRule) -> Matcher:
    """The implicit condition of a content, room or sender rule (``pattern`` on
    ``content.body``, ``room_id`` or ``sender`` equal to the rule ID)."""
    if rule.kind == "content":
        return _EventMatch("content.body", rule.pattern or "")
    return _PropertyIs("room_id" if rule.kind == "room" else "sender", rule.rule_id)


def check_condition(condition: Any) -> JsonDict:
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
