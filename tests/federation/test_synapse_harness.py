"""The Synapse harness itself: Synapse answers its client API, and its TLS federation
listener serves its signing keys under the server name peers will use."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from harness.client import MatrixClient
from harness.synapse import SynapseProcess


async def test_synapse_serves_the_client_api(
    synapse: SynapseProcess, synapse_client: MatrixClient
) -> None:
    alice = await synapse_client.register()
    bob = await synapse_client.register()
    assert alice.user_id.endswith(f":{synapse.server_name}")
    assert alice.device_id and alice.access_token

    room_id = (
        await synapse_client.request(
            "POST", "createRoom", json={"invite": [bob.user_id]}, token=alice
        )
    ).ok()["room_id"]
    (await synapse_client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    event_id = (
        await synapse_client.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.message/txn1",
            json={"msgtype": "m.text", "body": "hello from alice"},
            token=alice,
        )
    ).ok()["event_id"]

    messages = (
        await synapse_client.request(
            "GET", f"rooms/{room_id}/messages", params={"dir": "b", "limit": "10"}, token=bob
        )
    ).ok()
    message = next(event for event in messages["chunk"] if event["event_id"] == event_id)
    assert message["sender"] == alice.user_id
    assert message["content"]["body"] == "hello from alice"


async def test_shared_secret_registration_makes_an_admin(
    synapse: SynapseProcess, synapse_client: MatrixClient
) -> None:
    admin = await synapse.register_user(admin=True)
    assert admin.user_id.endswith(f":{synapse.server_name}")
    user = await synapse_client.request(
        "GET", f"/_synapse/admin/v2/users/{admin.user_id}", token=admin
    )
    assert user.ok()["admin"] is True


async def test_federation_listener_serves_the_server_keys_over_tls(
    synapse: SynapseProcess,
) -> None:
    connector = aiohttp.TCPConnector(ssl=False)  # self-signed: not verified
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{synapse.federation_url}/_matrix/key/v2/server") as response,
    ):
        assert response.status == 200, await response.text()
        keys: dict[str, Any] = await response.json()

    assert keys["server_name"] == synapse.server_name
    assert keys["verify_keys"] == {synapse.signing_key_id: {"key": synapse.verify_key_base64}}
    assert keys["valid_until_ts"] > time.time() * 1000
    assert synapse.server_name in keys["signatures"]
