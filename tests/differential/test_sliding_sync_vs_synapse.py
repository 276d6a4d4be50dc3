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

from differential.scenario import Outcome, differences, normalise, run_scenario
from harness.client import MatrixClient, new_session
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess

_COUNT_KEYS = (
    "joined_count",
    "invited_count",
    "notification_count",
    "highlight_count",
    "bump_stamp",
)
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
    "extensions": lambda answer: answer.get("extensions"),
}


@pytest.fixture(scope="session")
async def synapse_outcome(synapse: SynapseProcess) -> Outcome:
    async with new_session() as session:
        return await run_scenario(MatrixClient(session, synapse.client_url))


@pytest.fixture(scope="session")
async def peyvand_outcome(homeserver: HomeserverProcess) -> Outcome:
    async with new_session() as session:
        return await run_scenario(MatrixClient(session, homeserver.base_url))


@pytest.mark.parametrize("which", ["first", "second"])
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_sliding_sync_agrees_with_synapse(
    synapse_outcome: Outcome, peyvand_outcome: Outcome, which: str, aspect: str
) -> None:
    mine = normalise(getattr(peyvand_outcome, which), peyvand_outcome.names)
    theirs = normalise(getattr(synapse_outcome, which), synapse_outcome.names)
    found = differences(ASPECTS[aspect](mine), ASPECTS[aspect](theirs))
    assert not found, f"{which} request, {aspect}: {len(found)} differences\n" + "\n".join(found)
