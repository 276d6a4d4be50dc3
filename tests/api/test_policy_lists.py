"""Moderation policy lists on a real Peyvand (docs/compliance.md): the server follows a
local policy room given by alias (created after start-up: following is retried), reads
its ``m.ban`` rules, refuses banned users' joins, knocks and invites, and joins of banned
rooms, follows rule changes, keeps them across a restart, and shows them to admins at
``GET /_peyvand/admin/v1/policy_lists``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

POLICY_LISTS = "/_peyvand/admin/v1/policy_lists"
LIST_ALIAS_NAME = "modlist"
TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
def policy_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """A server following ``#modlist:localhost``, which does not exist yet."""
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("policy-lists"),
        options={"moderation.policy_rooms": f'["#{LIST_ALIAS_NAME}:{SERVER_NAME}"]'},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pc(policy_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, policy_server.base_url)


async def _wait_for(
    client: MatrixClient, admin: Account, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the admin listing until ``done`` holds for it (bounded in time)."""
    listing: dict[str, Any] = {}
    for _ in range(TIMEOUT_SECONDS * 10):
        listing = (await client.request("GET", POLICY_LISTS, token=admin)).ok()
        if done(listing):
            return listing
        await asyncio.sleep(0.1)
    raise AssertionError(f"policy lists never reached the expected state: {listing}")


async def _create(client: MatrixClient, owner: Account, **body: Any) -> str:
    answer = await client.request("POST", "createRoom", json=body, token=owner)
    return str(answer.ok()["room_id"])


async def _rule(
    client: MatrixClient, owner: Account, list_id: str, event_type: str, key: str, content: Any
) -> None:
    path = f"rooms/{quote(list_id)}/state/{event_type}/{quote(key, safe='')}"
    (await client.request("PUT", path, json=content, token=owner)).ok()


def _ban(entity: str) -> dict[str, str]:
    return {"entity": entity, "recommendation": "m.ban", "reason": "test"}


def _forbidden(answer: Any) -> None:
    assert answer.status == 403 and answer.body["errcode"] == "M_FORBIDDEN", answer.body


async def test_policy_list_is_followed_and_enforced(
    policy_server: HomeserverProcess, pc: MatrixClient
) -> None:
    server_name = policy_server.server_name
    admin = await login_admin(pc, policy_server)
    moderator = await pc.register()
    alice = await pc.register()
    spammer = await pc.register(unique_localpart("spammer"))
    async with asyncio.timeout(4 * TIMEOUT_SECONDS):
        listing = (await pc.request("GET", POLICY_LISTS, token=admin)).ok()
        assert listing["policy_user"] == f"@moderation:{server_name}"
        assert listing["rules"] == []
        [room] = listing["rooms"]
        assert room["room"] == f"#{LIST_ALIAS_NAME}:{server_name}"
        assert room["status"] in ("pending", "failed")
        _forbidden(await pc.request("GET", POLICY_LISTS, token=alice))
        assert (await pc.request("GET", POLICY_LISTS)).status == 401

        # The list appears after start-up: the server joins it on a retry.
        list_id = await _create(
            pc, moderator, preset="public_chat", room_alias_name=LIST_ALIAS_NAME
        )
        await _wait_for(pc, admin, lambda x: x["rooms"][0]["status"] == "joined")
        members = (
            await pc.request("GET", f"rooms/{quote(list_id)}/joined_members", token=moderator)
        ).ok()["joined"]
        assert f"@moderation:{server_name}" in members

        banned_room = await _create(
            pc, alice, preset="public_chat", room_alias_name=unique_localpart("banned")
        )
        open_room = await _create(pc, alice, preset="public_chat")
        spammers = f"@spammer-*:{server_name}"
        await _rule(pc, moderator, list_id, "m.policy.rule.user", "r1", _ban(spammers))
        await _rule(pc, moderator, list_id, "org.matrix.mjolnir.rule.room", "r2", _ban("#banned-*"))
        await _rule(pc, moderator, list_id, "m.policy.rule.server", "r3", _ban("evil.example"))
        await _rule(
            pc,
            moderator,
            list_id,
            "m.policy.rule.user",
            "r4",
            {"entity": "@alice*", "recommendation": "m.mute", "reason": "ignored"},
        )
        await _rule(pc, moderator, list_id, "m.policy.rule.user", "r5", {"entity": 5})
        listing = await _wait_for(pc, admin, lambda x: len(x["rules"]) == 3)
        assert listing["counts"] == {"user": 1, "server": 1, "room": 1}
        assert listing["rooms"][0]["room_id"] == list_id
        assert listing["rooms"][0]["rules"] == 3
        assert {(r["kind"], r["entity"], r["type"]) for r in listing["rules"]} == {
            ("user", spammers, "m.policy.rule.user"),
            ("room", "#banned-*", "org.matrix.mjolnir.rule.room"),
            ("server", "evil.example", "m.policy.rule.server"),
        }

        # A banned user may not join, knock, invite or be invited.
        _forbidden(await pc.request("POST", f"join/{quote(open_room)}", json={}, token=spammer))
        _forbidden(await pc.request("POST", f"knock/{quote(open_room)}", json={}, token=spammer))
        _forbidden(
            await pc.request(
                "POST",
                f"rooms/{quote(open_room)}/invite",
                json={"user_id": spammer.user_id},
                token=alice,
            )
        )
        own_room = await _create(pc, spammer)  # creating a room alone is not refused
        _forbidden(
            await pc.request(
                "POST",
                f"rooms/{quote(own_room)}/invite",
                json={"user_id": alice.user_id},
                token=spammer,
            )
        )
        _forbidden(
            await pc.request("POST", "createRoom", json={"invite": [spammer.user_id]}, token=alice)
        )
        # Nobody joins a banned room (matched through its canonical alias).
        _forbidden(await pc.request("POST", f"join/{quote(banned_room)}", json={}, token=admin))
        # Everyone else is unaffected.
        (await pc.request("POST", f"join/{quote(open_room)}", json={}, token=admin)).ok()
        (
            await pc.request(
                "POST",
                f"rooms/{quote(open_room)}/invite",
                json={"user_id": moderator.user_id},
                token=alice,
            )
        ).ok()

        # The rules survive a restart (the list is already joined).
        policy_server.restart()
        await _wait_for(
            pc, admin, lambda x: x["rooms"][0]["status"] == "joined" and len(x["rules"]) == 3
        )
        _forbidden(await pc.request("POST", f"join/{quote(open_room)}", json={}, token=spammer))

        # Removing a rule (empty content) lifts the ban.
        await _rule(pc, moderator, list_id, "m.policy.rule.user", "r1", {})
        await _wait_for(pc, admin, lambda x: x["counts"]["user"] == 0)
        (await pc.request("POST", f"join/{quote(open_room)}", json={}, token=spammer)).ok()
    assert "Unhandled error" not in policy_server.log()
    assert "Traceback" not in policy_server.log()
