"""relation_in: only a string rel_type and a string parent event_id make a relation."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.events.relations import Relation, relation_in
from peyvand.types import EventID


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"m.relates_to": {"rel_type": "m.thread", "event_id": "$a"}},
            Relation("m.thread", EventID("$a"), None),
        ),
        (
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "👍"}},
            Relation("m.annotation", EventID("$a"), "👍"),
        ),
        (
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": 1}},
            Relation("m.annotation", EventID("$a"), None),
        ),
        ({"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}, None),
        ({"m.relates_to": {"rel_type": 5, "event_id": "$a"}}, None),
        ({"m.relates_to": {"rel_type": "m.thread", "event_id": ["$a"]}}, None),
        ({"m.relates_to": "$a"}, None),
        ({}, None),
    ],
)
def test_relation_in(content: dict[str, Any], expected: Relation | None) -> None:
    assert relation_in(content) == expected
