"""The server-default push rules (Client-Server API, "Push Rules: Predefined Rules"),
the spec's v1.17 list, which removed the legacy body-matching mention rules.

Two of them name the user they belong to (``.m.rule.invite_for_me`` and
``.m.rule.is_user_mention``) and are built per call; the others are the same for every
user and are one shared immutable ``PushRule`` each (issue 15: a cached copy of all of
them per user cost about 5 KiB a user).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from peyvand.events.push_rules.rule import Action, PushRule
from peyvand.types import JsonDict


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(
    kind: str,
    rule_id: str,
    conditions: list[JsonDict],
    actions: list[Action],
    *,
    enabled: bool = True,
) -> PushRule:
    return PushRule(kind, rule_id, tuple(actions), tuple(conditions), None, enabled, True)


_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


def _invite_for_me(user_id: str) -> PushRule:
    return _rule(
        "override",
        ".m.rule.invite_for_me",
        [
            _match("type", "m.room.member"),
            _match("content.membership", "invite"),
            _match("state_key", user_id),
        ],
        ["notify", _SOUND_DEFAULT],
    )


def _is_user_mention(user_id: str) -> PushRule:
    return _rule(
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
    )


# Every default rule in the spec's order: a shared rule, or how to build one for a user.
_DEFAULTS: Final[tuple[PushRule | Callable[[str], PushRule], ...]] = (
    # "Default Override Rules"
    _rule("override", ".m.rule.master", [], [], enabled=False),
    _rule("override", ".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _invite_for_me,
    _rule("override", ".m.rule.member_event", [_match("type", "m.room.member")], []),
    _is_user_mention,
    _rule(
        "override",
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(
        "override",
        ".m.rule.tombstone",
        [_match("type", "m.room.tombstone"), _match("state_key", "")],
        ["notify", _HIGHLIGHT],
    ),
    _rule("override", ".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(
        "override",
        ".m.rule.room.server_acl",
        [_match("type", "m.room.server_acl"), _match("state_key", "")],
        [],
    ),
    _rule(
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
    _rule(
        "underride",
        ".m.rule.call",
        [_match("type", "m.call.invite")],
        ["notify", {"set_tweak": "sound", "value": "ring"}],
    ),
    _rule(
        "underride",
        ".m.rule.encrypted_room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(
        "underride",
        ".m.rule.room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule("underride", ".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule("underride", ".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
)


def default_rules(user_id: str) -> tuple[PushRule, ...]:
    """The server-default rules of "Predefined Rules", in the spec's order, for ``user_id``:
    the rules that do not name the user are the same objects for every user.

    ``.m.rule.master`` comes first; ``build_ruleset`` keeps it above the user's rules.
    """
    return tuple(rule if isinstance(rule, PushRule) else rule(user_id) for rule in _DEFAULTS)
