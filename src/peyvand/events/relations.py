"""An event's relation (Client-Server API, "Forming relationships between events"):
``content["m.relates_to"]`` with a string ``rel_type`` and a string parent ``event_id``.
Anything else (a rich reply's ``m.in_reply_to`` alone, wrong types) is no relation, as in
Synapse's ``relation_from_event``.

``relation_in`` is the one rule for what an event relates to: storage indexes exactly
that relation and aggregations read exactly that. A parent ID or ``rel_type`` over 255
bytes is no relation here (an event ID is at most 255 bytes: appendices, "Event IDs";
a ``rel_type`` is a namespaced identifier of at most 255 characters: "Common Namespaced
Identifier Grammar"): such an event is stored and served, but not indexed, as its key
would not fit PostgreSQL's B-tree indexes. ``declared_relation`` is what the content
claims whatever its length, for checks on local sends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from peyvand.types import EventID

MAX_RELATION_ID_BYTES: Final = 255


class Relation(NamedTuple):
    rel_type: str
    parent_id: EventID
    # An ``m.annotation``'s ``key`` when it is a string.
    key: str | None

    @property
    def fits(self) -> bool:
        """Whether the parent ID and ``rel_type`` are each at most 255 bytes."""
        return (
            len(self.parent_id.encode()) <= MAX_RELATION_ID_BYTES
            and len(self.rel_type.encode()) <= MAX_RELATION_ID_BYTES
        )


def declared_relation(content: Mapping[str, Any]) -> Relation | None:
    """The relation ``content`` declares with string fields, whatever their length."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None
    rel_type, parent_id = relates.get("rel_type"), relates.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent_id, str):
        return None
    key = relates.get("key")
    return Relation(rel_type, EventID(parent_id), key if isinstance(key, str) else None)


def relation_in(content: Mapping[str, Any]) -> Relation | None:
    """The relation ``content`` declares, if well-formed and within 255 bytes: the one
    stored and served."""
    relation = declared_relation(content)
    return relation if relation is not None and relation.fits else None


def relation_columns(content: Mapping[str, Any]) -> tuple[EventID | None, str | None]:
    """The parent and ``rel_type`` stored on the event's row (its ``relation_in``), for
    local, received and backfilled events alike."""
    relation = relation_in(content)
    return (None, None) if relation is None else (relation.parent_id, relation.rel_type)
