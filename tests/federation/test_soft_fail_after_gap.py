"""Soft failure after a gap (Server-Server API, "Checks performed on receipt of a PDU"
step 6, "Soft failure"): when some prev events of an event never reached this server and
the state before it came from ``/state_ids``, the event is checked against the resolution
of the states after the room's forward extremities and the state before it, as Synapse
does (``_check_for_soft_fail``), not against the current state alone.

A fake homeserver's bob, joined to a Peyvand room, leaves it; on a fork from before the
leave that Peyvand never sees, bob changes his display name (a later join) and writes a
message on top. Peyvand's current state has bob gone, but the resolved state has the
later join, so the message is accepted and shown.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from harness.client import MatrixClient
from harness.fake_server import FakeRequest, FakeServer, q
from harness.federation import fake_peer_room, send_accepted
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 20
FEDERATION_V1 = "/_matrix/federation/v1"


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_event_after_a_gap_is_checked_against_the_resolved_state(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    fake: FakeServer,
    room_version: str,
) -> None:
    log_start = len(peyvand.log())
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice, bob, room_id, _ = await fake_peer_room(peyvand_client, fake, "forker", room_version)
        room = fake.rooms[room_id]
        state_before_fork = dict(room.state)
        joined = state_before_fork[("m.room.member", bob)]
        fork_point = list(room.extremities)
        member_auth = fake.auth_events_for(
            room_id, "m.room.member", bob, bob, {"membership": "join"}
        )
        message_auth = fake.auth_events_for(
            room_id, "m.room.message", bob, None, {"msgtype": "m.text", "body": "x"}
        )

        leave = fake.make_pdu(None, room_id, bob, "m.room.member", {"membership": "leave"}, bob)
        await send_accepted(fake, leave)

        rejoin = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.member",
            {"membership": "join", "displayname": "on the fork"},
            bob,
            prev_events=fork_point,
            auth_events=member_auth,
            origin_server_ts=int(time.time() * 1000) + 1000,
        )
        message = fake.make_pdu(
            None,
            room_id,
            bob,
            "m.room.message",
            {"msgtype": "m.text", "body": "after the gap"},
            prev_events=[rejoin.event_id],
            auth_events=[a for a in message_auth if a != joined] + [rejoin.event_id],
        )

        def state_ids(request: FakeRequest) -> tuple[int, Any]:
            if request.query.get("event_id") != [rejoin.event_id]:
                return 404, {"errcode": "M_NOT_FOUND", "error": "no"}
            ids = sorted(state_before_fork.values())
            return 200, {"pdu_ids": ids, "auth_chain_ids": ids}

        fake.on("GET", f"{FEDERATION_V1}/state_ids/{{room_id}}", state_ids)
        await send_accepted(fake, message)
        assert fake.requests("GET", f"{FEDERATION_V1}/state_ids/")  # the gap was bridged

        page = await peyvand_client.request(
            "GET",
            f"rooms/{q(room_id)}/messages",
            token=alice,
            params={"dir": "b", "limit": "50"},
        )
        shown = {e["event_id"] for e in page.ok()["chunk"]}
        assert message.event_id in shown  # accepted, not soft-failed
        members = (
            await peyvand_client.request("GET", f"rooms/{q(room_id)}/joined_members", token=alice)
        ).ok()["joined"]
        assert members[bob]["display_name"] == "on the fork"
    assert "Unhandled error" not in peyvand.log()[log_start:]
