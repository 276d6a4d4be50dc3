"""The E2EE EDUs over federation (services/e2ee/to_device_edus.py,
remote_device_lists.py, outbound_device_lists.py) over the real services on a SQLite
database (``harness.edu_world``): send-to-device both ways, remote device lists and
cross-signing keys, local device list updates, remote key queries and claims
(Server-Server API, "Device Management", "End-to-End Encryption", "Send-to-device
messaging")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import (
    generate_signing_key,
)

from harness.edu_world import (
    ALICE,
    ALICE_DEVICE,
    ALICE_REQUESTER,
    BOB,
    CAROL,
    DAN,
    REMOTE,
    World,
    changed_since,
    cross_signing_key,
    device_keys,
    device_list_update,
    edu,
    open_world,
    signed_device_keys,
    signing_key,
    user_devices_fetcher,
)
from peyvand.errors import MatrixError
from peyvand.events.signing import sign_json
from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.remote_device_lists import parse_user_devices
from peyvand.storage.remote_devices import RemoteDevice
from peyvand.types import DeviceID, JsonDict, ServerName, UserID


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as opened:
        yield opened


# Inbound: to-device ------------------------------------------------------------------------


async def test_remote_to_device_reaches_local_devices_once(world: World) -> None:
    await world.add_device(ALICE, "ALICELAPTOP")
    message = {
        "sender": BOB,
        "type": "m.room.encrypted",
        "message_id": "m1",
        "messages": {
            ALICE: {ALICE_DEVICE: {"body": "for the phone"}, "*": {"body": "for all"}},
            DAN: {"*": {"body": "not ours"}},
        },
    }
    await world.node.edus.on_edus(REMOTE, [edu("m.direct_to_device", message)] * 2)
    # The same message ID from another server is another message.
    await world.node.edus.on_edus(
        ServerName("other.org"),
        [edu("m.direct_to_device", {**message, "sender": DAN, "messages": {ALICE: {"*": {}}}})],
    )
    now = world.notifier.current_token.to_device
    phone, _ = await world.node.to_device.for_sync(ALICE, ALICE_DEVICE, 0, now)
    laptop, _ = await world.node.to_device.for_sync(ALICE, "ALICELAPTOP", 0, now)
    assert phone == [
        {"type": "m.room.encrypted", "sender": BOB, "content": {"body": "for the phone"}},
        {"type": "m.room.encrypted", "sender": DAN, "content": {}},
    ]
    assert laptop == [
        {"type": "m.room.encrypted", "sender": BOB, "content": {"body": "for all"}},
        {"type": "m.room.encrypted", "sender": DAN, "content": {}},
    ]


@pytest.mark.parametrize(
    "content",
    [
        {"sender": DAN},  # not of the origin
        {"message_id": ""},
        {"type": 5},
        {"messages": {ALICE: {ALICE_DEVICE: "text"}}},
        {"messages": {ALICE: {ALICE_DEVICE: {"big": "x" * 70_000}}}},
    ],
)
async def test_bad_to_device_is_ignored(world: World, content: JsonDict) -> None:
    message = {
        "sender": BOB,
        "type": "m.room.encrypted",
        "message_id": "m1",
        "messages": {ALICE: {ALICE_DEVICE: {}}},
    }
    before = world.notifier.current_token.to_device
    await world.node.edus.on_edus(REMOTE, [edu("m.direct_to_device", {**message, **content})])
    assert world.notifier.current_token.to_device == before


# Inbound: device lists and signing keys ----------------------------------------------------


def bob_devices(stream_id: int, *device_ids: str, **extra: Any) -> JsonDict:
    return {
        "user_id": BOB,
        "stream_id": stream_id,
        "devices": [{"device_id": d, "keys": device_keys(BOB, d)} for d in device_ids],
        **extra,
    }


async def query_bob(world: World) -> JsonDict:
    return await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: []})


async def test_device_list_updates_follow_the_chain_and_a_gap_marks_stale(world: World) -> None:
    since = world.notifier.current_token
    # Never fetched: the first update cannot be applied; it marks the list stale.
    await world.node.edus.on_edus(REMOTE, [device_list_update(4, [3])])
    assert await changed_since(world, since) == [BOB]
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale and cached.stream_id is None
    # Without a fetcher nothing is known yet.
    assert list((await query_bob(world))["failures"]) == [REMOTE]

    calls: list[UserID] = []
    fetch = user_devices_fetcher({BOB: bob_devices(5, "BOBPHONE")}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 1
    assert calls == [BOB]
    assert (await query_bob(world))["device_keys"][BOB] == {
        "BOBPHONE": {**device_keys(BOB, "BOBPHONE"), "unsigned": {}}
    }

    # 6 follows 5: applied (a new device, with its name and keys).
    since = world.notifier.current_token
    update = device_list_update(
        6, [5], "BOBLAPTOP", keys=device_keys(BOB, "BOBLAPTOP"), device_display_name="laptop"
    )
    await world.node.edus.on_edus(REMOTE, [update])
    assert await changed_since(world, since) == [BOB]
    keys = (await query_bob(world))["device_keys"][BOB]
    assert sorted(keys) == ["BOBLAPTOP", "BOBPHONE"]
    assert keys["BOBLAPTOP"]["unsigned"] == {"device_display_name": "laptop"}
    # A repeat changes nothing and wakes nobody.
    since = world.notifier.current_token
    await world.node.edus.on_edus(REMOTE, [update])
    assert world.notifier.current_token == since
    # 7 deletes the phone.
    await world.node.edus.on_edus(REMOTE, [device_list_update(7, [6], "BOBPHONE", deleted=True)])
    assert sorted((await query_bob(world))["device_keys"][BOB]) == ["BOBLAPTOP"]
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (7, False)

    # 9 names 8, which never came: a gap. The list is stale and is fetched again.
    await world.node.edus.on_edus(REMOTE, [device_list_update(9, [8], "BOBTABLET")])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale
    fetch = user_devices_fetcher({BOB: bob_devices(9, "BOBLAPTOP", "BOBTABLET")}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 1
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (9, False)
    assert [d.device_id for d in cached.devices] == ["BOBLAPTOP", "BOBTABLET"]
    # The chain goes on from the fetched stream_id.
    await world.node.edus.on_edus(REMOTE, [device_list_update(10, [9], "BOBTABLET", deleted=True)])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (10, False)


async def test_empty_prev_id_on_a_known_list_is_a_gap(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [], {})
    await world.node.edus.on_edus(REMOTE, [device_list_update(6, [])])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale


async def test_a_failed_resync_keeps_the_stale_list(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [RemoteDevice("OLD", None, None)], {})
    await world.node.store.mark_stale(BOB)
    calls: list[UserID] = []
    for answer in (ConnectionError("down"), {"user_id": CAROL, "stream_id": 1, "devices": []}):
        fetch = user_devices_fetcher({BOB: answer}, calls)
        assert not await world.node.edus.remote_device_lists.resync_user(BOB, fetch)
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale and cached.stream_id == 5


async def test_a_query_of_a_stale_list_fetches_it_first(world: World) -> None:
    calls: list[UserID] = []
    fetch = user_devices_fetcher(
        {BOB: bob_devices(3, "BOBPHONE"), CAROL: bob_devices(1, "X") | {"user_id": CAROL}},
        calls,
    )
    await world.restart(fetch_user_devices=fetch)
    result = await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: ["BOBPHONE"], CAROL: []})
    assert sorted(calls) == [BOB, CAROL]
    assert sorted(result["device_keys"][BOB]) == ["BOBPHONE"]
    # BOB shares a room with ALICE: cached. CAROL does not: answered, not kept.
    assert (await world.node.store.get_device_list(BOB)) is not None
    assert (await world.node.store.get_device_list(CAROL)) is None
    await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: []})
    assert len(calls) == 2


async def test_updates_about_users_nobody_here_shares_a_room_with_are_ignored(
    world: World,
) -> None:
    since = world.notifier.current_token
    carol_update = {"user_id": CAROL, "device_id": "C", "stream_id": 2, "prev_id": [1]}
    master = cross_signing_key(CAROL, "master", signing_key())
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu("m.device_list_update", carol_update),
            edu("m.signing_key_update", {"user_id": CAROL, "master_key": master}),
            # Not a user of the origin.
            edu("m.device_list_update", {**carol_update, "user_id": DAN}),
        ],
    )
    assert world.notifier.current_token == since
    assert await world.node.store.get_device_list(CAROL) is None


async def test_signing_key_updates_replace_the_cached_keys(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [], {})
    master = cross_signing_key(BOB, "master", signing_key())
    self_signing = cross_signing_key(BOB, "self_signing", signing_key())
    since = world.notifier.current_token
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu(
                "m.signing_key_update",
                {"user_id": BOB, "master_key": master, "self_signing_key": self_signing},
            ),
            # Bad: a key of someone else, a key for the wrong usage.
            edu("m.signing_key_update", {"user_id": BOB, "master_key": {**master, "user_id": DAN}}),
            edu("m.signing_key_update", {"user_id": BOB, "master_key": self_signing}),
        ],
    )
    assert await changed_since(world, since) == [BOB]
    result = await query_bob(world)
    assert result["master_keys"] == {BOB: master}
    assert result["self_signing_keys"] == {BOB: self_signing}


async def test_resync_forgets_users_no_longer_sharing_a_room(world: World) -> None:
    await world.node.store.mark_stale(CAROL)
    calls: list[UserID] = []
    fetch = user_devices_fetcher({}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 0
    assert calls == []
    assert await world.node.store.get_device_list(CAROL) is None


def test_parse_user_devices_leaves_out_malformed_devices() -> None:
    body = bob_devices(2, "A") | {
        "devices": [
            {"device_id": "A", "keys": device_keys(BOB, "A"), "device_display_name": "a"},
            {"device_id": "B"},
            {"device_id": "C", "keys": device_keys(CAROL, "C")},
            {"device_id": 5},
        ]
    }
    parsed = parse_user_devices(BOB, body)
    assert parsed is not None and parsed.stream_id == 2
    assert [(d.device_id, d.display_name, d.keys_json is None) for d in parsed.devices] == [
        ("A", "a", False),
        ("B", None, True),
    ]
    assert parse_user_devices(BOB, {**body, "stream_id": "2"}) is None
    assert parse_user_devices(BOB, {**body, "devices": {}}) is None
    assert parse_user_devices(BOB, [body]) is None


# Outbound ----------------------------------------------------------------------------------


async def test_local_to_device_for_remote_users_goes_to_their_servers_once(
    world: World,
) -> None:
    messages: dict[UserID, dict[str, JsonDict]] = {
        BOB: {"BOBPHONE": {"n": 1}},
        CAROL: {"*": {"n": 2}},
        DAN: {"*": {"n": 3}},
        ALICE: {ALICE_DEVICE: {"n": 4}},
    }
    await world.node.to_device.send(ALICE_REQUESTER, "m.room_key", "txn1", messages)
    await world.node.to_device.send(ALICE_REQUESTER, "m.room_key", "txn1", messages)  # a retry
    assert world.node.sender.ephemeral == []
    assert [(d, t) for d, t, _ in world.node.sender.durable] == [
        ("other.org", "m.direct_to_device"),
        ("remote.org", "m.direct_to_device"),
    ]
    other, remote = (c for _, _, c in world.node.sender.durable)
    assert other["messages"] == {DAN: {"*": {"n": 3}}}
    assert remote["messages"] == {BOB: {"BOBPHONE": {"n": 1}}, CAROL: {"*": {"n": 2}}}
    assert other["sender"] == ALICE and other["type"] == "m.room_key"
    assert other["message_id"] != remote["message_id"]
    assert all(len(c["message_id"]) <= 32 for c in (other, remote))
    now = world.notifier.current_token.to_device
    local, _ = await world.node.to_device.for_sync(ALICE, ALICE_DEVICE, 0, now)
    assert local == [{"type": "m.room_key", "sender": ALICE, "content": {"n": 4}}]


def device_updates(world: World) -> list[tuple[str, JsonDict]]:
    return [(d, c) for d, t, c in world.node.sender.durable if t == "m.device_list_update"]


async def test_local_device_changes_go_out_as_a_chain_that_survives_a_restart(
    world: World,
) -> None:
    await world.add_device(ALICE, "NEW")
    key = generate_signing_key("NEW")
    requester = Requester(ALICE, DeviceID("NEW"), 2)
    await world.node.e2e_keys.upload_keys(
        requester, {"device_keys": signed_device_keys(key, ALICE, "NEW")}
    )
    await world.delete_device(ALICE, "NEW")
    sent = device_updates(world)
    assert [d for d, _ in sent] == ["other.org", "remote.org"] * 3
    chain = [c for d, c in sent if d == REMOTE]
    assert [(c["stream_id"], c["prev_id"]) for c in chain] == [(1, []), (2, [1]), (3, [2])]
    assert all(c["user_id"] == ALICE and c["device_id"] == "NEW" for c in chain)
    assert "keys" not in chain[0] and "deleted" not in chain[0]
    assert chain[1]["keys"] == signed_device_keys(key, ALICE, "NEW")
    assert chain[2]["deleted"] is True and "keys" not in chain[2]

    answer = await world.node.edus.outbound_device_lists.user_devices(ALICE)
    assert answer == {
        "user_id": ALICE,
        "stream_id": 3,
        "devices": [{"device_id": ALICE_DEVICE}],
    }

    # After a restart the chain goes on where it was.
    node = await world.restart()
    await world.add_device(ALICE, "NEWER")
    updates = [c for d, t, c in node.sender.durable if d == REMOTE]
    assert [(c["stream_id"], c["prev_id"]) for c in updates] == [(4, [3])]


async def test_cross_signing_changes_go_out_as_signing_key_updates(world: World) -> None:
    master_key = signing_key()
    master = cross_signing_key(ALICE, "master", master_key)
    self_signing = sign_json(
        cross_signing_key(ALICE, "self_signing", signing_key()), ALICE, master_key
    )
    user_signing = sign_json(
        cross_signing_key(ALICE, "user_signing", signing_key()), ALICE, master_key
    )
    await world.node.e2e_keys.upload_cross_signing_keys(
        ALICE_REQUESTER, {"master_key": master, "self_signing_key": self_signing}
    )
    sent = [(d, c) for d, t, c in world.node.sender.durable if t == "m.signing_key_update"]
    assert sent == [
        (server, {"user_id": ALICE, "master_key": master, "self_signing_key": self_signing})
        for server in ("other.org", "remote.org")
    ]
    # A user-signing key alone is not sent to other servers.
    world.node.sender.clear()
    await world.node.e2e_keys.upload_cross_signing_keys(
        ALICE_REQUESTER, {"user_signing_key": user_signing}
    )
    assert world.node.sender.durable == []
    answer = await world.node.edus.outbound_device_lists.user_devices(ALICE)
    assert answer["master_key"] == master and answer["self_signing_key"] == self_signing
    assert "user_signing_key" not in answer


async def test_nothing_goes_out_for_users_who_share_no_room_with_other_servers(
    world: World,
) -> None:
    lonely = UserID("@lonely:example.org")
    await world.accounts.create_user(lonely, None, is_admin=False, created_ts=1)
    await world.add_device(lonely, "L")
    assert world.node.sender.durable == []
    assert (await world.node.edus.outbound_device_lists.user_devices(lonely))["stream_id"] == 0
    with pytest.raises(MatrixError, match="not a user of this server"):
        await world.node.edus.outbound_device_lists.user_devices(BOB)


async def test_remote_claims_go_to_each_users_server(world: World) -> None:
    asked: list[tuple[str, JsonDict]] = []

    async def claim(server: str, body: JsonDict) -> Any:
        asked.append((server, body))
        if server == "other.org":
            raise ConnectionError("down")
        return {
            "one_time_keys": {
                BOB: {"BOBPHONE": {"signed_curve25519:AAAA": {"key": "k"}}},
                ALICE: {ALICE_DEVICE: {"signed_curve25519:X": {"key": "forged"}}},
            }
        }

    await world.restart(claim_keys=claim)
    result = await world.node.e2e_keys.claim_keys(
        {BOB: {"BOBPHONE": "signed_curve25519"}, DAN: {"D": "signed_curve25519"}}
    )
    assert sorted(asked, key=lambda a: a[0]) == [
        ("other.org", {"one_time_keys": {DAN: {"D": "signed_curve25519"}}}),
        ("remote.org", {"one_time_keys": {BOB: {"BOBPHONE": "signed_curve25519"}}}),
    ]
    assert result["one_time_keys"] == {BOB: {"BOBPHONE": {"signed_curve25519:AAAA": {"key": "k"}}}}
    assert list(result["failures"]) == ["other.org"]
    assert result["failures"]["other.org"]["status"] == 503


async def test_other_servers_query_and_claim_only_local_users(world: World) -> None:
    key = generate_signing_key(ALICE_DEVICE)
    await world.node.e2e_keys.upload_keys(
        ALICE_REQUESTER,
        {
            "device_keys": signed_device_keys(key, ALICE, ALICE_DEVICE),
            "one_time_keys": {"signed_curve25519:a": sign_json({"key": "a"}, ALICE, key)},
        },
    )
    answer = await world.node.e2e_keys.federation_query_keys({ALICE: [], BOB: []})
    assert answer["device_keys"] == {
        ALICE: {ALICE_DEVICE: signed_device_keys(key, ALICE, ALICE_DEVICE)}
    }
    assert set(answer) == {"device_keys", "master_keys", "self_signing_keys"}
    claimed = await world.node.e2e_keys.federation_claim_keys(
        {ALICE: {ALICE_DEVICE: "signed_curve25519"}, BOB: {"X": "signed_curve25519"}}
    )
    assert list(claimed["one_time_keys"]) == [ALICE]


async def test_started_it_fetches_stale_lists_in_the_background(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[UserID] = []
    node = await world.restart(
        fetch_user_devices=user_devices_fetcher({BOB: bob_devices(2, "BOBPHONE")}, calls)
    )
    stored = asyncio.Event()
    replace = node.store.replace_device_list

    async def replace_and_signal(*args: Any) -> None:
        await replace(*args)
        stored.set()

    monkeypatch.setattr(node.store, "replace_device_list", replace_and_signal)
    await node.edus.start()
    try:
        await node.edus.on_edus(REMOTE, [device_list_update(2, [1])])
        async with asyncio.timeout(5):
            await stored.wait()
    finally:
        await node.edus.stop()
    cached = await node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (2, False)
    assert calls == [BOB]
