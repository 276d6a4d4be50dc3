"""createRoom with ``m.room.power_levels`` in ``initial_state`` (Client-Server API,
"Creation": POST /createRoom).

As in Synapse, the given power levels are the room's, sent where the default ones would
be (right after the creator's join), and ``power_level_content_override`` does not
apply to them.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from harness.client import MatrixClient
from harness.rooms import create_room


async def test_initial_state_power_levels_are_the_rooms(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    given = {
        "users": {alice.user_id: 100, bob.user_id: 60},
        "users_default": 0,
        "events": {"m.room.name": 60},
        "events_default": 0,
        "state_default": 75,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    room_id = await create_room(
        client,
        alice,
        room_version="11",
        preset="public_chat",
        initial_state=[{"type": "m.room.power_levels", "state_key": "", "content": given}],
        power_level_content_override={"events_default": 10, "users": {alice.user_id: 100}},
    )
    path = f"rooms/{quote(room_id)}"
    levels = (await client.request("GET", f"{path}/state/m.room.power_levels/", token=alice)).ok()
    assert levels == given

    timeline = (
        await client.request(
            "GET", f"{path}/messages", params={"dir": "b", "limit": "50"}, token=alice
        )
    ).ok()["chunk"]
    types = [e["type"] for e in reversed(timeline)]
    assert types[:3] == ["m.room.create", "m.room.member", "m.room.power_levels"]
    assert types.count("m.room.power_levels") == 1

    # The given levels are in force: bob (60) may name the room (60) but not set the
    # topic (state_default 75).
    (await client.request("POST", f"{path}/join", json={}, token=bob)).ok()
    named = await client.request(
        "PUT", f"{path}/state/m.room.name/", json={"name": "bob's"}, token=bob
    )
    named.ok()
    topic = await client.request(
        "PUT", f"{path}/state/m.room.topic/", json={"topic": "no"}, token=bob
    )
    assert topic.status == 403 and topic.body["errcode"] == "M_FORBIDDEN", topic.body


async def test_initial_state_power_levels_leaving_the_creator_powerless_refused(
    client: MatrixClient,
) -> None:
    """Levels under which the creator cannot send the preset's join rules: 403, no room."""
    alice = await client.register()
    refused = await client.request(
        "POST",
        "createRoom",
        json={
            "room_version": "11",
            "initial_state": [
                {"type": "m.room.power_levels", "content": {"users": {}, "state_default": 50}}
            ],
        },
        token=alice,
    )
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN", refused.body
    joined = (await client.request("GET", "joined_rooms", token=alice)).ok()
    assert joined["joined_rooms"] == []


@pytest.mark.parametrize(("version", "tombstone"), [("11", 100), ("12", 150)])
async def test_default_power_levels(client: MatrixClient, version: str, tombstone: int) -> None:
    """Synapse's defaults. From v12 ``m.room.tombstone`` is "explicitly higher than
    ``state_default``" (createRoom: 150 instead of 100), so only creators may upgrade;
    no ``notifications`` key (absent, ``room`` is 50)."""
    alice = await client.register()
    room_id = await create_room(client, alice, room_version=version)
    path = f"rooms/{quote(room_id)}/state/m.room.power_levels/"
    levels = (await client.request("GET", path, token=alice)).ok()
    assert levels["events"]["m.room.tombstone"] == tombstone
    assert levels["events"]["m.room.tombstone"] > levels["state_default"] == 50
    assert "notifications" not in levels
    assert levels["users"] == ({} if version == "12" else {alice.user_id: 100})
