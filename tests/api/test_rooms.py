"""The rooms API over HTTP on every backend: createRoom and its options, membership,
state, sending, /messages, /context and /sync (Client-Server API "Rooms", "Syncing")."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.client import Account, MatrixClient, Response, new_session
from harness.rooms import create_room, say
from harness.server import HomeserverProcess
from harness.sync import LongPoll, sync

_txn = itertools.count()


@dataclass(frozen=True, slots=True)
class Users:
    alice: Account
    bob: Account
    carol: Account


def assert_error(response: Response, status: int, errcode: str) -> None:
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.body["errcode"] == errcode, response.body


@pytest.fixture(scope="module")
async def users(homeserver: HomeserverProcess) -> AsyncIterator[Users]:
    """Three accounts shared by the module (registration is the slow part)."""
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        yield Users(await client.register(), await client.register(), await client.register())


async def state_map(
    client: MatrixClient, room_id: str, reader: Account
) -> dict[tuple[str, str], Any]:
    events = (await client.request("GET", f"rooms/{room_id}/state", token=reader)).ok()
    return {(e["type"], e["state_key"]): e for e in events}


async def join(client: MatrixClient, room_id: str, account: Account) -> None:
    (await client.request("POST", f"rooms/{room_id}/join", json={}, token=account)).ok()


async def invite(client: MatrixClient, room_id: str, inviter: Account, invitee: Account) -> None:
    body = {"user_id": invitee.user_id}
    (await client.request("POST", f"rooms/{room_id}/invite", json=body, token=inviter)).ok()


# createRoom ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "join_rule", "history", "guest_access"),
    [
        ("private_chat", "invite", "shared", "can_join"),
        ("trusted_private_chat", "invite", "shared", "can_join"),
        ("public_chat", "public", "shared", "forbidden"),
    ],
)
async def test_create_room_presets(
    client: MatrixClient,
    users: Users,
    preset: str,
    join_rule: str,
    history: str,
    guest_access: str,
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(
        client, alice, preset=preset, invite=[bob.user_id], room_version="11"
    )
    state = await state_map(client, room_id, alice)
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == join_rule
    assert state[("m.room.history_visibility", "")]["content"]["history_visibility"] == history
    guest = state.get(("m.room.guest_access", ""))
    assert (guest["content"]["guest_access"] if guest else "forbidden") == guest_access
    levels = state[("m.room.power_levels", "")]["content"]
    assert levels["users"][alice.user_id] == 100
    # trusted_private_chat makes invitees admins too.
    expected = 100 if preset == "trusted_private_chat" else None
    assert levels["users"].get(bob.user_id) == expected
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"


async def test_create_room_visibility_defaults_preset(client: MatrixClient, users: Users) -> None:
    public = await create_room(client, users.alice, visibility="public")
    private = await create_room(client, users.alice, visibility="private")
    rules = [
        (await state_map(client, r, users.alice))[("m.room.join_rules", "")]["content"]
        for r in (public, private)
    ]
    assert rules == [{"join_rule": "public"}, {"join_rule": "invite"}]


async def test_create_room_options(client: MatrixClient, users: Users) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(
        client,
        alice,
        room_version="10",
        name="The Name",
        topic="The Topic",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "org.example.custom", "state_key": "k", "content": {"v": 1}},
            {"type": "m.room.name", "content": {"name": "overridden by name"}},
        ],
        power_level_content_override={"events_default": 10, "users": {alice.user_id: 100}},
        creation_content={"m.federate": False, "org.example": "x"},
        is_direct=True,
        invite=[bob.user_id],
    )
    assert room_id.endswith(":localhost")
    state = await state_map(client, room_id, alice)
    create = state[("m.room.create", "")]
    assert create["content"]["m.federate"] is False
    assert create["content"]["org.example"] == "x"
    assert create["content"]["room_version"] == "10"
    assert create["content"]["creator"] == alice.user_id  # v10 keeps the creator key
    assert state[("m.room.name", "")]["content"] == {"name": "The Name"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "The Topic"
    visibility = state[("m.room.history_visibility", "")]["content"]
    assert visibility == {"history_visibility": "joined"}
    assert state[("org.example.custom", "k")]["content"] == {"v": 1}
    levels = state[("m.room.power_levels", "")]["content"]
    assert levels["events_default"] == 10 and levels["users"] == {alice.user_id: 100}
    invite_event = state[("m.room.member", bob.user_id)]
    assert invite_event["content"]["membership"] == "invite"
    assert invite_event["content"]["is_direct"] is True
    # The invitee sees the invite, with stripped state, in sync.
    invited = (await sync(client, bob))["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert {"m.room.create", "m.room.name", "m.room.member"} <= {e["type"] for e in invited}


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
async def test_room_ids_and_creators_by_version(
    homeserver: HomeserverProcess, client: MatrixClient, users: Users, room_version: str
) -> None:
    alice = users.alice
    room_id = await create_room(client, alice, room_version=room_version)
    state = await state_map(client, room_id, alice)
    create = state[("m.room.create", "")]
    levels = state[("m.room.power_levels", "")]["content"]
    if room_version == "12":
        # v12: the room ID is the create event's reference hash, no server part; the
        # creator's power is implied, so power_levels has no entry for them.
        assert room_id.startswith("!") and ":" not in room_id
        assert room_id[1:] == create["event_id"][1:]
        assert alice.user_id not in levels["users"]
        assert "creator" not in create["content"]
    else:
        assert room_id.endswith(f":{homeserver.server_name}")
        assert levels["users"][alice.user_id] == 100
    assert create["sender"] == alice.user_id
    assert create["content"]["room_version"] == room_version


async def test_identical_rooms_created_at_once_get_distinct_ids(
    client: MatrixClient, users: Users
) -> None:
    """Identical v12 create events in one millisecond would hash to one room ID."""
    body = {"preset": "private_chat", "room_version": "12"}
    created = await asyncio.gather(
        *(client.request("POST", "createRoom", json=body, token=users.alice) for _ in range(10))
    )
    room_ids = {r.ok()["room_id"] for r in created}
    assert len(room_ids) == 10
    joined = (await client.request("GET", "joined_rooms", token=users.alice)).ok()
    assert room_ids <= set(joined["joined_rooms"])


async def test_a_refused_initial_event_creates_no_room(client: MatrixClient, users: Users) -> None:
    """Power levels that leave the creator unable to send the preset's events: 403 and no
    half-made room anywhere."""
    before = (await client.request("GET", "joined_rooms", token=users.bob)).ok()
    refused = await client.request(
        "POST",
        "createRoom",
        json={"room_version": "11", "power_level_content_override": {"users": {}}},
        token=users.bob,
    )
    assert_error(refused, 403, "M_FORBIDDEN")
    after = (await client.request("GET", "joined_rooms", token=users.bob)).ok()
    assert after == before
    assert (await sync(client, users.bob))["rooms"]["join"].keys() == set(before["joined_rooms"])


async def test_unsupported_room_version(client: MatrixClient, users: Users) -> None:
    for version in ("999", "1.5", ""):
        response = await client.request(
            "POST", "createRoom", json={"room_version": version}, token=users.alice
        )
        assert_error(response, 400, "M_UNSUPPORTED_ROOM_VERSION")


async def test_default_room_version_is_advertised(client: MatrixClient, users: Users) -> None:
    capabilities = (await client.request("GET", "capabilities", token=users.alice)).ok()
    default = capabilities["capabilities"]["m.room_versions"]["default"]
    room_id = await create_room(client, users.alice)
    state = await state_map(client, room_id, users.alice)
    assert state[("m.room.create", "")]["content"]["room_version"] == default


# Membership ---------------------------------------------------------------------------


async def test_join_leave_forget_and_member_lists(client: MatrixClient, users: Users) -> None:
    alice, bob, carol = users.alice, users.bob, users.carol
    room_id = await create_room(client, alice, preset="public_chat")
    # Join by ID via both endpoints; joining twice is fine.
    joined = await client.request("POST", f"join/{room_id}", json={}, token=bob)
    assert joined.ok() == {"room_id": room_id}
    await join(client, room_id, bob)
    await invite(client, room_id, alice, carol)
    assert room_id in (await client.request("GET", "joined_rooms", token=bob)).ok()["joined_rooms"]
    assert (
        room_id
        not in (await client.request("GET", "joined_rooms", token=carol)).ok()["joined_rooms"]
    )

    members = (await client.request("GET", f"rooms/{room_id}/members", token=bob)).ok()["chunk"]
    by_user = {e["state_key"]: e["content"]["membership"] for e in members}
    assert by_user == {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"}
    only_invited = await client.request(
        "GET", f"rooms/{room_id}/members", token=bob, params={"membership": "invite"}
    )
    assert [e["state_key"] for e in only_invited.ok()["chunk"]] == [carol.user_id]
    not_joined = await client.request(
        "GET", f"rooms/{room_id}/members", token=bob, params={"not_membership": "join"}
    )
    assert [e["state_key"] for e in not_joined.ok()["chunk"]] == [carol.user_id]
    joined_members = (
        await client.request("GET", f"rooms/{room_id}/joined_members", token=bob)
    ).ok()["joined"]
    assert set(joined_members) == {alice.user_id, bob.user_id}

    # Forgetting a room one is still in is refused; after leaving it is allowed.
    forget = await client.request("POST", f"rooms/{room_id}/forget", json={}, token=bob)
    assert forget.status == 400, forget
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    assert (
        room_id not in (await client.request("GET", "joined_rooms", token=bob)).ok()["joined_rooms"]
    )
    joined_members = (
        await client.request("GET", f"rooms/{room_id}/joined_members", token=alice)
    ).ok()["joined"]
    assert set(joined_members) == {alice.user_id}
    (await client.request("POST", f"rooms/{room_id}/forget", json={}, token=bob)).ok()
    # A forgotten room no longer appears in the leave section of an initial sync.
    everything = json.dumps({"room": {"include_leave": True}})
    left = (await sync(client, bob, filter=everything))["rooms"]["leave"]
    assert room_id not in left
    # The invitee may reject the invite by leaving.
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=carol)).ok()
    members = (await client.request("GET", f"rooms/{room_id}/members", token=alice)).ok()["chunk"]
    by_user = {e["state_key"]: e["content"]["membership"] for e in members}
    assert by_user[carol.user_id] == "leave" and by_user[bob.user_id] == "leave"


# State --------------------------------------------------------------------------------


async def test_state_get_all_one_and_put(client: MatrixClient, users: Users) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat", name="Before")
    await join(client, room_id, bob)
    put = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.name", json={"name": "After"}, token=alice
    )
    name_id = put.ok()["event_id"]
    put_keyed = await client.request(
        "PUT", f"rooms/{room_id}/state/org.example.thing/some%2Fkey", json={"x": 1}, token=alice
    )
    put_keyed.ok()
    one = await client.request("GET", f"rooms/{room_id}/state/m.room.name", token=bob)
    assert one.ok() == {"name": "After"}
    # The empty state key may also be an empty last path segment.
    slash = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.topic/", json={"topic": "T"}, token=alice
    )
    slash.ok()
    one_empty_key = await client.request("GET", f"rooms/{room_id}/state/m.room.topic/", token=bob)
    assert one_empty_key.ok() == {"topic": "T"}
    keyed = await client.request(
        "GET", f"rooms/{room_id}/state/org.example.thing/some%2Fkey", token=bob
    )
    assert keyed.ok() == {"x": 1}
    as_event = await client.request(
        "GET", f"rooms/{room_id}/state/m.room.name", token=bob, params={"format": "event"}
    )
    assert as_event.ok()["event_id"] == name_id
    state = await state_map(client, room_id, bob)
    assert state[("m.room.name", "")]["event_id"] == name_id
    assert state[("org.example.thing", "some/key")]["content"] == {"x": 1}
    assert ("m.room.member", bob.user_id) in state
    missing = await client.request("GET", f"rooms/{room_id}/state/m.room.avatar", token=bob)
    assert_error(missing, 404, "M_NOT_FOUND")
    # m.room.member through the state endpoint is a membership change (as in Synapse).
    member = await client.request(
        "PUT",
        f"rooms/{room_id}/state/m.room.member/{bob.user_id}",
        json={"membership": "leave"},
        token=bob,
    )
    left = await client.request(
        "GET", f"rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice
    )
    assert left.ok() == {"membership": "leave"} and member.ok()["event_id"]


async def test_state_of_a_left_room_is_as_at_leaving(client: MatrixClient, users: Users) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat", name="Before")
    await join(client, room_id, bob)
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=bob)).ok()
    put = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.name", json={"name": "Secret"}, token=alice
    )
    put.ok()
    name = await client.request("GET", f"rooms/{room_id}/state/m.room.name", token=bob)
    assert name.ok() == {"name": "Before"}


# Sending ------------------------------------------------------------------------------


async def test_send_is_idempotent_per_device_and_txn(client: MatrixClient, users: Users) -> None:
    alice = users.alice
    room_id = await create_room(client, alice)
    other_device = await client.login(alice.user_id)
    assert other_device.device_id != alice.device_id
    path = f"rooms/{room_id}/send/m.room.message/same-txn"
    content = {"msgtype": "m.text", "body": "once"}
    first = (await client.request("PUT", path, json=content, token=alice)).ok()["event_id"]
    again = (await client.request("PUT", path, json=content, token=alice)).ok()["event_id"]
    assert again == first
    # Concurrent retries of one transaction also make one event.
    concurrent = await asyncio.gather(
        *(client.request("PUT", path, json=content, token=alice) for _ in range(5))
    )
    assert {r.ok()["event_id"] for r in concurrent} == {first}
    # A new transaction sent several times at once, racing other sends into the room:
    # one event for the retries, and the other sends (same group commits) unharmed.
    race_path = f"rooms/{room_id}/send/m.room.message/race-txn"
    raced = await asyncio.gather(
        *(client.request("PUT", race_path, json=content, token=alice) for _ in range(8)),
        *(
            client.request(
                "PUT", f"rooms/{room_id}/send/m.room.message/other-{i}", json=content, token=alice
            )
            for i in range(8)
        ),
    )
    race_ids = {r.ok()["event_id"] for r in raced[:8]}
    other_ids = {r.ok()["event_id"] for r in raced[8:]}
    assert len(race_ids) == 1
    assert len(other_ids) == 8
    assert race_ids.isdisjoint(other_ids)
    from_other = (await client.request("PUT", path, json=content, token=other_device)).ok()[
        "event_id"
    ]
    assert from_other != first
    # The same txnId in another room is another transaction too.
    other_room = await create_room(client, alice)
    elsewhere = await client.request(
        "PUT", f"rooms/{other_room}/send/m.room.message/same-txn", json=content, token=alice
    )
    assert elsewhere.ok()["event_id"] not in (first, from_other)
    messages = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=alice,
        params={"limit": "50", "filter": json.dumps({"types": ["m.room.message"]})},
    )
    chunk = [e["event_id"] for e in messages.ok()["chunk"]]
    assert chunk[0] == from_other
    assert chunk[-1] == first
    assert set(chunk[1:-1]) == race_ids | other_ids
    # unsigned.transaction_id is the client's own txnId, shown to the sending device only.
    redact_path = f"rooms/{room_id}/redact/{from_other}/redact-txn"
    redaction = (await client.request("PUT", redact_path, json={}, token=alice)).ok()["event_id"]
    again_redaction = await client.request("PUT", redact_path, json={}, token=alice)
    assert again_redaction.ok()["event_id"] == redaction
    for device, expected in (
        (
            alice,
            {
                first: "same-txn",
                redaction: "redact-txn",
                next(iter(race_ids)): "race-txn",
                **{r.ok()["event_id"]: f"other-{i}" for i, r in enumerate(raced[8:])},
            },
        ),
        (other_device, {from_other: "same-txn"}),
    ):
        everything = json.dumps({"room": {"timeline": {"limit": 50}}})
        timeline = (await sync(client, device, filter=everything))["rooms"]["join"][room_id][
            "timeline"
        ]["events"]
        txn_ids = {
            e["event_id"]: e["unsigned"]["transaction_id"]
            for e in timeline
            if "transaction_id" in e.get("unsigned", {})
        }
        assert txn_ids == expected


# /messages and /context ---------------------------------------------------------------


async def test_messages_both_directions_with_tokens_and_filters(
    client: MatrixClient, users: Users
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, room_id, bob)
    sent: list[str] = []
    for i in range(12):
        sender = alice if i % 3 else bob
        sent.append(await say(client, room_id, sender, f"m{i}"))
    await client.request(
        "PUT", f"rooms/{room_id}/send/org.example.other/t{next(_txn)}", json={}, token=alice
    )
    only_messages = json.dumps({"types": ["m.room.message"]})

    # Backwards from the end, in pages of 5, until the start.
    seen: list[str] = []
    params = {"dir": "b", "limit": "5", "filter": only_messages}
    for _ in range(10):
        page = (
            await client.request("GET", f"rooms/{room_id}/messages", token=bob, params=params)
        ).ok()
        seen.extend(e["event_id"] for e in page["chunk"])
        # The filter applies before the limit: every page but the last is full.
        if "end" not in page:
            assert len(page["chunk"]) <= 5
            break
        assert len(page["chunk"]) == 5
        params = {**params, "from": page["end"]}
    assert seen == sent[::-1]

    # Forwards from the start (pages filtered to nothing still carry "end"), in order.
    forward: list[str] = []
    params = {"dir": "f", "limit": "4", "filter": only_messages}
    for _ in range(20):
        page = (
            await client.request("GET", f"rooms/{room_id}/messages", token=bob, params=params)
        ).ok()
        forward.extend(e["event_id"] for e in page["chunk"])
        if "end" not in page:
            break
        params = {**params, "from": page["end"]}
    assert forward == sent
    # Unfiltered, the newest event is the custom one.
    newest = await client.request(
        "GET", f"rooms/{room_id}/messages", token=bob, params={"dir": "b", "limit": "1"}
    )
    assert [e["type"] for e in newest.ok()["chunk"]] == ["org.example.other"]

    # Sender filters; from/to bounds.
    by_bob = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=alice,
        params={"limit": "50", "filter": json.dumps({"senders": [bob.user_id]})},
    )
    bob_messages = [e["event_id"] for e in by_bob.ok()["chunk"] if e["type"] == "m.room.message"]
    assert bob_messages == [sent[i] for i in (9, 6, 3, 0)]
    not_bob = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=alice,
        params={
            "limit": "50",
            "filter": json.dumps({"not_senders": [bob.user_id], "not_types": ["m.room.member"]}),
        },
    )
    assert all(e["sender"] != bob.user_id for e in not_bob.ok()["chunk"])
    assert all(e["type"] != "m.room.member" for e in not_bob.ok()["chunk"])
    # The query's limit counts matching events only (the custom event is skipped).
    limited = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=alice,
        params={"limit": "3", "filter": only_messages},
    )
    assert [e["event_id"] for e in limited.ok()["chunk"]] == sent[::-1][:3]

    # "to" stops the page where the first backwards page of 5 messages ended.
    middle = (
        await client.request(
            "GET", f"rooms/{room_id}/messages", token=alice,
            params={"dir": "b", "limit": "5", "filter": only_messages},
        )
    ).ok()  # fmt: skip
    bounded = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=alice,
        params={"dir": "b", "limit": "50", "to": middle["end"], "filter": only_messages},
    )
    assert [e["event_id"] for e in bounded.ok()["chunk"]] == sent[::-1][:5]


async def test_messages_history_visibility_for_a_late_joiner(
    client: MatrixClient, users: Users
) -> None:
    alice, carol = users.alice, users.carol
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    before = await say(client, room_id, alice, "before carol")
    await join(client, room_id, carol)
    after = await say(client, room_id, alice, "after carol")
    page = await client.request(
        "GET", f"rooms/{room_id}/messages", token=carol, params={"limit": "50"}
    )
    ids = [e["event_id"] for e in page.ok()["chunk"]]
    assert after in ids and before not in ids
    hidden = await client.request("GET", f"rooms/{room_id}/event/{before}", token=carol)
    assert_error(hidden, 404, "M_NOT_FOUND")


async def test_context(client: MatrixClient, users: Users) -> None:
    alice = users.alice
    room_id = await create_room(client, alice, name="ctx")
    sent = [await say(client, room_id, alice, f"c{i}") for i in range(7)]
    result = (
        await client.request(
            "GET", f"rooms/{room_id}/context/{sent[3]}", token=alice, params={"limit": "4"}
        )
    ).ok()
    assert result["event"]["event_id"] == sent[3]
    assert [e["event_id"] for e in result["events_before"]] == [sent[2], sent[1]]
    assert [e["event_id"] for e in result["events_after"]] == [sent[4], sent[5]]
    state_types = {e["type"] for e in result["state"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    # Its tokens continue with /messages in both directions.
    older = await client.request(
        "GET", f"rooms/{room_id}/messages", token=alice,
        params={"dir": "b", "from": result["start"], "limit": "1"},
    )  # fmt: skip
    assert [e["event_id"] for e in older.ok()["chunk"]] == [sent[0]]
    newer = await client.request(
        "GET", f"rooms/{room_id}/messages", token=alice,
        params={"dir": "f", "from": result["end"], "limit": "5"},
    )  # fmt: skip
    assert [e["event_id"] for e in newer.ok()["chunk"]] == [sent[6]]
    filtered = await client.request(
        "GET",
        f"rooms/{room_id}/context/{sent[3]}",
        token=alice,
        params={"limit": "10", "filter": json.dumps({"types": ["m.room.name"]})},
    )
    assert filtered.ok()["events_after"] == []
    assert [e["type"] for e in filtered.ok()["events_before"]] == ["m.room.name"]


# /sync --------------------------------------------------------------------------------


async def test_sync_initial_and_incremental(client: MatrixClient, users: Users) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat", name="syncing")
    await join(client, room_id, bob)
    initial = await sync(client, bob)
    room = initial["rooms"]["join"][room_id]
    timeline_types = [e["type"] for e in room["timeline"]["events"]]
    state_types = {e["type"] for e in room["state"]["events"]} | set(timeline_types)
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    assert room["summary"]["m.joined_member_count"] == 2

    message = await say(client, room_id, alice, "new")
    incremental = await sync(client, bob, since=initial["next_batch"])
    events = incremental["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in events] == [message]
    assert incremental["rooms"]["join"][room_id]["timeline"]["limited"] is False
    # Nothing new: an empty response with a usable token.
    nothing = await sync(client, bob, since=incremental["next_batch"], timeout="0")
    assert room_id not in nothing["rooms"]["join"]


async def test_sync_long_poll_wakes_on_message_and_times_out_empty(
    client: MatrixClient, users: Users
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, room_id, bob)
    since = (await sync(client, bob))["next_batch"]

    started = time.monotonic()
    empty = await sync(client, bob, since=since, timeout="700")
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 5, elapsed
    assert room_id not in empty["rooms"]["join"]

    started = time.monotonic()
    waiting = await LongPoll.start(
        sync(client, bob, since=empty["next_batch"], timeout="20000"), 20
    )
    waiting.assert_waiting()
    message = await say(client, room_id, alice, "wake up")
    woken = await waiting.woken()
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"long-poll did not return early: {elapsed:.1f} s"
    events = woken["rooms"]["join"][room_id]["timeline"]["events"]
    assert message in [e["event_id"] for e in events]


async def test_sync_limited_timeline_continues_with_messages(
    client: MatrixClient, users: Users
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, room_id, bob)
    small = json.dumps({"room": {"timeline": {"limit": 3}}})
    since = (await sync(client, bob, filter=small))["next_batch"]
    topic = await client.request(
        "PUT", f"rooms/{room_id}/state/m.room.topic", json={"topic": "gap"}, token=alice
    )
    topic_id = topic.ok()["event_id"]
    sent = [await say(client, room_id, alice, f"gap {i}") for i in range(8)]
    result = await sync(client, bob, since=since, filter=small)
    room = result["rooms"]["join"][room_id]
    timeline = room["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == sent[-3:]
    # The state change in the gap arrives in the state section.
    assert topic_id in [e["event_id"] for e in room["state"]["events"]]
    # prev_batch continues backwards through the gap with /messages, to the topic.
    page = await client.request(
        "GET",
        f"rooms/{room_id}/messages",
        token=bob,
        params={"dir": "b", "from": timeline["prev_batch"], "limit": "6"},
    )
    assert [e["event_id"] for e in page.ok()["chunk"]] == [*sent[-4::-1], topic_id]


async def test_sync_timeline_filter_applies_before_the_limit(
    client: MatrixClient, users: Users
) -> None:
    alice, bob = users.alice, users.bob
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, room_id, bob)
    wanted = json.dumps({"room": {"timeline": {"limit": 3, "types": ["m.room.message"]}}})
    since = (await sync(client, bob, filter=wanted))["next_batch"]
    sent = []
    for i in range(5):
        sent.append(await say(client, room_id, alice, f"kept {i}"))
        for _ in range(3):
            (
                await client.request(
                    "PUT",
                    f"rooms/{room_id}/send/org.example.noise/t{next(_txn)}",
                    json={"i": i},
                    token=alice,
                )
            ).ok()
    timeline = (await sync(client, bob, since=since, filter=wanted))["rooms"]["join"][room_id][
        "timeline"
    ]
    # Three messages although the newest raw events are all noise; more remain.
    assert [e["event_id"] for e in timeline["events"]] == sent[-3:]
    assert timeline["limited"] is True
    # With room for all of them, nothing is left: the timeline is not limited.
    roomy = json.dumps({"room": {"timeline": {"limit": 20, "types": ["m.room.message"]}}})
    timeline = (await sync(client, bob, since=since, filter=roomy))["rooms"]["join"][room_id][
        "timeline"
    ]
    assert [e["event_id"] for e in timeline["events"]] == sent
    assert timeline["limited"] is False


async def test_sync_full_state(client: MatrixClient, users: Users) -> None:
    alice = users.alice
    room_id = await create_room(client, alice, name="full")
    since = (await sync(client, alice))["next_batch"]
    message = await say(client, room_id, alice, "x")
    full = await sync(client, alice, since=since, full_state="true")
    room = full["rooms"]["join"][room_id]
    assert [e["event_id"] for e in room["timeline"]["events"]] == [message]
    state_types = {e["type"] for e in room["state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.power_levels", "m.room.member"} <= state_types
    incremental = await sync(client, alice, since=since)
    assert incremental["rooms"]["join"][room_id]["state"]["events"] == []


async def test_sync_invite_and_leave_sections(client: MatrixClient, users: Users) -> None:
    alice, carol = users.alice, users.carol
    since = (await sync(client, carol))["next_batch"]
    room_id = await create_room(client, alice, name="sections")
    await invite(client, room_id, alice, carol)
    invited = await sync(client, carol, since=since)
    invite_state = invited["rooms"]["invite"][room_id]["invite_state"]["events"]
    member = [e for e in invite_state if e["type"] == "m.room.member"]
    assert any(
        e["state_key"] == carol.user_id and e["content"]["membership"] == "invite" for e in member
    )
    # The inviter's own member event names who invited (as Synapse sends it).
    assert any(
        e["state_key"] == alice.user_id and e["content"]["membership"] == "join" for e in member
    )
    assert room_id not in invited["rooms"]["join"]

    await join(client, room_id, carol)
    joined = await sync(client, carol, since=invited["next_batch"])
    assert room_id in joined["rooms"]["join"] and room_id not in joined["rooms"]["invite"]

    last = await say(client, room_id, alice, "before carol leaves")
    (await client.request("POST", f"rooms/{room_id}/leave", json={}, token=carol)).ok()
    after_leaving = await say(client, room_id, alice, "after carol left")
    left = await sync(client, carol, since=joined["next_batch"])
    assert room_id not in left["rooms"]["join"]
    timeline = [e["event_id"] for e in left["rooms"]["leave"][room_id]["timeline"]["events"]]
    assert last in timeline and after_leaving not in timeline
    leave_events = [
        e for e in left["rooms"]["leave"][room_id]["timeline"]["events"]
        if e["type"] == "m.room.member" and e["state_key"] == carol.user_id
    ]  # fmt: skip
    assert leave_events[-1]["content"]["membership"] == "leave"
    # Later syncs do not repeat the room.
    quiet = await sync(client, carol, since=left["next_batch"])
    assert room_id not in quiet["rooms"]["leave"]
