"""Moderation policy lists over federation, with a real Synapse (docs/compliance.md).

The policy room lives on Synapse and is given to a private Peyvand by alias: Peyvand's
policy user joins it over federation and follows its rules as Synapse relays them. Once
it bans a Synapse user, that user's invite of a Peyvand user and their join of a Peyvand
room are refused with 403, and their messages in a room shared with Peyvand are
soft-failed there (another Synapse user's, sent after them, arrive); an unbanned Synapse
user still invites and joins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.server import HomeserverProcess, start_homeserver
from harness.synapse import SynapseProcess

TIMEOUT_SECONDS = 60
POLICY_LISTS = "/_peyvand/admin/v1/policy_lists"
LIST_ALIAS_NAME = unique_localpart("policy")


@pytest.fixture
def following(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    synapse: SynapseProcess,
) -> Iterator[HomeserverProcess]:
    """A private federating Peyvand following ``#<LIST_ALIAS_NAME>`` on Synapse (which
    the test creates after the start: following is retried)."""
    alias = f"#{LIST_ALIAS_NAME}-{backend}:{synapse.server_name}"
    server = start_homeserver(
        backend,
        request,
        tmp_path / "peyvand",
        federation=True,
        options={"moderation.policy_rooms": f'["{alias}"]'},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pc(following: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, following.base_url)


async def _poll(check: Callable[[], Any], what: str) -> Any:
    """``check()``'s first truthy answer, polled every 0.2 s for at most a minute."""
    for _ in range(TIMEOUT_SECONDS * 5):
        if found := await check():
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def _listing(pc: MatrixClient, admin: Account) -> dict[str, Any]:
    return dict((await pc.request("GET", POLICY_LISTS, token=admin)).ok())


async def _membership(client: MatrixClient, account: Account, room_id: str, user: str) -> str:
    found = await client.request(
        "GET", f"rooms/{quote(room_id)}/state/m.room.member/{quote(user)}", token=account
    )
    return str(found.body.get("membership")) if found.status == 200 else "none"


async def _bodies(client: MatrixClient, account: Account, room_id: str) -> list[str]:
    chunk = (
        await client.request(
            "GET",
            f"rooms/{quote(room_id)}/messages",
            token=account,
            params={"dir": "b", "limit": "100"},
        )
    ).ok()["chunk"]
    return [str(e["content"].get("body")) for e in chunk if e["type"] == "m.room.message"]


async def _say(client: MatrixClient, account: Account, room_id: str, body: str) -> None:
    (
        await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/{unique_localpart('txn')}",
            json={"msgtype": "m.text", "body": body},
            token=account,
        )
    ).ok()


async def test_a_synapse_policy_list_bans_a_synapse_user(
    backend: str,
    following: HomeserverProcess,
    pc: MatrixClient,
    synapse: SynapseProcess,
    synapse_client: MatrixClient,
) -> None:
    sc = synapse_client
    admin = await login_admin(pc, following)
    alice = await pc.register()
    moderator = await sc.register()
    spammer = await sc.register()
    bob = await sc.register()
    async with asyncio.timeout(3 * TIMEOUT_SECONDS):
        list_id = (
            await sc.request(
                "POST",
                "createRoom",
                json={"preset": "public_chat", "room_alias_name": f"{LIST_ALIAS_NAME}-{backend}"},
                token=moderator,
            )
        ).ok()["room_id"]
        listing = await _poll(lambda: _joined_listing(pc, admin), "the policy room to be joined")
        assert listing["rooms"][0]["room_id"] == list_id
        policy_user = listing["policy_user"]
        await _poll(
            lambda: _is(sc, moderator, list_id, policy_user, "join"), "Synapse to see the join"
        )

        # Before the ban: a room on Synapse that alice (Peyvand) and the spammer are in.
        shared = (
            await sc.request("POST", "createRoom", json={"preset": "public_chat"}, token=bob)
        ).ok()["room_id"]
        (await sc.request("POST", f"join/{quote(shared)}", json={}, token=spammer)).ok()
        (
            await pc.request(
                "POST",
                f"join/{quote(shared)}",
                json={},
                token=alice,
                params={"server_name": synapse.server_name},
            )
        ).ok()

        rule = {"entity": spammer.user_id, "recommendation": "m.ban", "reason": "spam"}
        key = quote(f"rule:{spammer.user_id}", safe="")
        path = f"rooms/{quote(list_id)}/state/m.policy.rule.user/{key}"
        (await sc.request("PUT", path, json=rule, token=moderator)).ok()
        listing = await _poll(lambda: _rules_listing(pc, admin, 1), "the rule to reach Peyvand")
        assert listing["rules"][0]["entity"] == spammer.user_id

        # The spammer's message is soft-failed here; bob's, sent after it, arrives.
        await _say(sc, spammer, shared, "buy now")
        await _say(sc, bob, shared, "hello alice")
        bodies = await _poll(
            lambda: _bodies_with(pc, alice, shared, "hello alice"), "bob's message"
        )
        assert "buy now" not in bodies

        # The spammer's invite of alice is refused, and so is their join of her room.
        spam_room = (await sc.request("POST", "createRoom", json={}, token=spammer)).ok()["room_id"]
        refused = await sc.request(
            "POST",
            f"rooms/{quote(spam_room)}/invite",
            json={"user_id": alice.user_id},
            token=spammer,
        )
        assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN", refused.body
        alice_room = (
            await pc.request("POST", "createRoom", json={"preset": "public_chat"}, token=alice)
        ).ok()["room_id"]
        refused = await sc.request(
            "POST",
            f"join/{quote(alice_room)}",
            json={},
            token=spammer,
            params={"server_name": following.server_name},
        )
        assert refused.status >= 400, refused.body
        assert await _membership(pc, alice, alice_room, spammer.user_id) == "none"

        # Bob is not banned: his invite and his join go through.
        bob_room = (await sc.request("POST", "createRoom", json={}, token=bob)).ok()["room_id"]
        (
            await sc.request(
                "POST",
                f"rooms/{quote(bob_room)}/invite",
                json={"user_id": alice.user_id},
                token=bob,
            )
        ).ok()
        (
            await sc.request(
                "POST",
                f"join/{quote(alice_room)}",
                json={},
                token=bob,
                params={"server_name": following.server_name},
            )
        ).ok()
        await _poll(lambda: _is(pc, alice, alice_room, bob.user_id, "join"), "bob's join")
    log = following.log()
    assert "Unhandled error" not in log and "Traceback" not in log


async def _joined_listing(pc: MatrixClient, admin: Account) -> dict[str, Any] | None:
    listing = await _listing(pc, admin)
    return listing if listing["rooms"][0]["status"] == "joined" else None


async def _rules_listing(pc: MatrixClient, admin: Account, count: int) -> dict[str, Any] | None:
    listing = await _listing(pc, admin)
    return listing if len(listing["rules"]) == count else None


async def _is(client: MatrixClient, account: Account, room_id: str, user: str, wanted: str) -> bool:
    return await _membership(client, account, room_id, user) == wanted


async def _bodies_with(
    client: MatrixClient, account: Account, room_id: str, body: str
) -> list[str] | None:
    bodies = await _bodies(client, account, room_id)
    return bodies if body in bodies else None
