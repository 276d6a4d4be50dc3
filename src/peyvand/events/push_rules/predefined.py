"""The server-default push rules (Client-Server API, "Push Rules: Predefined Rules"),
the spec's v1.17 list, which removed the legacy body-matching mention rules."""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from peyvand.events.push_rules.rule import Action, PushRule
from peyvand.types import JsonDict


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


# About 5 KiB per user; only users with rules of their own, and the push rules API, ask.
@lru_cache(maxsize=256)
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
