"""Sliding sync across a restart (MSC4186): connections are held in memory only, so an
old ``pos`` is 400 ``M_UNKNOWN_POS`` and the client starts over (but for a position that
holds nothing, a connection of extensions alone, which is not stored); bump stamps are read
back from storage, so the order is the same as before, and filters read the rooms'
state from storage too."""

from __future__ import annotations

from harness.client import MatrixClient, new_session
from harness.rooms import put_state, say
from harness.server import HomeserverProcess
from harness.sliding_sync import create_room, join, one_list, request, sliding, window


async def test_after_a_restart_an_old_pos_is_unknown_and_the_order_holds(
    private_homeserver: HomeserverProcess,
) -> None:
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice = await client.register()
        messaged = await create_room(client, alice)
        later = await create_room(client, alice)
        await say(client, messaged, alice, "bump")
        # Not a bump event type: moves no room.
        await put_state(client, alice, later, "m.room.topic", {"topic": "quiet"})
        encryption = {"algorithm": "m.megolm.v1.aes-sha2"}
        await put_state(client, alice, later, "m.room.encryption", encryption)
        space = await create_room(client, alice, creation_content={"type": "m.space"})
        await say(client, messaged, alice, "bump again")
        before = await sliding(client, alice, {"lists": one_list()})
        assert window(before) == [messaged, space, later]
    private_homeserver.restart()
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice = await client.login(alice.user_id, alice.password)
        stale = await request(client, alice, {"lists": one_list()}, before["pos"])
        assert stale.status == 400
        assert stale.body["errcode"] == "M_UNKNOWN_POS"
        # First, while no room's snapshot is loaded: filters read their state in a batch.
        lists = {
            "encrypted": one_list(filters={"is_encrypted": True})["all"],
            "rooms": one_list(filters={"not_room_types": ["m.space"]})["all"],
        }
        filtered = await sliding(client, alice, {"lists": lists})
        assert window(filtered, "encrypted") == [later]
        assert window(filtered, "rooms") == [messaged, later]
        after = await sliding(client, alice, {"lists": one_list()})
        assert window(after) == [messaged, space, later]
        assert [after["rooms"][r]["bump_stamp"] for r in (messaged, later)] == [
            before["rooms"][r]["bump_stamp"] for r in (messaged, later)
        ]


async def test_a_pos_holding_nothing_outlives_a_restart(
    private_homeserver: HomeserverProcess,
) -> None:
    """Element X's encryption sync (extensions alone) goes on from its ``pos`` after a
    restart: the device-list change made after it is not lost to a fresh start."""
    body = {"conn_id": "encryption", "extensions": {"e2ee": {"enabled": True}}}
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice, bob = await client.register(), await client.register()
        room_id = await create_room(client, alice, preset="public_chat")
        await join(client, bob, room_id)
        before = await sliding(client, alice, body)
    private_homeserver.restart()
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        await client.login(bob.user_id, bob.password)
        after = await sliding(client, alice, body, before["pos"])
        assert after["extensions"]["e2ee"]["device_lists"] == {
            "changed": [bob.user_id],
            "left": [],
        }
