"""Presence over HTTP against a real Peyvand (Client-Server API, "Presence"): the status
endpoints, presence in /sync (only users sharing a room, coalesced, filtered),
``set_presence`` and the ``[presence] enabled = false`` switch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.client import Account, MatrixClient
from harness.rooms import shared_room
from harness.server import start_homeserver
from harness.sync import LongPoll


async def sync(
    client: MatrixClient,
    account: Account,
    since: str | None = None,
    *,
    timeout_ms: int = 0,
    set_presence: str | None = None,
) -> dict[str, Any]:
    params = {"timeout": str(timeout_ms)}
    if since is not None:
        params["since"] = since
    if set_presence is not None:
        params["set_presence"] = set_presence
    body: dict[str, Any] = (await client.request("GET", "sync", token=account, params=params)).ok()
    return body


def presence_of(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """sender -> content of the response's m.presence events (asserting one per sender)."""
    events = response["presence"]["events"]
    senders = [e["sender"] for e in events]
    assert len(senders) == len(set(senders)), events
    assert all(e["type"] == "m.presence" for e in events)
    return {e["sender"]: e["content"] for e in events}


async def put_status(
    client: MatrixClient, account: Account, presence: str, status_msg: str | None = None
) -> None:
    body: dict[str, Any] = {"presence": presence}
    if status_msg is not None:
        body["status_msg"] = status_msg
    path = f"presence/{account.user_id}/status"
    (await client.request("PUT", path, json=body, token=account)).ok()


async def test_status_round_trip_and_permissions(client: MatrixClient) -> None:
    alice, bob, _ = await shared_room(client)
    stranger = await client.register()
    path = f"presence/{alice.user_id}/status"
    assert (await client.request("GET", path, token=alice)).ok()["presence"] == "offline"

    await put_status(client, alice, "online", "Testing something")
    own = (await client.request("GET", path, token=alice)).ok()
    assert own["presence"] == "online"
    assert own["status_msg"] == "Testing something"
    assert own["currently_active"] is True
    assert 0 <= own["last_active_ago"] < 60_000
    # A user sharing a room sees it; a stranger does not (403, as Synapse).
    assert (await client.request("GET", path, token=bob)).ok()["presence"] == "online"
    hidden = await client.request("GET", path, token=stranger)
    assert hidden.status == 403 and hidden.body["errcode"] == "M_FORBIDDEN"
    # Only one's own presence may be set; bad values are 400s, not 500s.
    other = await client.request("PUT", path, json={"presence": "online"}, token=bob)
    assert other.status == 403 and other.body["errcode"] == "M_FORBIDDEN"
    for bad in (
        {"presence": "asleep"},
        {},
        {"presence": 1},
        {"presence": "online", "status_msg": 5},
    ):
        response = await client.request("PUT", path, json=bad, token=alice)
        assert response.status == 400, (bad, response.body)
    invalid = await client.request("GET", "presence/not-a-user/status", token=alice)
    assert invalid.status == 400


async def test_sync_reports_presence_of_room_members_only(client: MatrixClient) -> None:
    alice, bob, _ = await shared_room(client)
    stranger = await client.register()
    first = await sync(client, bob)
    assert presence_of(first)[bob.user_id]["presence"] == "online"  # syncing sets online
    token = first["next_batch"]
    stranger_token = (await sync(client, stranger))["next_batch"]

    # A waiting sync of bob's wakes for alice's change; the stranger's does not.
    stranger_waiting = asyncio.ensure_future(
        sync(client, stranger, stranger_token, timeout_ms=1_500)
    )
    waiting = await LongPoll.start(sync(client, bob, token, timeout_ms=10_000), 10)
    waiting.assert_waiting()
    assert not stranger_waiting.done()
    await put_status(client, alice, "unavailable", "away")
    await put_status(client, alice, "online", "back")
    woken = await waiting.woken()
    seen = presence_of(woken)
    assert seen[alice.user_id]["presence"] in ("unavailable", "online")
    assert alice.user_id not in presence_of(await stranger_waiting)

    # Coalesced: two changes since the token give one event, the latest.
    later = await sync(client, bob, token)
    assert presence_of(later)[alice.user_id]["presence"] == "online"
    assert presence_of(later)[alice.user_id]["status_msg"] == "back"
    # Nothing changed since: no presence at all (not even one's own again).
    again = await sync(client, bob, later["next_batch"])
    assert presence_of(again) == {}


async def test_presence_filter_and_set_presence(client: MatrixClient) -> None:
    alice, bob, _ = await shared_room(client)
    token = (await sync(client, bob))["next_batch"]
    await put_status(client, alice, "online")
    none = '{"presence": {"not_types": ["m.presence"]}}'
    params = {"since": token, "timeout": "0", "filter": none}
    filtered = (await client.request("GET", "sync", token=bob, params=params)).ok()
    assert filtered["presence"]["events"] == []

    # set_presence=unavailable on a sync marks an online user unavailable; offline leaves
    # presence alone.
    carol = await client.register()
    await sync(client, carol, set_presence="offline")
    status = f"presence/{carol.user_id}/status"
    assert (await client.request("GET", status, token=carol)).ok()["presence"] == "offline"
    await sync(client, carol, set_presence="unavailable")
    assert (await client.request("GET", status, token=carol)).ok()["presence"] == "unavailable"
    await sync(client, carol)  # online, the default: a sync is activity (as Synapse)
    assert (await client.request("GET", status, token=carol)).ok()["presence"] == "online"
    bad = await client.request("GET", "sync", token=carol, params={"set_presence": "busy"})
    assert bad.status == 400


async def test_joins_bring_presence(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id = created.ok()["room_id"]
    alice_token = (await sync(client, alice))["next_batch"]
    bob_token = (await sync(client, bob))["next_batch"]
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    # The joiner gets the room's members' presence; the members get the joiner's.
    assert presence_of(await sync(client, bob, bob_token))[alice.user_id]["presence"] == "online"
    after_bob = await sync(client, alice, alice_token)
    assert presence_of(after_bob)[bob.user_id]["presence"] == "online"
    # A member never seen online comes as offline (as Synapse sends it).
    carol = await client.register()
    (await client.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    after_carol = presence_of(await sync(client, alice, after_bob["next_batch"]))
    assert after_carol == {carol.user_id: {"presence": "offline"}}
    # The legacy room initialSync lists every member's presence, offline included.
    legacy = (await client.request("GET", f"rooms/{room_id}/initialSync", token=alice)).ok()
    by_user = {e["content"]["user_id"]: e["content"]["presence"] for e in legacy["presence"]}
    assert by_user == {alice.user_id: "online", bob.user_id: "online", carol.user_id: "offline"}
    # The global one, like an initial /sync, those not offline.
    everything = (await client.request("GET", "initialSync", token=alice)).ok()
    assert {e["content"]["user_id"] for e in everything["presence"]} == {
        alice.user_id,
        bob.user_id,
    }


async def test_presence_can_be_turned_off(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = start_homeserver(
        backend,
        request,
        tmp_path / "homeserver",
        options={"registration.open": "true", "presence.enabled": "false"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = MatrixClient(session, server.base_url)
            alice, bob, _ = await shared_room(client)
            token = (await sync(client, bob))["next_batch"]
            # Synapse with use_presence: false: PUT is accepted and ignored, GET says
            # offline, /sync carries no presence.
            await put_status(client, alice, "online", "here")
            status = f"presence/{alice.user_id}/status"
            assert (await client.request("GET", status, token=bob)).ok() == {"presence": "offline"}
            assert (await sync(client, bob, token))["presence"]["events"] == []
            assert (await sync(client, alice))["presence"]["events"] == []
    finally:
        server.stop()
