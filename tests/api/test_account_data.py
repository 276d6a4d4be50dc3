"""Account data and room tags over HTTP against a real Peyvand, as seen through /sync
(Client-Server API, "Client Config" and "Room Tagging")."""

from __future__ import annotations

from typing import Any

from harness.client import Account, MatrixClient, Response, new_session
from harness.server import HomeserverProcess
from harness.sliding_sync import create_room, join, one_list, sliding
from harness.sync import LongPoll, sync_since


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


async def sync(client: MatrixClient, account: Account, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0"}
    if since is not None:
        params["since"] = since
    body: dict[str, Any] = (await client.request("GET", "sync", token=account, params=params)).ok()
    return body


def global_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = response.get("account_data", {}).get("events", [])
    return events


def room_events(response: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = response.get("rooms", {}).get("join", {}).get(room_id, {})
    events: list[dict[str, Any]] = room.get("account_data", {}).get("events", [])
    return events


async def new_room(client: MatrixClient, account: Account) -> str:
    room_id: str = (await client.request("POST", "createRoom", json={}, token=account)).ok()[
        "room_id"
    ]
    return room_id


async def test_global_account_data_round_trip_and_sync(client: MatrixClient) -> None:
    alice = await client.register()
    path = f"user/{alice.user_id}/account_data/org.example.settings"
    token = (await sync(client, alice))["next_batch"]
    (await client.request("PUT", path, json={"theme": "dark"}, token=alice)).ok()
    assert (await client.request("GET", path, token=alice)).ok() == {"theme": "dark"}

    response = await sync(client, alice, token)
    assert {"type": "org.example.settings", "content": {"theme": "dark"}} in global_events(response)
    # Nothing new: not sent again.
    again = await sync(client, alice, response["next_batch"])
    assert global_events(again) == []
    # An initial sync carries all of it.
    assert {"type": "org.example.settings", "content": {"theme": "dark"}} in global_events(
        await sync(client, alice)
    )


async def test_account_data_wakes_a_waiting_sync(client: MatrixClient) -> None:
    alice = await client.register()
    path = f"user/{alice.user_id}/account_data/org.example.settings"
    token = (await sync(client, alice))["next_batch"]
    waiting = await LongPoll.start(sync_since(client, alice, token, timeout_ms=10_000), 10)
    waiting.assert_waiting()
    (await client.request("PUT", path, json={"theme": "light"}, token=alice)).ok()
    response = await waiting.woken()
    assert {"type": "org.example.settings", "content": {"theme": "light"}} in global_events(
        response
    )


async def test_room_account_data_round_trip_and_sync(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await new_room(client, alice)
    token = (await sync(client, alice))["next_batch"]
    path = f"user/{alice.user_id}/rooms/{room_id}/account_data/org.example.room"
    (await client.request("PUT", path, json={"pinned": True}, token=alice)).ok()
    assert (await client.request("GET", path, token=alice)).ok() == {"pinned": True}

    response = await sync(client, alice, token)
    assert room_events(response, room_id) == [
        {"type": "org.example.room", "content": {"pinned": True}}
    ]
    assert global_events(response) == []
    # No inheritance between global and room account data ("Client Config").
    global_path = f"user/{alice.user_id}/account_data/org.example.room"
    assert_error(await client.request("GET", global_path, token=alice), 404, "M_NOT_FOUND")


async def test_account_data_errors(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await new_room(client, alice)
    own = f"user/{alice.user_id}/account_data"
    own_room = f"user/{alice.user_id}/rooms/{room_id}/account_data"
    for path in (f"{own}/org.example", f"{own_room}/org.example"):
        assert_error(await client.request("GET", path, token=alice), 404, "M_NOT_FOUND")
        assert_error(await client.request("GET", path, token=bob), 403, "M_FORBIDDEN")
        put = await client.request("PUT", path, json={}, token=bob)
        assert_error(put, 403, "M_FORBIDDEN")
        not_object = await client.request("PUT", path, json=[1, 2], token=alice)
        assert_error(not_object, 400, "M_NOT_JSON")
    for data_type in ("m.fully_read", "m.push_rules"):
        for path in (f"{own}/{data_type}", f"{own_room}/{data_type}"):
            put = await client.request("PUT", path, json={"event_id": "$x"}, token=alice)
            assert_error(put, 405, "M_BAD_JSON")
    bad_room = f"user/{alice.user_id}/rooms/@notaroom:localhost/account_data/org.example"
    assert_error(await client.request("GET", bad_room, token=alice), 400, "M_INVALID_PARAM")


async def test_tags_round_trip_and_sync(client: MatrixClient) -> None:
    alice = await client.register()
    room_id = await new_room(client, alice)
    tags = f"user/{alice.user_id}/rooms/{room_id}/tags"
    assert (await client.request("GET", tags, token=alice)).ok() == {"tags": {}}
    token = (await sync(client, alice))["next_batch"]

    (await client.request("PUT", f"{tags}/m.favourite", json={"order": 0.5}, token=alice)).ok()
    (await client.request("PUT", f"{tags}/u.work", json={}, token=alice)).ok()
    expected = {"m.favourite": {"order": 0.5}, "u.work": {}}
    assert (await client.request("GET", tags, token=alice)).ok() == {"tags": expected}
    response = await sync(client, alice, token)
    assert room_events(response, room_id) == [{"type": "m.tag", "content": {"tags": expected}}]

    (await client.request("DELETE", f"{tags}/u.work", token=alice)).ok()
    response = await sync(client, alice, response["next_batch"])
    assert room_events(response, room_id) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}}
    ]


async def test_a_room_whose_tags_were_all_removed_has_no_tags_in_an_initial_sync(
    client: MatrixClient,
) -> None:
    """As Synapse: an incremental sync tells of the last tag's removal with ``{"tags":
    {}}``; an initial /sync, or a room new to a sliding-sync connection, has no
    ``m.tag`` for the room at all."""
    alice = await client.register()
    room_id = await new_room(client, alice)
    tags = f"user/{alice.user_id}/rooms/{room_id}/tags"
    (await client.request("PUT", f"{tags}/u.work", json={}, token=alice)).ok()
    token = (await sync(client, alice))["next_batch"]
    (await client.request("DELETE", f"{tags}/u.work", token=alice)).ok()
    response = await sync(client, alice, token)
    assert room_events(response, room_id) == [{"type": "m.tag", "content": {"tags": {}}}]
    assert room_events(await sync(client, alice), room_id) == []
    body = {
        "lists": one_list(timeline_limit=0),
        "extensions": {"account_data": {"enabled": True}},
    }
    sliding_answer = await sliding(client, alice, body)
    assert room_id in sliding_answer["rooms"]
    assert not sliding_answer["extensions"].get("account_data", {}).get("rooms", {}).get(room_id)


async def test_tag_errors(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = await new_room(client, alice)
    tags = f"user/{alice.user_id}/rooms/{room_id}/tags"
    for body in ({"order": 2}, {"order": "first"}):
        bad = await client.request("PUT", f"{tags}/u.x", json=body, token=alice)
        assert_error(bad, 400, "M_INVALID_PARAM")
    too_long = await client.request("PUT", f"{tags}/u.{'x' * 254}", json={}, token=alice)
    assert_error(too_long, 400, "M_INVALID_PARAM")
    assert_error(await client.request("GET", tags, token=bob), 403, "M_FORBIDDEN")
    other = await client.request("PUT", f"{tags}/u.x", json={}, token=bob)
    assert_error(other, 403, "M_FORBIDDEN")
    bobs_tags = f"user/{bob.user_id}/rooms/{room_id}/tags/u.x"
    no_membership = await client.request("PUT", bobs_tags, json={}, token=bob)
    assert_error(no_membership, 403, "M_FORBIDDEN")


async def test_stream_positions_survive_a_restart(private_homeserver: HomeserverProcess) -> None:
    async with new_session() as session:
        client = MatrixClient(session, private_homeserver.base_url)
        alice = await client.register()
        path = f"user/{alice.user_id}/account_data/org.example"
        for n in range(3):
            (await client.request("PUT", path, json={"n": n}, token=alice)).ok()
        token = (await sync(client, alice))["next_batch"]

        private_homeserver.kill_and_restart()

        (await client.request("PUT", path, json={"n": "after"}, token=alice)).ok()
        response = await sync(client, alice, token)
        assert global_events(response) == [{"type": "org.example", "content": {"n": "after"}}]


async def test_a_tag_removed_out_of_the_room_reaches_a_connection_that_had_it(
    client: MatrixClient,
) -> None:
    """A room a sliding-sync connection was sent tags of, left and joined again (sent
    whole again as ``initial``), tells of the tags removed meanwhile: the client holds
    them, so ``{"tags": {}}`` comes, not nothing."""
    alice = await client.register()
    room_id = await create_room(client, alice, preset="public_chat")
    tags = f"user/{alice.user_id}/rooms/{room_id}/tags"
    (await client.request("PUT", f"{tags}/u.work", json={}, token=alice)).ok()
    body = {
        "lists": one_list(timeline_limit=1),
        "extensions": {"account_data": {"enabled": True}},
    }
    first = await sliding(client, alice, body)
    tagged = [{"type": "m.tag", "content": {"tags": {"u.work": {}}}}]
    assert first["extensions"]["account_data"]["rooms"][room_id] == tagged
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=alice)).ok()
    second = await sliding(client, alice, body, first["pos"])
    (await client.request("DELETE", f"{tags}/u.work", token=alice)).ok()
    await join(client, alice, room_id)
    third = await sliding(client, alice, body, second["pos"])
    assert third["rooms"][room_id].get("initial") is True
    untagged = [{"type": "m.tag", "content": {"tags": {}}}]
    assert third["extensions"]["account_data"]["rooms"][room_id] == untagged
