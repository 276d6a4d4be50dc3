"""Server notices (Client-Server API "Server Notices"; Synapse's admin API) against a real
Peyvand on every backend: an admin's notice reaches the user's client through /sync, in a
room tagged ``m.server_notice`` where the user cannot speak and whose invite cannot be
rejected; a user who left gets a new room with the next notice; notices to everyone go in
pages; ``peyvand server-notice``; and the errors Synapse answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.admin import login_admin
from harness.client import Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess, start_homeserver

SEND = "/_synapse/admin/v1/send_server_notice"
SEND_TO_ALL = "/_peyvand/admin/v1/server_notices/send_to_all"
SYSTEM_LOCALPART = "notices"
ROOM_NAME = "Notices from the operator"
TIMEOUT_SECONDS = 60


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


@pytest.fixture(scope="module")
def notices_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    options = {
        "server_notices.system_mxid_localpart": f'"{SYSTEM_LOCALPART}"',
        "server_notices.system_mxid_display_name": '"Operator"',
        "server_notices.room_name": f'"{ROOM_NAME}"',
    }
    server = start_homeserver(backend, request, tmp_path_factory.mktemp("notices"), options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def notices_client(notices_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, notices_homeserver.base_url)


def notice(body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.server_notice",
        "body": body,
        "server_notice_type": "m.server_notice.usage_limit_reached",
        "admin_contact": "mailto:ops@example.org",
        "limit_type": "monthly_active_user",
    }


async def sync(client: MatrixClient, account: Account, since: str | None) -> dict[str, Any]:
    params = {"timeout": "0"} if since is None else {"timeout": "0", "since": since}
    result: dict[str, Any] = (
        await client.request("GET", "sync", token=account, params=params)
    ).ok()
    return result


async def send(client: MatrixClient, admin: Account, user_id: str, body: str) -> str:
    answer = await client.request(
        "POST", SEND, json={"user_id": user_id, "content": notice(body)}, token=admin
    )
    event_id: str = answer.ok()["event_id"]
    return event_id


async def invited_room(client: MatrixClient, account: Account, since: str) -> tuple[str, str]:
    """The one room ``account`` was invited to since ``since``, and the next token."""
    result = await sync(client, account, since)
    invites = result["rooms"].get("invite", {})
    assert len(invites) == 1, result["rooms"]
    [(room_id, room)] = invites.items()
    state = {(e["type"], e.get("state_key")): e for e in room["invite_state"]["events"]}
    assert state[("m.room.name", "")]["content"]["name"] == ROOM_NAME
    assert state[("m.room.member", account.user_id)]["content"]["membership"] == "invite"
    return room_id, result["next_batch"]


async def test_a_notice_reaches_the_user_through_sync(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    alice = await client.register()
    system_user = f"@{SYSTEM_LOCALPART}:{alice.user_id.split(':', 1)[1]}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync(client, alice, None))["next_batch"]
        first = await send(client, admin, alice.user_id, "first notice")
        room_id, since = await invited_room(client, alice, since)
        tags = await client.request(
            "GET", f"user/{quote(alice.user_id)}/rooms/{quote(room_id)}/tags", token=alice
        )
        assert tags.ok() == {"tags": {"m.server_notice": {}}}

        (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=alice)).ok()
        second = await send(client, admin, alice.user_id, "second notice")
        joined = (await sync(client, alice, since))["rooms"]["join"][room_id]
        timeline = joined["timeline"]["events"]
        messages = [e for e in timeline if e["type"] == "m.room.message"]
        assert [m["event_id"] for m in messages][-1] == second
        assert messages[-1]["sender"] == system_user
        assert messages[-1]["content"] == notice("second notice")
        # The tag, set with the invite, is in the room's account data of a full sync.
        full = (await sync(client, alice, None))["rooms"]["join"][room_id]
        account_data = {e["type"]: e["content"] for e in full["account_data"]["events"]}
        assert account_data["m.tag"] == {"tags": {"m.server_notice": {}}}
        # The first notice is in the room's history.
        history = await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=alice, params={"dir": "b"}
        )
        assert first in [e["event_id"] for e in history.ok()["chunk"]]
        # The user cannot speak in it.
        spoken = await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/t1",
            json={"body": "hi"},
            token=alice,
        )
        assert_error(spoken, 403, "M_FORBIDDEN")

        # A user who left gets a new room with the next notice.
        left = await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=alice)
        left.ok()
        since = (await sync(client, alice, since))["next_batch"]
        await send(client, admin, alice.user_id, "after leaving")
        new_room, _ = await invited_room(client, alice, since)
        assert new_room != room_id


async def test_a_pending_invite_gets_the_next_notice_in_the_same_room(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    bob = await client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync(client, bob, None))["next_batch"]
        await send(client, admin, bob.user_id, "one")
        await send(client, admin, bob.user_id, "two")
        room_id, _ = await invited_room(client, bob, since)
        # As Synapse: the invite cannot be rejected.
        rejected = await client.request("POST", f"rooms/{quote(room_id)}/leave", json={}, token=bob)
        assert_error(rejected, 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
        (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=bob)).ok()
        history = await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=bob, params={"dir": "b"}
        )
        bodies = [e["content"].get("body") for e in history.ok()["chunk"]]
        assert bodies.index("two") < bodies.index("one")


async def test_notices_cannot_reach_the_system_user_nor_change_the_rooms_rules(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    bob = await client.register()
    system_user = f"@{SYSTEM_LOCALPART}:{bob.user_id.split(':', 1)[1]}"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync(client, bob, None))["next_batch"]
        await send(client, admin, bob.user_id, "for bob")
        room_id, _ = await invited_room(client, bob, since)
        (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=bob)).ok()
        # The system user has no notices room of their own: not bob's either.
        to_system = await client.request(
            "POST", SEND, json={"user_id": system_user, "content": notice("mine")}, token=admin
        )
        assert_error(to_system, 400, "M_INVALID_PARAM")
        # State the room's rules rest on cannot be sent as a notice.
        for event_type, content in [
            ("m.room.power_levels", {}),
            ("m.room.join_rules", {"join_rule": "public"}),
            ("m.room.history_visibility", {"history_visibility": "world_readable"}),
            ("m.room.create", {}),
            ("m.room.third_party_invite", {}),
            ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
        ]:
            body = {
                "user_id": bob.user_id,
                "content": content,
                "type": event_type,
                "state_key": "",
            }
            answer = await client.request("POST", SEND, json=body, token=admin)
            assert_error(answer, 400, "M_INVALID_PARAM")
        # Other state, and a message of any type, still can be.
        renamed = {"user_id": bob.user_id, "content": {"name": "Ops"}, "type": "m.room.name"}
        (await client.request("POST", SEND, json={**renamed, "state_key": ""}, token=admin)).ok()
        history = await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=bob, params={"dir": "b"}
        )
        chunk = history.ok()["chunk"]
        assert [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"] == ["for bob"]
        assert chunk[0]["type"] == "m.room.name"
        assert chunk[0]["content"] == {"name": "Ops"}
        levels = await client.request(
            "GET", f"rooms/{quote(room_id)}/state/m.room.power_levels", token=bob
        )
        assert levels.ok()["users_default"] == -10
        spoken = await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/t1",
            json={"body": "hi"},
            token=bob,
        )
        assert_error(spoken, 403, "M_FORBIDDEN")


async def test_concurrent_and_retried_notices_share_one_room(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    """Notices sent at once make one room; a PUT retried with its txnId sends once."""
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    dave = await client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        since = (await sync(client, dave, None))["next_batch"]
        sent = await asyncio.gather(*(send(client, admin, dave.user_id, f"n{i}") for i in range(4)))
        assert len(set(sent)) == 4
        body = {"user_id": dave.user_id, "content": notice("retried")}
        first = (await client.request("PUT", f"{SEND}/txn1", json=body, token=admin)).ok()
        again = (await client.request("PUT", f"{SEND}/txn1", json=body, token=admin)).ok()
        assert first == again
        other = (await client.request("PUT", f"{SEND}/txn2", json=body, token=admin)).ok()
        assert other != first
        room_id, _ = await invited_room(client, dave, since)
        (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=dave)).ok()
        history = await client.request(
            "GET", f"rooms/{quote(room_id)}/messages", token=dave, params={"dir": "b"}
        )
        bodies = [e["content"].get("body") for e in history.ok()["chunk"]]
        assert bodies.count("retried") == 2
        assert sorted(b for b in bodies if b and b.startswith("n")) == ["n0", "n1", "n2", "n3"]


async def test_bad_requests_get_synapses_errors(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    alice = await client.register()
    server_name = alice.user_id.split(":", 1)[1]
    content = notice("x")
    plain = await client.request(
        "POST", SEND, json={"user_id": alice.user_id, "content": content}, token=alice
    )
    assert_error(plain, 403, "M_FORBIDDEN")
    assert_error(
        await client.request("POST", SEND, json={"user_id": alice.user_id}), 401, "M_MISSING_TOKEN"
    )
    cases: list[tuple[Any, int, str]] = [
        ({"content": content}, 400, "M_MISSING_PARAM"),
        ({"user_id": alice.user_id}, 400, "M_MISSING_PARAM"),
        ({"user_id": alice.user_id, "content": "text"}, 400, "M_BAD_JSON"),
        ({"user_id": 5, "content": content}, 400, "M_BAD_JSON"),
        ({"user_id": "alice", "content": content}, 400, "M_INVALID_PARAM"),
        ({"user_id": "@someone:elsewhere.example", "content": content}, 400, "M_UNKNOWN"),
        ({"user_id": f"@nobody-at-all:{server_name}", "content": content}, 404, "M_NOT_FOUND"),
        (
            {"user_id": alice.user_id, "content": {}, "type": "m.room.member", "state_key": ""},
            400,
            "M_INVALID_PARAM",
        ),
    ]
    for body, status, errcode in cases:
        assert_error(await client.request("POST", SEND, json=body, token=admin), status, errcode)
    assert_error(await client.request("POST", SEND, json=[1], token=admin), 400, "M_NOT_JSON")
    page = await client.request(
        "POST", SEND_TO_ALL, json={"content": content, "limit": 0}, token=admin
    )
    assert_error(page, 400, "M_INVALID_PARAM")
    page = await client.request("POST", SEND_TO_ALL, json={"content": content}, token=alice)
    assert_error(page, 403, "M_FORBIDDEN")


async def test_notices_are_off_unless_configured(
    client: MatrixClient, homeserver: HomeserverProcess
) -> None:
    admin = await login_admin(client, homeserver)
    alice = await client.register()
    off = await client.request(
        "POST", SEND, json={"user_id": alice.user_id, "content": notice("x")}, token=admin
    )
    assert_error(off, 400, "M_UNKNOWN")
    assert "not enabled" in off.body["error"]


async def test_a_notice_to_everyone_goes_in_pages(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    users = [await client.register() for _ in range(3)]
    async with asyncio.timeout(TIMEOUT_SECONDS):
        tokens = {u.user_id: (await sync(client, u, None))["next_batch"] for u in users}
        sent, after, pages = 0, "", 0
        for _ in range(1000):
            body = {"content": notice("to everyone"), "from": after, "limit": 2}
            page = (await client.request("POST", SEND_TO_ALL, json=body, token=admin)).ok()
            assert page["failed"] == []
            sent, pages = sent + page["sent"], pages + 1
            if "next_from" not in page:
                break
            after = page["next_from"]
        assert pages >= 2
        assert sent >= len(users)
        for user in users:
            await invited_room(client, user, tokens[user.user_id])


def run_cli(server: HomeserverProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peyvand",
            "server-notice",
            "--config",
            str(server.config_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PEYVAND_ADMIN_TOKEN": token},
        stdin=subprocess.DEVNULL,
    )


async def test_the_cli_sends_to_one_user_and_to_everyone(
    notices_client: MatrixClient, notices_homeserver: HomeserverProcess
) -> None:
    client = notices_client
    admin = await login_admin(client, notices_homeserver)
    carol = await client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS * 2):
        since = (await sync(client, carol, None))["next_batch"]
        one = await asyncio.to_thread(
            run_cli, notices_homeserver, admin.access_token, "--user", carol.user_id,
            "--body", "maintenance at noon", "--notice-type", "m.server_notice.maintenance",
        )  # fmt: skip
        assert one.returncode == 0, one.stderr
        assert f"to {carol.user_id}" in one.stdout
        room_id, since = await invited_room(client, carol, since)
        (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=carol)).ok()

        everyone = await asyncio.to_thread(
            run_cli, notices_homeserver, admin.access_token, "--all", "--body", "hello all",
            "--page-size", "2",
        )  # fmt: skip
        assert everyone.returncode == 0, everyone.stderr
        assert everyone.stdout.startswith("sent to ")
        timeline = (await sync(client, carol, since))["rooms"]["join"][room_id]["timeline"]
        contents = [e["content"] for e in timeline["events"] if e["type"] == "m.room.message"]
        assert {"msgtype": "m.server_notice", "body": "hello all"} in contents

        refused = await asyncio.to_thread(
            run_cli, notices_homeserver, carol.access_token, "--all", "--body", "x"
        )
        assert refused.returncode == 1
        assert "M_FORBIDDEN" in refused.stderr


async def test_a_changed_config_reaches_the_existing_room(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """After a restart with a new room name, topic and sender name, the next notice
    brings the existing room in line first (as Synapse)."""
    options = {
        "server_notices.system_mxid_localpart": f'"{SYSTEM_LOCALPART}"',
        "server_notices.room_name": f'"{ROOM_NAME}"',
    }
    server = start_homeserver(backend, request, tmp_path / "notices", options=options)
    try:
        async with new_session() as session, asyncio.timeout(TIMEOUT_SECONDS * 2):
            client = MatrixClient(session, server.base_url)
            admin = await login_admin(client, server)
            erin = await client.register()
            since = (await sync(client, erin, None))["next_batch"]
            await send(client, admin, erin.user_id, "before")
            room_id, _ = await invited_room(client, erin, since)
            (await client.request("POST", f"rooms/{quote(room_id)}/join", json={}, token=erin)).ok()

            server.stop()
            server.configure(
                {
                    "server_notices.room_name": '"Renamed notices"',
                    "server_notices.room_topic": '"From the operator"',
                    "server_notices.system_mxid_display_name": '"Ops"',
                }
            )
            server.start()
            await send(client, admin, erin.user_id, "after")
            state = f"rooms/{quote(room_id)}/state"
            name = (await client.request("GET", f"{state}/m.room.name/", token=erin)).ok()
            assert name == {"name": "Renamed notices"}
            topic = (await client.request("GET", f"{state}/m.room.topic/", token=erin)).ok()
            assert topic == {"topic": "From the operator"}
            system_user = f"@{SYSTEM_LOCALPART}:{erin.user_id.split(':', 1)[1]}"
            member = await client.request(
                "GET", f"{state}/m.room.member/{quote(system_user)}", token=erin
            )
            assert member.ok()["displayname"] == "Ops"
            rooms = (await client.request("GET", "joined_rooms", token=erin)).ok()["joined_rooms"]
            assert rooms == [room_id]
    finally:
        server.stop()
