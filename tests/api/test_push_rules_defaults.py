"""GET /pushrules/ for users with only the server-default rules, against a real Peyvand
(every backend): the exact "Predefined Rules" list, in order, naming each user in its two
per-user rules, whether or not the rules are shared between users inside the server."""

from __future__ import annotations

import json

from harness.client import MatrixClient
from peyvand.types import JsonDict

SOUND = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT = {"set_tweak": "highlight"}


def match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def rule(rule_id: str, actions: list[object], conditions: list[JsonDict]) -> JsonDict:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": rule_id != ".m.rule.master",
        "actions": actions,
        "conditions": conditions,
    }


def expected_defaults(user_id: str) -> JsonDict:
    """The spec's v1.17 default ruleset for ``user_id``, in the server's key order."""
    mentions = {
        "kind": "event_property_contains",
        "key": "content.m\\.mentions.user_ids",
        "value": user_id,
    }
    room_mention = {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True}
    edit = {
        "kind": "event_property_is",
        "key": "content.m\\.relates_to.rel_type",
        "value": "m.replace",
    }
    two = {"kind": "room_member_count", "is": "2"}
    invite = [
        match("type", "m.room.member"),
        match("content.membership", "invite"),
        match("state_key", user_id),
    ]
    return {
        "global": {
            "override": [
                rule(".m.rule.master", [], []),
                rule(".m.rule.suppress_notices", [], [match("content.msgtype", "m.notice")]),
                rule(".m.rule.invite_for_me", ["notify", SOUND], invite),
                rule(".m.rule.member_event", [], [match("type", "m.room.member")]),
                rule(".m.rule.is_user_mention", ["notify", SOUND, HIGHLIGHT], [mentions]),
                rule(
                    ".m.rule.is_room_mention",
                    ["notify", HIGHLIGHT],
                    [room_mention, {"kind": "sender_notification_permission", "key": "room"}],
                ),
                rule(
                    ".m.rule.tombstone",
                    ["notify", HIGHLIGHT],
                    [match("type", "m.room.tombstone"), match("state_key", "")],
                ),
                rule(".m.rule.reaction", [], [match("type", "m.reaction")]),
                rule(
                    ".m.rule.room.server_acl",
                    [],
                    [match("type", "m.room.server_acl"), match("state_key", "")],
                ),
                rule(".m.rule.suppress_edits", [], [edit]),
            ],
            "content": [],
            "room": [],
            "sender": [],
            "underride": [
                rule(
                    ".m.rule.call",
                    ["notify", {"set_tweak": "sound", "value": "ring"}],
                    [match("type", "m.call.invite")],
                ),
                rule(
                    ".m.rule.encrypted_room_one_to_one",
                    ["notify", SOUND],
                    [two, match("type", "m.room.encrypted")],
                ),
                rule(
                    ".m.rule.room_one_to_one",
                    ["notify", SOUND],
                    [two, match("type", "m.room.message")],
                ),
                rule(".m.rule.message", ["notify"], [match("type", "m.room.message")]),
                rule(".m.rule.encrypted", ["notify"], [match("type", "m.room.encrypted")]),
            ],
        }
    }


async def test_each_users_default_ruleset_is_the_spec_list_naming_them(
    client: MatrixClient,
) -> None:
    alice = await client.register()
    bob = await client.register()
    # Alice's twice: the second answer comes from the cached ruleset.
    for account in (alice, bob, alice):
        body = (await client.request("GET", "pushrules/", token=account)).ok()
        # Same keys in the same order, same values: the JSON text is the same.
        assert json.dumps(body) == json.dumps(expected_defaults(account.user_id))
