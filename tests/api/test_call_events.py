"""1:1 call signalling through a room (Client-Server API, "Voice over IP"), over HTTP on
every backend: a call's events are counted in a rate-limit bucket of their own, not
against the one meant for messages (and that bucket is finite too); a call invite is
refused in a public room, as Synapse refuses it; and a call invite rings the callee
(push rule ``.m.rule.call``: notify, sound "ring"), as the push gateway of the callee's
pusher (a recording one served by the test) is told."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.client import Account, MatrixClient, new_session
from harness.local_http import start_post_site
from harness.ports import free_port
from harness.server import HomeserverProcess, start_homeserver

BURST = 3
CALL_BURST = 15
NOTIFY = "/_matrix/push/v1/notify"
PUSH_TIMEOUT_SECONDS = 20.0
_txn = itertools.count()


@pytest.fixture
def limited_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """Rate limits on: a burst of 3 requests per user, then one per 100 s; a burst of 15
    call events, then one per 100 s."""
    options = {
        "rate_limits.enabled": "true",
        "rate_limits.burst": str(BURST),
        "rate_limits.per_second": "0.01",
        "rate_limits.calls_burst": str(CALL_BURST),
        "rate_limits.calls_per_second": "0.01",
        "push.gateway_allowed_networks": '["127.0.0.1/32"]',
    }
    server = start_homeserver(backend, request, tmp_path_factory.mktemp("limits"), options=options)
    try:
        yield server
    finally:
        server.stop()


async def send(
    client: MatrixClient, sender: Account, room_id: str, event_type: str, content: dict[str, Any]
) -> Any:
    path = f"rooms/{quote(room_id)}/send/{event_type}/t{next(_txn)}"
    return await client.request("PUT", path, content, sender)


def call_content(call_id: str, **fields: Any) -> dict[str, Any]:
    return {"call_id": call_id, "party_id": "caller", "version": "1", **fields}


class Gateway:
    """A push gateway that records each notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append((await request.json())["notification"])
        self.arrived.set()
        return web.json_response({"rejected": []})

    async def pushed(self, event_id: str) -> dict[str, Any]:
        async with asyncio.timeout(PUSH_TIMEOUT_SECONDS):
            while True:
                for notification in self.notifications:
                    if notification.get("event_id") == event_id:
                        return notification
                self.arrived.clear()
                await self.arrived.wait()


async def test_call_events_skip_message_limits_and_ring(
    limited_homeserver: HomeserverProcess,
) -> None:
    gateway = Gateway()
    port = free_port()
    runner = await start_post_site("127.0.0.1", port, NOTIFY, gateway.handle)
    async with new_session() as session:
        client = MatrixClient(session, limited_homeserver.base_url)
        alice, bob = await client.register(), await client.register()
        pusher = {
            "kind": "http",
            "app_id": "org.peyvand.test",
            "pushkey": "callee",
            "app_display_name": "Calls",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": f"http://127.0.0.1:{port}{NOTIFY}"},
        }
        (await client.request("POST", "pushers/set", pusher, bob)).ok()
        body = {"preset": "private_chat", "invite": [bob.user_id], "is_direct": True}
        room_id = (await client.request("POST", "createRoom", body, alice)).ok()["room_id"]
        (await client.request("POST", f"rooms/{quote(room_id)}/join", {}, bob)).ok()

        # Alice's messages run out of tokens after the rest of her burst ...
        statuses = [
            (await send(client, alice, room_id, "m.room.message", {"body": "hi"})).status
            for _ in range(BURST)
        ]
        assert statuses[-1] == 429, statuses
        # ... but her call goes through: the invite, a burst of candidates, the hangup.
        offer = {"type": "offer", "sdp": "v=0\r\n"}
        invite = call_content("c1", offer=offer, lifetime=60000)
        invite_id = (await send(client, alice, room_id, "m.call.invite", invite)).ok()["event_id"]
        candidate = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0"}
        for _ in range(10):
            content = call_content("c1", candidates=[candidate])
            (await send(client, alice, room_id, "m.call.candidates", content)).ok()
        (await send(client, alice, room_id, "m.call.hangup", call_content("c1"))).ok()
        assert (await send(client, alice, room_id, "m.room.message", {"body": "x"})).status == 429
        # The calls' own bucket is finite: 12 of its 15 are spent, so the 16th is refused.
        statuses = [
            (await send(client, alice, room_id, "m.call.hangup", call_content("c2"))).status
            for _ in range(CALL_BURST - 12 + 1)
        ]
        assert statuses[-1] == 429 and 429 not in statuses[:-1], statuses
        # A type merely named like a call event is a message for the limits.
        other = await send(client, alice, room_id, "m.call.flood", {"body": "x"})
        assert other.status == 429, other.body

        try:
            pushed = await gateway.pushed(invite_id)
        finally:
            await runner.cleanup()
    assert pushed["type"] == "m.call.invite"
    assert pushed["devices"][0]["pushkey"] == "callee"
    assert pushed["devices"][0]["tweaks"] == {"sound": "ring"}


async def test_a_call_invite_is_refused_in_a_public_room(client: MatrixClient) -> None:
    """As Synapse: "Call invites are not allowed in public rooms" (403), whatever the
    path; a public_chat room also asks power 50 for them, as Synapse's preset does."""
    alice = await client.register()
    body = {"preset": "public_chat"}
    room_id = (await client.request("POST", "createRoom", body, alice)).ok()["room_id"]
    invite = call_content("c1", offer={"type": "offer", "sdp": "v=0\r\n"}, lifetime=60000)
    refused = await send(client, alice, room_id, "m.call.invite", invite)
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN", refused.body
    levels = await client.request(
        "GET", f"rooms/{quote(room_id)}/state/m.room.power_levels", token=alice
    )
    assert levels.ok()["events"]["m.call.invite"] == 50
    # Other call events, and invites in rooms that are not public, are not refused.
    (await send(client, alice, room_id, "m.call.hangup", call_content("c1"))).ok()
