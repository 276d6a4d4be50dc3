"""A user's listed rooms are held in list order between requests (``user_rooms.py``):
fresh connections, one after another, see messages, joins, invites, leaves, bans and
forgotten rooms at once, over HTTP on every backend."""

from __future__ import annotations

from urllib.parse import quote

from harness.client import Account, MatrixClient, new_session
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sliding_sync import create_room, join, one_list, sliding, window


async def listed(
    client: MatrixClient, account: Account, **filters: object
) -> tuple[list[str], int]:
    """A fresh connection's list: its rooms, newest first, and its ``count``."""
    lists = one_list(timeline_limit=0, filters=filters or None)
    body = await sliding(client, account, {"lists": lists})
    return window(body), body["lists"]["all"]["count"]


async def test_messages_move_rooms_up_for_each_new_connection(client: MatrixClient) -> None:
    alice = await client.register()
    a, b, c = [await create_room(client, alice) for _ in range(3)]
    assert await listed(client, alice) == ([c, b, a], 3)
    await say(client, a, alice, "a first")
    assert await listed(client, alice) == ([a, c, b], 3)
    await say(client, b, alice, "then b")
    await say(client, c, alice, "then c")
    assert await listed(client, alice) == ([c, b, a], 3)
    # A filtered list keeps the same order.
    assert await listed(client, alice, is_invite=False) == ([c, b, a], 3)
    # A window further down is a slice of the same order.
    lists = {"all": {"ranges": [[1, 1]], "timeline_limit": 0, "required_state": []}}
    body = await sliding(client, alice, {"lists": lists})
    assert body["lists"]["all"]["ops"][0]["room_ids"] == [b]


async def test_joins_invites_and_leaves_change_the_list_at_once(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    own = await create_room(client, alice)
    shared = await create_room(client, bob, preset="public_chat")
    assert await listed(client, alice) == ([own], 1)
    invited = await create_room(client, bob, invite=[alice.user_id])
    assert await listed(client, alice) == ([invited, own], 2)
    await join(client, alice, shared)
    assert await listed(client, alice) == ([shared, invited, own], 3)
    kept = {"conn_id": "kept", "lists": one_list(timeline_limit=1)}
    earlier = await sliding(client, alice, kept)
    (await client.request("POST", f"rooms/{quote(own)}/leave", json={}, token=alice)).ok()
    # Gone for a new connection; shown once to one that was sent it, after the leave.
    assert await listed(client, alice) == ([shared, invited], 2)
    after = await sliding(client, alice, kept, earlier["pos"])
    assert window(after) == [own, shared, invited]
    assert after["rooms"][own]["timeline"][-1]["content"]["membership"] == "leave"
    # A message in a room the user joined moves it up; one in a room they left does not
    # bring it back.
    await say(client, invited, bob, "before the join")
    await join(client, alice, invited)
    await say(client, shared, bob, "newest")
    assert await listed(client, alice) == ([shared, invited], 2)


async def test_a_banned_room_stays_listed_until_forgotten(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, bob, preset="public_chat")
    other = await create_room(client, alice)
    await join(client, alice, room_id)
    ban = {"user_id": alice.user_id, "reason": "out"}
    (await client.request("POST", f"rooms/{quote(room_id)}/ban", json=ban, token=bob)).ok()
    await say(client, other, alice, "after the ban")
    assert await listed(client, alice) == ([other, room_id], 2)
    await say(client, room_id, bob, "not seen by alice")
    assert await listed(client, alice) == ([other, room_id], 2)
    (await client.request("POST", f"rooms/{quote(room_id)}/forget", json={}, token=alice)).ok()
    assert await listed(client, alice) == ([other], 1)


async def test_after_a_restart_kicks_leaves_and_ignored_invites_are_read_back(
    private_homeserver: HomeserverProcess,
) -> None:
    """No room's snapshot is loaded after a restart: who sent each leave and invite is
    read from storage (one query for all the rooms)."""
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice, bob, carol = [await client.register() for _ in range(3)]
        kicked = await create_room(client, bob, preset="public_chat")
        left = await create_room(client, bob, preset="public_chat")
        for room_id in (kicked, left):
            await join(client, alice, room_id)
        kick = {"user_id": alice.user_id, "reason": "out"}
        (await client.request("POST", f"rooms/{quote(kicked)}/kick", json=kick, token=bob)).ok()
        (await client.request("POST", f"rooms/{quote(left)}/leave", json={}, token=alice)).ok()
        from_bob = await create_room(client, bob, invite=[alice.user_id])
        from_carol = await create_room(client, carol, invite=[alice.user_id])
        path = f"user/{quote(alice.user_id)}/account_data/m.ignored_user_list"
        ignore: dict[str, object] = {"ignored_users": {carol.user_id: {}}}
        (await client.request("PUT", path, json=ignore, token=alice)).ok()
        before = await listed(client, alice)
        assert before == ([from_bob, kicked], 2)
    private_homeserver.restart()
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice = await client.login(alice.user_id, alice.password)
        assert await listed(client, alice) == before
        assert from_carol not in (await listed(client, alice, is_invite=True))[0]
