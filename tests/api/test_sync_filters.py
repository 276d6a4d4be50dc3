"""The account data filters of /sync over HTTP on every backend (Client-Server API,
"Filtering": ``account_data`` and ``room.account_data``)."""

from __future__ import annotations

import json
from urllib.parse import quote

from harness.client import MatrixClient


async def test_account_data_filters_apply_to_sync(client: MatrixClient) -> None:
    alice = await client.register()
    room = await client.request("POST", "createRoom", json={}, token=alice)
    room_id = room.ok()["room_id"]
    user = quote(alice.user_id, safe="")
    for data_type in ("org.example.kept", "org.example.dropped"):
        body = {"type": data_type}
        path = f"user/{user}/account_data/{data_type}"
        (await client.request("PUT", path, json=body, token=alice)).ok()
        path = f"user/{user}/rooms/{room_id}/account_data/{data_type}"
        (await client.request("PUT", path, json=body, token=alice)).ok()
    only_kept = {"types": ["org.example.kept"]}
    sync_filter = json.dumps({"account_data": only_kept, "room": {"account_data": only_kept}})
    synced = (await client.request("GET", "sync", token=alice, params={"filter": sync_filter})).ok()
    assert [e["type"] for e in synced["account_data"]["events"]] == ["org.example.kept"]
    room_data = synced["rooms"]["join"][room_id]["account_data"]["events"]
    assert [e["type"] for e in room_data] == ["org.example.kept"]
    # Unfiltered, both arrive.
    everything = (await client.request("GET", "sync", token=alice)).ok()
    assert {"org.example.kept", "org.example.dropped"} <= {
        e["type"] for e in everything["account_data"]["events"]
    }
