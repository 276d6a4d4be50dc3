"""An event's relation (Client-Server API, "Forming relationships between events"):
``content["m.relates_to"]`` with a string ``rel_type`` and a string parent ``event_id``.
Anything else (a rich reply's ``m.in_reply_to`` alone, wrong types) is no relation, as in
Synapse's ``relation_from_event``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from peyvand.types import EventID


class Relation(NamedTuple):
    rel_type: str
    parent_id: EventID
    # An ``m.annotation``'s ``key`` when it is a string.
    key: str | None


def relation_in(content: Mapping[str, Any]) -> Relation | None:
    """The relation ``content`` declares, if well-formed."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None
    rel_type, parent_id = relates.get("rel_type"), relates.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent_id, str):
        return None
    key = relates.get("key")
    return Relation(rel_type, EventID(parent_id), key if isinstance(key, str) else None)
