"""Validating a client's push rule (PUT /pushrules/global/{kind}/{ruleId}; Client-Server
API, "Push Rules: API"): M_INVALID_PARAM, M_MISSING_PARAM or M_BAD_JSON for a bad one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.events.push_rules.actions import parse_actions
from peyvand.events.push_rules.conditions import check_condition
from peyvand.events.push_rules.rule import CONDITION_KINDS, KINDS, PushRule, is_default_rule_id
from peyvand.types import JsonDict, is_valid_user_id


def check_kind(kind: str) -> None:
    """M_INVALID_PARAM unless ``kind`` is one of the spec's five kinds."""
    if kind not in KINDS:
        raise MatrixError(Errcode.INVALID_PARAM, f"Unknown push rule kind: {kind}")


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
        conditions = tuple(check_condition(c) for c in raw)
    elif kind == "content":
        if "pattern" not in body:
            raise MatrixError(Errcode.MISSING_PARAM, "Missing parameter: pattern")
        pattern = body["pattern"]
        if not isinstance(pattern, str):
            raise MatrixError(Errcode.BAD_JSON, "'pattern' must be a string")
    return PushRule(kind, rule_id, actions, conditions, pattern)
