"""The state section of incremental and gappy /sync, with and without lazy-loaded members,
over HTTP on every backend (Client-Server API, "Syncing", "Lazy-loading room members")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from harness.client import Account, MatrixClient
from harness.rooms import say
from harness.sync import sync

LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}})
LAZY_REDUNDANT = json.dumps(
    {
        "room": {
            "state": {"lazy_load_members": True, "include_redundant_members": True},
            "timeline": {"limit": 3},
        }
    }
)


async def create_public_room(client: MatrixClient, creator: Account, name: str = "") -> str:
    """A public room, named (so its heroes are not lazily loaded) when ``name`` is given."""
    body = {"preset": "public_chat", **({"name": name} if name else {})}
    created = await client.request("POST", "createRoom", json=body, token=creator)
    room_id: str = created.ok()["room_id"]
    return room_id


async def join(client: MatrixClient, room_id: str, account: Account) -> None:
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=account)).ok()


def members_in_state(body: dict[str, Any], room_id: str) -> set[str]:
    state = body["rooms"]["join"][room_id]["state"]["events"]
    return {e["state_key"] for e in state if e["type"] == "m.room.member"}


async def test_incremental_sync_brings_new_senders_members_once(client: MatrixClient) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    room_id = await create_public_room(client, alice, "named")
    await join(client, room_id, bob)
    await join(client, room_id, carol)
    for i in range(3):
        await say(client, room_id, bob, f"bob {i}")
    initial = await sync(client, alice, filter=LAZY)
    assert members_in_state(initial, room_id) == {alice.user_id, bob.user_id}

    await say(client, room_id, carol, "carol speaks")
    first = await sync(client, alice, filter=LAZY, since=initial["next_batch"])
    assert first["rooms"]["join"][room_id]["timeline"]["limited"] is False
    assert members_in_state(first, room_id) == {carol.user_id}

    # Carol's member event was sent to this device already: not again by default...
    await say(client, room_id, carol, "carol again")
    again = await sync(client, alice, filter=LAZY, since=first["next_batch"])
    assert members_in_state(again, room_id) == set()
    # ...unless the filter asks for redundant members.
    await say(client, room_id, carol, "carol a third time")
    redundant = await sync(client, alice, filter=LAZY_REDUNDANT, since=again["next_batch"])
    assert members_in_state(redundant, room_id) == {carol.user_id}


async def test_gappy_lazy_sync_has_gap_members_leaves_and_old_speakers(
    client: MatrixClient,
) -> None:
    alice, bob, carol, dave = [await client.register() for _ in range(4)]
    room_id = await create_public_room(client, alice, "named")
    await join(client, room_id, bob)
    await join(client, room_id, carol)
    for i in range(3):
        await say(client, room_id, alice, f"alice {i}")
    initial = await sync(client, alice, filter=LAZY)
    # Bob and Carol never spoke: not loaded.
    assert members_in_state(initial, room_id) == {alice.user_id}

    # In the gap: Dave joins, Carol leaves; then Bob, an old member, speaks last.
    await join(client, room_id, dave)
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=carol)).ok()
    for i in range(5):
        await say(client, room_id, alice, f"filler {i}")
    await say(client, room_id, bob, "bob wakes up")
    gappy = await sync(client, alice, filter=LAZY, since=initial["next_batch"])
    room = gappy["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    state = {
        e["state_key"]: e["content"]["membership"]
        for e in room["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert state == {dave.user_id: "join", carol.user_id: "leave", bob.user_id: "join"}


async def test_newly_joined_room_in_incremental_sync_is_limited(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await create_public_room(client, alice)
    for i in range(3):
        await say(client, room_id, alice, f"before bob {i}")
    since = (await sync(client, bob))["next_batch"]
    await join(client, room_id, bob)
    room = (await sync(client, bob, since=since))["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert {"m.room.create", "m.room.member"} <= {
        e["type"] for e in room["state"]["events"] + room["timeline"]["events"]
    }


async def test_summary_heroes_only_for_unnamed_rooms_and_loaded_lazily(
    client: MatrixClient,
) -> None:
    alice, bob, carol = [await client.register() for _ in range(3)]
    unnamed = await create_public_room(client, alice)
    await join(client, unnamed, bob)
    await join(client, unnamed, carol)
    for i in range(3):  # the joins leave the timeline (limit 3)
        await say(client, unnamed, alice, f"only alice speaks {i}")
    named = (
        await client.request(
            "POST", "createRoom", json={"preset": "public_chat", "name": "Named"}, token=alice
        )
    ).ok()["room_id"]
    await join(client, named, bob)
    body = await sync(client, alice, filter=LAZY)
    assert body["rooms"]["join"][named]["summary"] == {
        "m.joined_member_count": 2,
        "m.invited_member_count": 0,
    }
    summary = body["rooms"]["join"][unnamed]["summary"]
    assert sorted(summary["m.heroes"]) == sorted([bob.user_id, carol.user_id])
    # The heroes never spoke, yet their member events come with lazy loading.
    assert {bob.user_id, carol.user_id} <= members_in_state(body, unnamed)


async def _bob_out_of_view(client: MatrixClient) -> tuple[Account, Account, str, str]:
    """Alice's named room, joined by Bob, whose last three events are hers, lazily
    synced by her (Bob's member not loaded): Alice, Bob, the room and her token."""
    alice, bob = await client.register(), await client.register()
    room_id = await create_public_room(client, alice, "named")
    await join(client, room_id, bob)
    for i in range(3):  # Bob's join out of the initial timeline
        await say(client, room_id, alice, f"alice {i}")
    initial = await sync(client, alice, filter=LAZY)
    assert members_in_state(initial, room_id) == {alice.user_id}
    return alice, bob, room_id, initial["next_batch"]


async def _lost_response(client: MatrixClient) -> tuple[Account, Account, str, str]:
    """``_bob_out_of_view``, then Bob spoke and a sync from Alice's token carried his
    member: a response the test treats as lost."""
    alice, bob, room_id, since = await _bob_out_of_view(client)
    await say(client, room_id, bob, "bob speaks")
    lost = await sync(client, alice, filter=LAZY, since=since)
    assert members_in_state(lost, room_id) == {bob.user_id}
    return alice, bob, room_id, since


async def _members_after_bob_speaks(
    client: MatrixClient, alice: Account, bob: Account, room_id: str, since: str
) -> set[str]:
    """Bob speaks again; the members of Alice's lazy sync from ``since``."""
    await say(client, room_id, bob, "bob again")
    return members_in_state(await sync(client, alice, filter=LAZY, since=since), room_id)


async def test_a_retried_sync_gets_the_members_of_the_response_it_lost(
    client: MatrixClient,
) -> None:
    alice, bob, room_id, since = await _lost_response(client)
    # The client never got that response: from the same token, Bob's member again.
    retried = await sync(client, alice, filter=LAZY, since=since)
    assert members_in_state(retried, room_id) == {bob.user_id}
    # From the retried response's token, it is held.
    token = retried["next_batch"]
    assert await _members_after_bob_speaks(client, alice, bob, room_id, token) == set()


async def test_a_retry_that_does_not_carry_the_lost_members_leaves_them_unheld(
    client: MatrixClient,
) -> None:
    alice, bob, room_id, since = await _lost_response(client)
    # Alice talks on: the retry's window (3 events) holds no message of Bob's.
    for i in range(3):
        await say(client, room_id, alice, f"alice again {i}")
    retried = await sync(client, alice, filter=LAZY, since=since)
    assert bob.user_id not in members_in_state(retried, room_id)
    # Bob's member never reached the client: it comes with his next message.
    token = retried["next_batch"]
    assert await _members_after_bob_speaks(client, alice, bob, room_id, token) == {bob.user_id}


async def test_a_long_poll_given_up_on_does_not_hold_members_for_its_retry(
    client: MatrixClient,
) -> None:
    alice, bob, room_id, since = await _bob_out_of_view(client)
    # A long-poll the client gave up on (never read), then its retry, both waiting.
    given_up = asyncio.ensure_future(sync(client, alice, filter=LAZY, since=since, timeout="10000"))
    await asyncio.sleep(0.3)
    retry = asyncio.ensure_future(sync(client, alice, filter=LAZY, since=since, timeout="10000"))
    await asyncio.sleep(0.3)
    await say(client, room_id, bob, "bob speaks")
    async with asyncio.timeout(20):
        abandoned, answered = await given_up, await retry
    assert members_in_state(abandoned, room_id) == {bob.user_id}
    # The older request's response does not count as the device's: the retry has him.
    assert members_in_state(answered, room_id) == {bob.user_id}
    token = answered["next_batch"]
    assert await _members_after_bob_speaks(client, alice, bob, room_id, token) == set()


async def test_a_left_room_loads_its_members_lazily_too(client: MatrixClient) -> None:
    alice, bob, carol, dave, erin = [await client.register() for _ in range(5)]
    room_id = await create_public_room(client, alice, "named")
    for account in (bob, carol, dave):
        await join(client, room_id, account)
    await say(client, room_id, carol, "carol speaks")
    lazy = {"include_leave": True, "state": {"lazy_load_members": True}, "timeline": {"limit": 2}}
    since = (await sync(client, dave, filter=json.dumps({"room": lazy})))["next_batch"]
    await join(client, room_id, erin)
    await say(client, room_id, bob, "bob speaks")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=dave)).ok()

    def members(body: dict[str, Any], section: str) -> set[str]:
        events = body["rooms"]["leave"][room_id][section]["events"]
        return {e["state_key"] for e in events if e["type"] == "m.room.member"}

    everyone = {alice.user_id, bob.user_id, carol.user_id, dave.user_id, erin.user_id}
    eager = json.dumps({"room": {"include_leave": True, "timeline": {"limit": 2}}})
    assert members(await sync(client, dave, filter=eager), "state") == everyone
    not_dave = {**lazy, "timeline": {"limit": 2, "not_senders": [dave.user_id]}}
    for params, section in (({}, "state"), ({"use_state_after": "true"}, "state_after")):
        # The timeline is Bob's message and Dave's leave: their members only.
        initial = await sync(client, dave, filter=json.dumps({"room": lazy}), **params)
        state = initial["rooms"]["leave"][room_id][section]["events"]
        assert "m.room.create" in {e["type"] for e in state}
        assert members(initial, section) == {bob.user_id, dave.user_id}
        # Dave's own member comes in a whole section though he sent nothing shown.
        hidden = await sync(client, dave, filter=json.dumps({"room": not_dave}), **params)
        senders = {e["sender"] for e in hidden["rooms"]["leave"][room_id]["timeline"]["events"]}
        assert dave.user_id not in senders
        shown = members(hidden, section)
        assert dave.user_id in shown and shown <= senders | {dave.user_id}
    # Across a gap (Erin's join before the timeline) with ``state``, every member at the
    # timeline's start, as without lazy loading; with ``state_after`` what changed
    # (Erin's join, Dave's leave) and the senders' members.
    since_params = {"since": since, "filter": json.dumps({"room": lazy})}
    gappy = await sync(client, dave, **since_params)
    assert gappy["rooms"]["leave"][room_id]["timeline"]["limited"] is True
    assert members(gappy, "state") == everyone
    after = await sync(client, dave, **since_params, use_state_after="true")
    assert members(after, "state_after") == {bob.user_id, dave.user_id, erin.user_id}


async def test_a_left_room_continuing_the_timeline_has_its_senders_members(
    client: MatrixClient,
) -> None:
    alice, bob, dave = [await client.register() for _ in range(3)]
    room_id = await create_public_room(client, alice, "named")
    for account in (bob, dave):
        await join(client, room_id, account)
    # With the redundant members: without, those the device holds are left out
    # (``test_a_left_room_leaves_out_the_members_the_device_holds``).
    lazy = json.dumps(
        {
            "room": {
                "include_leave": True,
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "timeline": {"limit": 3},
            }
        }
    )
    since = (await sync(client, dave, filter=lazy))["next_batch"]
    await say(client, room_id, bob, "bob speaks")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=dave)).ok()
    room = (await sync(client, dave, filter=lazy, since=since))["rooms"]["leave"][room_id]
    assert room["timeline"]["limited"] is False
    # Both senders' members at the timeline's start (Dave's leave sets his member only
    # after he sent it, as Synapse counts it); Alice's not.
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {bob.user_id, dave.user_id}


async def test_a_left_room_leaves_out_the_members_the_device_holds(client: MatrixClient) -> None:
    """As for a joined room, the member events a device was sent while lazy-loading
    are not sent again in a left room's state, unless ``include_redundant_members``."""
    alice, bob, dave = [await client.register() for _ in range(3)]
    room_id = await create_public_room(client, alice, "named")
    for account in (bob, dave):
        await join(client, room_id, account)

    def left_filter(redundant: bool) -> str:
        state = {"lazy_load_members": True, "include_redundant_members": redundant}
        room = {"include_leave": True, "state": state, "timeline": {"limit": 3}}
        return json.dumps({"room": room})

    first = await sync(client, dave, filter=left_filter(False))
    await say(client, room_id, bob, "bob speaks")
    second = await sync(client, dave, filter=left_filter(False), since=first["next_batch"])
    # Dave's device now holds his member (his own, in the initial sync) and Bob's.
    held = members_in_state(first, room_id) | members_in_state(second, room_id)
    timeline = first["rooms"]["join"][room_id]["timeline"]["events"]
    held |= {e["state_key"] for e in timeline if e["type"] == "m.room.member"}
    assert {bob.user_id, dave.user_id} <= held
    await say(client, room_id, bob, "bob again")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=dave)).ok()

    def left_members(body: dict[str, Any]) -> set[str]:
        room = body["rooms"]["leave"][room_id]
        assert room["timeline"]["limited"] is False
        return {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}

    since = second["next_batch"]
    lazy = await sync(client, dave, filter=left_filter(False), since=since)
    assert left_members(lazy) == set()
    redundant = await sync(client, dave, filter=left_filter(True), since=since)
    assert left_members(redundant) == {bob.user_id, dave.user_id}


async def test_a_left_rooms_state_after_leaves_out_held_members_but_not_changed_ones(
    client: MatrixClient,
) -> None:
    """With ``use_state_after``, a left room's section after a token holds the keys that
    changed and the timeline senders' members: a sender's member the device holds goes,
    the user's own (changed by the leave) stays."""
    alice, bob, dave = [await client.register() for _ in range(3)]
    room_id = await create_public_room(client, alice, "named")
    for account in (bob, dave):
        await join(client, room_id, account)
    lazy = json.dumps({"room": {"include_leave": True, "state": {"lazy_load_members": True}}})
    first = await sync(client, dave, filter=lazy, use_state_after="true")
    await say(client, room_id, bob, "bob speaks")
    second = await sync(
        client, dave, filter=lazy, since=first["next_batch"], use_state_after="true"
    )
    held = set()
    for body in (first, second):
        section = body["rooms"]["join"][room_id]["state_after"]["events"]
        held |= {e["state_key"] for e in section if e["type"] == "m.room.member"}
    assert bob.user_id in held
    await say(client, room_id, bob, "bob again")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=dave)).ok()
    left = await sync(client, dave, filter=lazy, since=second["next_batch"], use_state_after="true")
    section = left["rooms"]["leave"][room_id]["state_after"]["events"]
    members = {
        e["state_key"]: e["content"]["membership"] for e in section if e["type"] == "m.room.member"
    }
    assert members == {dave.user_id: "leave"}
