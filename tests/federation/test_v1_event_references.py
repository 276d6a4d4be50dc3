"""Rooms v1/v2 cite prev and auth events as ``[event_id, {"sha256": reference hash}]``
pairs (Server-Server API ``pdu_v1.yaml``: "Event IDs and reference hashes"), as Synapse
sends them: checked on the events a real Peyvand sends the fake peer of
``harness.fake_server`` (its room's initial events, the make_join template and a message)
over federation.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from unpaddedbase64 import encode_base64

from harness.client import MatrixClient
from harness.fake_server import FakeServer, q
from harness.rooms import create_room, say
from harness.server import HomeserverProcess
from peyvand.events.hashes import compute_reference_hash
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS

TIMEOUT_SECONDS = 20
_users = itertools.count()


def cited_pairs(events: Iterable[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """Every ``(event_id, hashes)`` pair the events cite."""
    return [
        (entry[0], entry[1])
        for event in events
        for key in ("prev_events", "auth_events")
        for entry in event[key]
    ]


async def join_speaking(
    fake: FakeServer, room_id: str, user_id: str, room_version: str
) -> dict[str, Any]:
    """``fake.join``, offering only ``room_version`` (the fake's default list starts at
    v10); the send_join answer."""
    status, template = await fake.request(
        "GET",
        f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(user_id)}",
        query={"ver": [room_version]},
    )
    assert status == 200, template
    join = fake.join_event(template)
    status, answer = await fake.send_join(room_id, join)
    assert status == 200, answer
    fake.install_room(room_id, join, answer)
    return dict(answer)


@pytest.mark.parametrize("room_version", ["1", "2"])
async def test_v1_v2_events_cite_reference_hashes(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
    room_version: str,
) -> None:
    version = KNOWN_ROOM_VERSIONS[room_version]
    alice = await peyvand_client.register()
    bob = fake.user(f"bob{next(_users)}")
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await create_room(
            peyvand_client, alice, preset="public_chat", room_version=room_version
        )
        answer = await join_speaking(fake, room_id, bob, room_version)
        sent = await say(peyvand_client, room_id, alice, "cited")
        message = await fake.wait_for_pdu(lambda p: p.get("event_id") == sent)

    served = [*answer["state"], *answer["auth_chain"]]
    created_here = [e for e in served if e["sender"] == alice.user_id]
    # The join itself was built by the fake from Peyvand's make_join template.
    join = answer["event"]
    pairs = cited_pairs([*created_here, join, message])
    assert len({event_id for event_id, _ in pairs}) >= 4
    for event_id, hashes in pairs:
        cited = fake.events[event_id]
        expected = encode_base64(compute_reference_hash(cited, version))
        assert hashes == {"sha256": expected}, (event_id, cited["type"])
