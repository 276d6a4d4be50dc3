"""State events received over federation get ``unsigned.replaces_state``,
``prev_content`` and ``prev_sender`` from the state before them (Client-Server API, "Room
event format"), as local ones do: a fake server's user, joined to a Peyvand room, changes
their display name twice; the second change's predecessor is the first, the first's is
the join; and a local topic replacing a remote one points at the remote one (any member
may change state in the room)."""

from __future__ import annotations

import asyncio
from typing import Any

from harness.client import Account, MatrixClient, new_session
from harness.fake_server import FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20


async def _unsigned(client: MatrixClient, room_id: str, reader: Account, event_id: str) -> Any:
    response = await client.request("GET", f"rooms/{q(room_id)}/event/{q(event_id)}", token=reader)
    return response.ok()["unsigned"]


def _prev(unsigned: dict[str, Any]) -> dict[str, Any]:
    return {
        k: unsigned[k] for k in ("replaces_state", "prev_content", "prev_sender") if k in unsigned
    }


async def test_received_state_events_have_prev_content(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(
            peyvand_client,
            fake,
            "renamer",
            "12",
            power_level_content_override={"state_default": 0},
        )
        join_id = fake.rooms[room_id].state[("m.room.member", bob)]
        join_content = fake.events[join_id]["content"]
        renames = []
        for name in ("A", "B"):
            rename = fake.make_pdu(
                None,
                room_id,
                bob,
                "m.room.member",
                {**join_content, "displayname": name},
                bob,
            )
            await send_accepted(fake, rename)
            renames.append(rename)

        assert _prev(await _unsigned(peyvand_client, room_id, alice, renames[0].event_id)) == {
            "replaces_state": join_id,
            "prev_content": join_content,
            "prev_sender": bob,
        }
        second = {
            "replaces_state": renames[0].event_id,
            "prev_content": {**join_content, "displayname": "A"},
            "prev_sender": bob,
        }
        assert _prev(await _unsigned(peyvand_client, room_id, alice, renames[1].event_id)) == (
            second
        )
        state = (await peyvand_client.request("GET", f"rooms/{q(room_id)}/state", token=alice)).ok()
        member = next(e for e in state if e["event_id"] == renames[1].event_id)
        assert _prev(member["unsigned"]) == second

        topic = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.topic",
            {"topic": "from the fake"},
            "",
        )
        await send_accepted(fake, topic)
        local = (
            await peyvand_client.request(
                "PUT",
                f"rooms/{q(room_id)}/state/m.room.topic",
                json={"topic": "from peyvand"},
                token=alice,
            )
        ).ok()["event_id"]
        assert _prev(await _unsigned(peyvand_client, room_id, alice, local)) == {
            "replaces_state": topic.event_id,
            "prev_content": {"topic": "from the fake"},
            "prev_sender": bob,
        }
    assert "Unhandled error" not in peyvand.log()[log_start:]


async def test_a_join_to_a_remote_room_replaces_the_invite(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, peyvand_peer: HomeserverProcess
) -> None:
    """The join that installs a room joined over federation points at the invite it
    replaces, as a local join would."""
    async with new_session() as session, asyncio.timeout(TIMEOUT_SECONDS):
        peer_client = MatrixClient(session, peyvand_peer.base_url)
        alice = await peer_client.register()
        carol = await peyvand_client.register()
        room_id = (await peer_client.request("POST", "createRoom", json={}, token=alice)).ok()[
            "room_id"
        ]
        (
            await peer_client.request(
                "POST", f"rooms/{q(room_id)}/invite", json={"user_id": carol.user_id}, token=alice
            )
        ).ok()
        invite_id = (
            await peer_client.request(
                "GET",
                f"rooms/{q(room_id)}/state/m.room.member/{q(carol.user_id)}",
                token=alice,
                params={"format": "event"},
            )
        ).ok()["event_id"]
        join = await peyvand_client.request("POST", f"join/{q(room_id)}", json={}, token=carol)
        state = (
            await peyvand_client.request(
                "GET",
                f"rooms/{q(room_id)}/state/m.room.member/{q(carol.user_id)}",
                token=carol,
                params={"format": "event"},
            )
        ).ok()
        join_id = state["event_id"]
        assert join.ok()["room_id"] == room_id
        unsigned = await _unsigned(peyvand_client, room_id, carol, join_id)
    assert _prev(unsigned) == {
        "replaces_state": invite_id,
        "prev_content": {"membership": "invite"},
        "prev_sender": alice.user_id,
    }
