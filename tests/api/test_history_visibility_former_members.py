"""History a former member keeps (Client-Server API, "Room History Visibility", "Server
behaviour" rule 3: under ``shared``, an event is visible to a user who "joined the room at
any point after the event was sent"; "After a user has left a room, they may see any
events which they were allowed to see before they left"), over HTTP on every backend."""

from __future__ import annotations

from harness.client import Account, MatrixClient
from harness.rooms import create_room, say


async def _messages(client: MatrixClient, room_id: str, reader: Account) -> list[str]:
    page = await client.request(
        "GET", f"rooms/{room_id}/messages", token=reader, params={"dir": "b", "limit": "50"}
    )
    return [e["event_id"] for e in page.ok()["chunk"]]


async def _room(client: MatrixClient, owner: Account, visibility: str) -> str:
    return await create_room(
        client,
        owner,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}
        ],
    )


async def test_a_kicked_member_keeps_the_history_from_before_her_join(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await _room(client, alice, "shared")
    before = await say(client, room_id, alice, "before bob")
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    during = await say(client, room_id, alice, "while bob is here")
    kick = await client.request(
        "POST", f"rooms/{room_id}/kick", json={"user_id": bob.user_id}, token=alice
    )
    kick.ok()
    after = await say(client, room_id, alice, "after bob")
    seen = await _messages(client, room_id, bob)
    assert before in seen and during in seen
    assert after not in seen
    event = await client.request("GET", f"rooms/{room_id}/event/{before}", token=bob)
    assert event.ok()["event_id"] == before


async def test_history_before_a_join_stays_hidden_when_visibility_is_joined(
    client: MatrixClient,
) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await _room(client, alice, "joined")
    before = await say(client, room_id, alice, "before bob")
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=bob)).ok()
    during = await say(client, room_id, alice, "while bob is here")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    seen = await _messages(client, room_id, bob)
    assert during in seen and before not in seen


async def test_an_invite_declined_shows_no_history(client: MatrixClient) -> None:
    """Never joined: rule 3 does not apply, whatever the user was invited to."""
    alice, bob = await client.register(), await client.register()
    room_id = await _room(client, alice, "shared")
    before = await say(client, room_id, alice, "before the invite")
    invite = await client.request(
        "POST", f"rooms/{room_id}/invite", json={"user_id": bob.user_id}, token=alice
    )
    invite.ok()
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    hidden = await client.request("GET", f"rooms/{room_id}/event/{before}", token=bob)
    assert hidden.status == 404, hidden.body
    assert before not in await _messages(client, room_id, bob)
