"""Simplified sliding sync (MSC4186) against a real Synapse 1.163 (issue 18): the scenario
of ``scenario.py`` (named and unnamed rooms, a DM, a pending invite, an encrypted room,
receipts, a mention, leaves, a kick, a tombstoned room, to-device messages and keys) is
built on Synapse and on Peyvand (every backend), alice makes the same two requests on
each, and after normalising IDs and timestamps the answers must agree field by field:
room order and counts of the lists, the rooms' counts, names and heroes, timelines,
``required_state`` and the extension payloads.

A failure lists every differing path with both values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from differential.scenario import Outcome, differences

_COUNT_KEYS = (
    "joined_count",
    "invited_count",
    "notification_count",
    "highlight_count",
    "bump_stamp",
)
_UNREAD_KEYS = ("notification_count", "highlight_count")
_TIMELINE_KEYS = ("timeline", "limited", "num_live", "unstable_expanded_timeline")
_STATE_KEYS = ("required_state", "invite_state")


def _rooms(answer: dict[str, Any], keep: Callable[[str], bool]) -> dict[str, Any]:
    rooms: dict[str, Any] = answer.get("rooms", {})
    return {name: {k: v for k, v in room.items() if keep(k)} for name, room in rooms.items()}


ASPECTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "lists": lambda answer: answer.get("lists"),
    "rooms sent": lambda answer: sorted(answer.get("rooms", {})),
    "counts": lambda answer: _rooms(answer, lambda key: key in _COUNT_KEYS),
    "names and heroes": lambda answer: _rooms(
        answer, lambda key: key not in (*_COUNT_KEYS, *_TIMELINE_KEYS, *_STATE_KEYS)
    ),
    "timelines": lambda answer: _rooms(answer, lambda key: key in _TIMELINE_KEYS),
    "required_state": lambda answer: _rooms(answer, lambda key: key in _STATE_KEYS),
    "extensions": lambda answer: _without_push_rules(answer.get("extensions")),
    "push rules": lambda answer: _push_rules(answer.get("extensions")),
}


def _without_push_rules(extensions: Any) -> Any:
    """The extensions, with ``m.push_rules`` out of the global account data (compared on
    its own: it is the server's default rules, not sliding sync's)."""
    if not isinstance(extensions, dict) or not isinstance(extensions.get("account_data"), dict):
        return extensions
    account_data = dict(extensions["account_data"])
    account_data["global"] = [
        event for event in account_data.get("global", []) if event.get("type") != "m.push_rules"
    ]
    return {**extensions, "account_data": account_data}


def _push_rules(extensions: Any) -> Any:
    if not isinstance(extensions, dict) or not isinstance(extensions.get("account_data"), dict):
        return None
    rules = [
        e for e in extensions["account_data"].get("global", []) if e.get("type") == "m.push_rules"
    ]
    return rules


def _with_counts(answer: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """``answer`` with each joined room's unread counts those of /sync (v2)."""
    rooms = {}
    for name, room in answer.get("rooms", {}).items():
        unread = counts.get(name)
        if unread is not None:
            room = {**room, **{key: unread.get(key, 0) for key in _UNREAD_KEYS}}
        rooms[name] = room
    return {**answer, "rooms": rooms}


@pytest.mark.parametrize("which", ["first", "second", "third"])
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_sliding_sync_agrees_with_synapse(
    synapse_outcome: Outcome, peyvand_outcome: Outcome, which: str, aspect: str
) -> None:
    mine = peyvand_outcome.normalised(which)
    theirs = synapse_outcome.normalised(which)
    if aspect == "counts":
        # Synapse's sliding sync always says 0: its own /sync (v2) counts are the reference.
        theirs = _with_counts(theirs, getattr(synapse_outcome, f"{which}_counts"))
    found = differences(ASPECTS[aspect](mine), ASPECTS[aspect](theirs))
    assert not found, f"{which} request, {aspect}: {len(found)} differences\n" + "\n".join(found)


@pytest.mark.parametrize("which", ["first", "second", "third"])
def test_peyvand_sliding_counts_are_its_sync_counts(peyvand_outcome: Outcome, which: str) -> None:
    """Each joined room's unread counts on sliding sync are those /sync (v2) gives."""
    answer = peyvand_outcome.normalised(which)
    sliding = {
        name: {key: room.get(key) for key in _UNREAD_KEYS}
        for name, room in answer.get("rooms", {}).items()
    }
    counts = getattr(peyvand_outcome, f"{which}_counts")
    expected = {name: counts[name] for name in sliding if name in counts}
    found = differences({name: sliding[name] for name in expected}, expected)
    assert not found, "\n".join(found).replace("Synapse", "/sync")
