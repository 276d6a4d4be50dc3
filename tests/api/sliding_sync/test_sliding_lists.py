"""Sliding sync list filters and room subscriptions over HTTP (MSC4186 "Filters",
"Room subscriptions"), on every backend."""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import put_state
from harness.sliding_sync import create_room, join, one_list, sliding, window


async def filtered(client: MatrixClient, account: Account, **filters: object) -> list[str]:
    """The rooms of a list with these filters, newest first."""
    body = await sliding(client, account, {"lists": one_list(timeline_limit=0, filters=filters)})
    rooms: list[str] = window(body)
    return rooms


async def test_is_dm_reads_m_direct(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    dm = await create_room(client, alice, is_direct=True, invite=[bob.user_id])
    group = await create_room(client, alice)
    path = f"user/{quote(alice.user_id)}/account_data/m.direct"
    (await client.request("PUT", path, json={bob.user_id: [dm]}, token=alice)).ok()
    assert await filtered(client, alice, is_dm=True) == [dm]
    assert await filtered(client, alice, is_dm=False) == [group]
    body = await sliding(client, alice, {"lists": one_list(timeline_limit=0)})
    assert body["rooms"][dm]["is_dm"] is True
    assert "is_dm" not in body["rooms"][group]


async def test_is_encrypted_and_is_invite(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    plain = await create_room(client, bob)
    encrypted = await create_room(client, bob)
    await put_state(
        client, bob, encrypted, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}
    )
    invited = await create_room(client, alice, invite=[bob.user_id])
    assert await filtered(client, bob, is_encrypted=True) == [encrypted]
    assert await filtered(client, bob, is_encrypted=False) == [invited, plain]
    assert await filtered(client, bob, is_invite=True) == [invited]
    assert set(await filtered(client, bob, is_invite=False)) == {plain, encrypted}


async def test_room_types_and_spaces(client: MatrixClient) -> None:
    alice = await client.register()
    space = await create_room(client, alice, creation_content={"type": "m.space"})
    child = await create_room(client, alice)
    other = await create_room(client, alice)
    await put_state(client, alice, space, "m.space.child", {"via": ["example.org"]}, child)
    await put_state(client, alice, space, "m.space.child", {}, other)
    assert await filtered(client, alice, room_types=["m.space"]) == [space]
    assert await filtered(client, alice, room_types=[None]) == [other, child]
    assert await filtered(client, alice, not_room_types=["m.space"]) == [other, child]
    # A child without "via" is no child.
    assert await filtered(client, alice, spaces=[space]) == [child]


async def test_tags_and_not_tags(client: MatrixClient) -> None:
    alice = await client.register()
    favourite = await create_room(client, alice)
    low = await create_room(client, alice)
    both = await create_room(client, alice)
    untagged = await create_room(client, alice)
    for room_id, tags in (
        (favourite, ["m.favourite"]),
        (low, ["m.lowpriority"]),
        (both, ["m.favourite", "m.lowpriority"]),
    ):
        for tag in tags:
            path = f"user/{quote(alice.user_id)}/rooms/{quote(room_id)}/tags/{tag}"
            (await client.request("PUT", path, json={}, token=alice)).ok()
    assert await filtered(client, alice, tags=["m.favourite"]) == [both, favourite]
    # not_tags wins over tags.
    assert await filtered(client, alice, tags=["m.favourite"], not_tags=["m.lowpriority"]) == [
        favourite
    ]
    assert await filtered(client, alice, not_tags=["m.lowpriority"]) == [untagged, favourite]


async def test_a_subscription_merges_with_the_lists(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, alice, preset="public_chat", topic="Topic")
    await join(client, bob, room_id)
    for text in ("1", "2", "3"):
        (
            await client.request(
                "PUT",
                f"rooms/{quote(room_id)}/send/m.room.message/t{text}",
                json={"msgtype": "m.text", "body": text},
                token=alice,
            )
        ).ok()
    body = await sliding(
        client,
        bob,
        {
            "lists": one_list(timeline_limit=1, required_state=[["m.room.name", ""]]),
            "room_subscriptions": {
                room_id: {"timeline_limit": 3, "required_state": [["m.room.topic", ""]]}
            },
        },
    )
    room = body["rooms"][room_id]
    # The larger timeline_limit and the union of required_state.
    assert [e["content"]["body"] for e in room["timeline"]] == ["1", "2", "3"]
    assert {e["type"] for e in room["required_state"]} == {"m.room.topic"}


async def test_a_subscription_to_a_room_of_others_shows_nothing(client: MatrixClient) -> None:
    alice, mallory = await client.register(), await client.register()
    room_id = await create_room(client, alice)
    subscription = {room_id: {"timeline_limit": 5, "required_state": [["*", "*"]]}}
    body = await sliding(client, mallory, {"room_subscriptions": subscription})
    assert body["rooms"] == {}
    assert "lists" not in body
