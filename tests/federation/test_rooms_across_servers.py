"""Peyvand shares rooms over federation (loopback, test network) with a peer: a real
Synapse, and a second Peyvand (every test runs against both).

A Peyvand user creates a room and invites the peer's user, who joins through the peer;
messages flow both ways and both servers show them in the same order; the reverse by
alias; either server down for a while catches up; concurrent state changes converge.
"""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair, change_state_at_once, converged_state
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from harness.sync import invited_to, knocked_on, sync_until, wait_until_joined
from harness.timeline import message_bodies

TIMEOUT_SECONDS = 60
_txn = itertools.count()


async def _wait_for_bodies(
    client: MatrixClient, account: Account, room_id: str, expected: list[str]
) -> None:
    """Wait (bounded by the caller) until the room shows every body in ``expected``."""
    for _ in range(TIMEOUT_SECONDS * 10):
        bodies = await message_bodies(client, account, room_id, 100)
        if all(b in bodies for b in expected):
            return
        await asyncio.sleep(0.1)


async def _shared_room(
    peyvand_client: MatrixClient, alice: Account, peer_client: MatrixClient, bob: Account
) -> str:
    """A Peyvand room that ``alice`` created and ``bob`` (on the peer) joined on invite."""
    room_id = str(
        (
            await peyvand_client.request("POST", "createRoom", json={"name": "across"}, token=alice)
        ).ok()["room_id"]
    )
    (
        await peyvand_client.request(
            "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": bob.user_id}, token=alice
        )
    ).ok()
    await sync_until(peer_client, bob, invited_to(room_id))
    (await peer_client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    await wait_until_joined(
        peyvand_client, alice, room_id, bob.user_id, attempts=TIMEOUT_SECONDS * 10
    )
    return room_id


async def test_peyvand_room_joined_by_a_peer_user(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room(peyvand_client, alice, peer_client, bob)

        # A conversation: each answers once the other's message has arrived.
        expected: list[str] = []
        turns = [
            (peyvand_client, alice, peer_client, bob, "hello from peyvand"),
            (peer_client, bob, peyvand_client, alice, "hello from the peer"),
            (peyvand_client, alice, peer_client, bob, "second from peyvand"),
            (peer_client, bob, peyvand_client, alice, "second from the peer"),
        ]
        for sender_client, sender, reader_client, reader, body in turns:
            await say(sender_client, room_id, sender, body)
            expected.append(body)
            await _wait_for_bodies(reader_client, reader, room_id, [body])
        on_peer = await message_bodies(peer_client, bob, room_id, 100)
        on_peyvand = await message_bodies(peyvand_client, alice, room_id, 100)
    assert on_peyvand == on_peer
    assert on_peyvand == expected
    assert "Unhandled error" not in peyvand.log()


async def test_peer_room_joined_from_peyvand_by_alias(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    alias_name = f"lobby-{next(_txn)}-{peyvand.backend}"
    alias = f"#{alias_name}:{peer.server_name}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = (
            await peer_client.request(
                "POST",
                "createRoom",
                json={"preset": "public_chat", "room_alias_name": alias_name, "name": "lobby"},
                token=bob,
            )
        ).ok()["room_id"]
        await say(peer_client, room_id, bob, "welcome")
        joined = await peyvand_client.request("POST", f"join/{quote(alias)}", json={}, token=alice)
        assert joined.ok()["room_id"] == room_id

        await _wait_for_bodies(peyvand_client, alice, room_id, [])
        await say(peyvand_client, room_id, alice, "thanks from peyvand")
        await _wait_for_bodies(peer_client, bob, room_id, ["thanks from peyvand"])
        await say(peer_client, room_id, bob, "you are welcome")
        await _wait_for_bodies(peyvand_client, alice, room_id, ["you are welcome"])
        on_peer = await message_bodies(peer_client, bob, room_id, 100)
        on_peyvand = await message_bodies(peyvand_client, alice, room_id, 100)
    assert on_peer == ["welcome", "thanks from peyvand", "you are welcome"]
    assert on_peyvand[-2:] == ["thanks from peyvand", "you are welcome"]
    state = (
        await peyvand_client.request(
            "GET", f"rooms/{quote(room_id)}/state/m.room.name", token=alice
        )
    ).ok()
    assert state == {"name": "lobby"}
    assert "Unhandled error" not in peyvand.log()


async def test_peer_catches_up_after_being_down(pair: Pair) -> None:
    """Messages sent while the peer is stopped reach it once it is back (the durable
    per-destination queue retries until it gets through)."""
    _, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room(peyvand_client, alice, peer_client, bob)
    sent = [f"while the peer was down {i}" for i in range(5)]
    peer.stop()
    try:
        for body in sent:
            await say(peyvand_client, room_id, alice, body)
    finally:
        peer.start()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _wait_for_bodies(peer_client, bob, room_id, sent)
    on_peer = await message_bodies(peer_client, bob, room_id, 100)
    assert [b for b in on_peer if b in sent] == sent


async def test_peyvand_catches_up_after_being_down(pair: Pair) -> None:
    """Messages sent on the peer while Peyvand is stopped reach Peyvand once it is back
    (the peer retries, at once when Peyvand talks to it again)."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room(peyvand_client, alice, peer_client, bob)
    sent = [f"while peyvand was down {i}" for i in range(5)]
    peyvand.stop()
    try:
        for body in sent:
            await say(peer_client, room_id, bob, body)
    finally:
        peyvand.start()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await say(peyvand_client, room_id, alice, "back again")
        await _wait_for_bodies(peyvand_client, alice, room_id, sent)
    on_peyvand = await message_bodies(peyvand_client, alice, room_id, 100)
    assert [b for b in on_peyvand if b in sent] == sent
    assert "Unhandled error" not in peyvand.log()


async def test_concurrent_state_changes_converge(pair: Pair) -> None:
    """Both servers change the same and different state at once; after the changes have
    crossed, state resolution gives both servers the same room state."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await _shared_room(peyvand_client, alice, peer_client, bob)
        power = (
            await peyvand_client.request(
                "GET", f"rooms/{quote(room_id)}/state/m.room.power_levels", token=alice
            )
        ).ok()
        power["users"][bob.user_id] = 100
        (
            await peyvand_client.request(
                "PUT", f"rooms/{quote(room_id)}/state/m.room.power_levels", json=power, token=alice
            )
        ).ok()
        await say(peyvand_client, room_id, alice, "bob is an admin now")
        await _wait_for_bodies(peer_client, bob, room_id, ["bob is an admin now"])

        await change_state_at_once(pair, room_id, power)
        await say(peyvand_client, room_id, alice, "after the changes (peyvand)")
        await say(peer_client, room_id, bob, "after the changes (peer)")
        both = ["after the changes (peyvand)", "after the changes (peer)"]
        await _wait_for_bodies(peer_client, bob, room_id, both)
        await _wait_for_bodies(peyvand_client, alice, room_id, both)
        on_peyvand, on_peer = await converged_state(
            pair, room_id, attempts=TIMEOUT_SECONDS * 10, interval=0.1
        )
    assert on_peyvand == on_peer
    assert on_peyvand[("m.room.name", "")] == {"name": "renamed on peyvand"}
    assert on_peyvand[("m.room.power_levels", "")]["events_default"] == 10
    assert on_peyvand[("m.room.topic", "")]["topic"] in ("from peyvand", "from the peer")
    assert "Unhandled error" not in peyvand.log()


async def test_history_from_before_the_join_is_backfilled(pair: Pair) -> None:
    """/messages pulls the room's older history from the peer when local history (which
    starts at the join) runs out."""
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    alias_name = f"history-{next(_txn)}-{peyvand.backend}"
    old = [f"old message {i}" for i in range(12)]
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = (
            await peer_client.request(
                "POST",
                "createRoom",
                json={"preset": "public_chat", "room_alias_name": alias_name},
                token=bob,
            )
        ).ok()["room_id"]
        for body in old:
            await say(peer_client, room_id, bob, body)
        alias = f"#{alias_name}:{peer.server_name}"
        (await peyvand_client.request("POST", f"join/{quote(alias)}", json={}, token=alice)).ok()
        on_peyvand = await message_bodies(peyvand_client, alice, room_id, 100)
    assert on_peyvand == old
    assert "Unhandled error" not in peyvand.log()


async def _membership(client: MatrixClient, account: Account, room_id: str, user: str) -> str:
    found = await client.request(
        "GET", f"rooms/{quote(room_id)}/state/m.room.member/{quote(user)}", token=account
    )
    return str(found.body.get("membership")) if found.status == 200 else "none"


async def test_knocking_both_ways(pair: Pair) -> None:
    """Users knock on rooms of the other server (make_knock/send_knock); the room's
    member lets them in with an invite."""
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    knock_rules = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
    async with asyncio.timeout(TIMEOUT_SECONDS):
        for owner_client, owner, owner_server, guest_client, guest in (
            (peer_client, bob, peer, peyvand_client, alice),
            (peyvand_client, alice, peyvand, peer_client, bob),
        ):
            room_id = (
                await owner_client.request(
                    "POST", "createRoom", json={"initial_state": [knock_rules]}, token=owner
                )
            ).ok()["room_id"]
            knocked = await guest_client.request(
                "POST",
                f"knock/{quote(room_id)}",
                json={"reason": "let me in"},
                token=guest,
                params={"via": owner_server.server_name},
            )
            assert knocked.ok()["room_id"] == room_id
            await sync_until(guest_client, guest, knocked_on(room_id))
            for _ in range(TIMEOUT_SECONDS * 10):
                if await _membership(owner_client, owner, room_id, guest.user_id) == "knock":
                    break
                await asyncio.sleep(0.1)
            assert await _membership(owner_client, owner, room_id, guest.user_id) == "knock"
            (
                await owner_client.request(
                    "POST",
                    f"rooms/{quote(room_id)}/invite",
                    json={"user_id": guest.user_id},
                    token=owner,
                )
            ).ok()
            await sync_until(guest_client, guest, invited_to(room_id))
            (
                await guest_client.request("POST", f"join/{quote(room_id)}", json={}, token=guest)
            ).ok()
            assert await _membership(guest_client, guest, room_id, guest.user_id) == "join"
    assert "Unhandled error" not in peyvand.log()


async def test_leaving_a_peer_room_and_coming_back(pair: Pair) -> None:
    """After the last local user leaves the peer's room, a new invite reaches them and they
    join again through the peer (the room's old state here is not trusted)."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = (await peer_client.request("POST", "createRoom", json={}, token=bob)).ok()[
            "room_id"
        ]
        for attempt in range(2):
            (
                await peer_client.request(
                    "POST",
                    f"rooms/{quote(room_id)}/invite",
                    json={"user_id": alice.user_id},
                    token=bob,
                )
            ).ok()
            await sync_until(peyvand_client, alice, lambda r: room_id in r["rooms"]["invite"])
            (
                await peyvand_client.request("POST", f"join/{quote(room_id)}", json={}, token=alice)
            ).ok()
            for _ in range(TIMEOUT_SECONDS * 10):
                if await _membership(peer_client, bob, room_id, alice.user_id) == "join":
                    break
                await asyncio.sleep(0.1)
            assert await _membership(peer_client, bob, room_id, alice.user_id) == "join", attempt
            if attempt == 0:
                (
                    await peyvand_client.request(
                        "POST", f"rooms/{quote(room_id)}/leave", json={}, token=alice
                    )
                ).ok()
                for _ in range(TIMEOUT_SECONDS * 10):
                    if await _membership(peer_client, bob, room_id, alice.user_id) == "leave":
                        break
                    await asyncio.sleep(0.1)
        await say(peer_client, room_id, bob, "welcome back")
        await _wait_for_bodies(peyvand_client, alice, room_id, ["welcome back"])
    assert "Unhandled error" not in peyvand.log()


async def test_restricted_room_joined_through_membership_of_another(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> None:
    """A Peyvand room restricted to members of another Peyvand room: a local member of
    that room and a peer user who joined it may join; Peyvand vouches for them
    (``join_authorised_via_users_server``) and signs the peer's join."""
    alice = await peyvand_client.register()
    carol = await peyvand_client.register()
    bob = await peer_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        space = (
            await peyvand_client.request(
                "POST", "createRoom", json={"preset": "public_chat"}, token=alice
            )
        ).ok()["room_id"]
        rules = {
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {
                "join_rule": "restricted",
                "allow": [{"type": "m.room_membership", "room_id": space}],
            },
        }
        room_id = (
            await peyvand_client.request(
                "POST", "createRoom", json={"initial_state": [rules]}, token=alice
            )
        ).ok()["room_id"]

        refused = await peyvand_client.request(
            "POST", f"join/{quote(room_id)}", json={}, token=carol
        )
        assert refused.status == 400, refused.body
        assert refused.body["errcode"] == "M_UNABLE_TO_AUTHORISE_JOIN"
        (await peyvand_client.request("POST", f"join/{quote(space)}", json={}, token=carol)).ok()
        (await peyvand_client.request("POST", f"join/{quote(room_id)}", json={}, token=carol)).ok()

        via = {"server_name": peyvand.server_name}
        (
            await peer_client.request(
                "POST", f"join/{quote(space)}", json={}, token=bob, params=via
            )
        ).ok()
        for _ in range(TIMEOUT_SECONDS * 10):
            if await _membership(peyvand_client, alice, space, bob.user_id) == "join":
                break
            await asyncio.sleep(0.1)
        (
            await peer_client.request(
                "POST", f"join/{quote(room_id)}", json={}, token=bob, params=via
            )
        ).ok()
        assert await _membership(peyvand_client, alice, room_id, bob.user_id) == "join"
        member = (
            await peyvand_client.request(
                "GET",
                f"rooms/{quote(room_id)}/state/m.room.member/{quote(bob.user_id)}",
                token=alice,
            )
        ).ok()
        assert member["join_authorised_via_users_server"] == alice.user_id
    assert "Unhandled error" not in peyvand.log()


async def test_rejecting_a_peer_invite(pair: Pair) -> None:
    """A Peyvand user rejects an invite to the peer's room: the peer sees the leave and the
    user's next sync reports the room as left (no error)."""
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = (await peer_client.request("POST", "createRoom", json={}, token=bob)).ok()[
            "room_id"
        ]
        (
            await peer_client.request(
                "POST", f"rooms/{quote(room_id)}/invite", json={"user_id": alice.user_id}, token=bob
            )
        ).ok()
        invited = await sync_until(peyvand_client, alice, lambda r: room_id in r["rooms"]["invite"])
        (
            await peyvand_client.request(
                "POST", f"rooms/{quote(room_id)}/leave", json={}, token=alice
            )
        ).ok()
        since = invited["next_batch"]
        for _ in range(TIMEOUT_SECONDS * 10):
            response = (
                await peyvand_client.request(
                    "GET", "sync", token=alice, params={"since": since, "timeout": "500"}
                )
            ).ok()
            if room_id in response["rooms"]["leave"]:
                break
            since = response["next_batch"]
        assert room_id in response["rooms"]["leave"]
        for _ in range(TIMEOUT_SECONDS * 10):
            if await _membership(peer_client, bob, room_id, alice.user_id) == "leave":
                break
            await asyncio.sleep(0.1)
        assert await _membership(peer_client, bob, room_id, alice.user_id) == "leave"
    assert "Unhandled error" not in peyvand.log()
