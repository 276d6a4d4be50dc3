"""What an appservice's transactions carry beside room events, over HTTP on every backend
(Application Service API, "Pushing ephemeral data"; MSC2409 to-device messages; MSC3202
device lists and key counts).

The bridge registers with ``receive_ephemeral`` and ``org.matrix.msc3202``; a recording
appservice on loopback takes its transactions. A user outside the bridge's namespace
shares a room with the bridge's bot: their typing, read receipts and presence arrive in
``ephemeral`` (and ``de.sorunome.msc2409.ephemeral``) with the room's ID, their private
receipts never do. A to-device message to a ghost's device arrives once, with
``to_user_id`` and ``to_device_id`` and the ghost's key counts; the appservice's
acknowledgement deletes nothing a device syncs for itself (the ghost's own /sync still
finds it, as in Synapse). A new device of a user sharing a room with the bot is a device
list change."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from harness.appservice import RecordingAppService, write_registration
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

AS_TOKEN = "as-token-ephemeral"
HS_TOKEN = "hs-token-ephemeral"
BOT = f"@ephbot:{SERVER_NAME}"
# The registration's flag for device lists and key counts in transactions.
MSC3202: dict[str, Any] = {"org.matrix.msc3202": True}
_txn = itertools.count()


@pytest.fixture(scope="module")
async def appservice(backend: str) -> AsyncIterator[RecordingAppService]:
    """One per backend: each server numbers its transactions from 1."""
    recording = RecordingAppService(HS_TOKEN)
    await recording.start()
    try:
        yield recording
    finally:
        await recording.stop()


@pytest.fixture(scope="module")
def ephemeral_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    appservice: RecordingAppService,
) -> Iterator[HomeserverProcess]:
    data_dir = tmp_path_factory.mktemp("appservice-ephemeral")
    registration = write_registration(
        data_dir / "bridge.yaml",
        appservice_id="ephemeral",
        url=appservice.url,
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        sender_localpart="ephbot",
        user_regex=f"@eph_.*:{SERVER_NAME}",
        receive_ephemeral=True,
        rate_limited=False,
        **MSC3202,
    )
    options = {"app_service_config_files": f'["{registration}"]'}
    server = start_homeserver(backend, request, data_dir / "server", options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(ephemeral_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, ephemeral_homeserver.base_url)


def ephemeral(appservice: RecordingAppService) -> list[dict[str, Any]]:
    return [e for _, body in appservice.transactions for e in body.get("ephemeral", [])]


def to_device(appservice: RecordingAppService) -> list[dict[str, Any]]:
    key = "de.sorunome.msc2409.to_device"
    return [m for _, body in appservice.transactions for m in body.get(key, [])]


def field_values(appservice: RecordingAppService, name: str) -> list[Any]:
    return [body[name] for _, body in appservice.transactions if name in body]


async def room_with_bot(client: MatrixClient, user: Account) -> str:
    """A public room the bridge's bot creates and ``user`` joins."""
    room_id: str = (
        await client.request("POST", "createRoom", {"preset": "public_chat"}, AS_TOKEN)
    ).ok()["room_id"]
    (await client.request("POST", f"rooms/{quote(room_id)}/join", {}, user)).ok()
    return room_id


async def register_ghost(client: MatrixClient) -> tuple[str, str, str]:
    """A ghost the bridge registers with a device: (user ID, device ID, access token)."""
    body = {"type": "m.login.application_service", "username": unique_localpart("eph_")}
    result = (await client.request("POST", "register", body, AS_TOKEN)).ok()
    return result["user_id"], result["device_id"], result["access_token"]


async def send_to_device(
    client: MatrixClient, sender: Account, user: str, device: str, n: int
) -> None:
    messages = {user: {device: {"n": n}}}
    path = f"sendToDevice/org.example.ping/t{next(_txn)}"
    (await client.request("PUT", path, {"messages": messages}, sender)).ok()


async def test_typing_receipts_and_presence_of_a_room_with_the_bot_arrive(
    client: MatrixClient, appservice: RecordingAppService
) -> None:
    user = await client.register()
    room_id = await room_with_bot(client, user)
    path = f"rooms/{quote(room_id)}/typing/{quote(user.user_id)}"
    (await client.request("PUT", path, {"typing": True, "timeout": 30_000}, user)).ok()

    def typing(received: RecordingAppService) -> list[dict[str, Any]]:
        return [
            e
            for e in ephemeral(received)
            if e["type"] == "m.typing" and e.get("room_id") == room_id
        ]

    await appservice.wait_for(
        lambda a: any(user.user_id in e["content"]["user_ids"] for e in typing(a))
    )

    sent = (
        await client.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/t{next(_txn)}",
            {"msgtype": "m.text", "body": "hello"},
            user,
        )
    ).ok()
    event_id = sent["event_id"]
    private = f"rooms/{quote(room_id)}/receipt/m.read.private/{quote(event_id)}"
    (await client.request("POST", private, {}, user)).ok()
    public = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", public, {}, user)).ok()

    def read(received: RecordingAppService) -> list[dict[str, Any]]:
        return [
            e["content"][event_id]
            for e in ephemeral(received)
            if e["type"] == "m.receipt" and e.get("room_id") == room_id and event_id in e["content"]
        ]

    await appservice.wait_for(lambda a: any(user.user_id in r.get("m.read", {}) for r in read(a)))
    # A private receipt of a user outside the namespace is never sent.
    assert all("m.read.private" not in r for r in read(appservice))

    status = {"presence": "online", "status_msg": "bridging"}
    (await client.request("PUT", f"presence/{quote(user.user_id)}/status", status, user)).ok()
    await appservice.wait_for(
        lambda a: any(
            e["type"] == "m.presence"
            and e["sender"] == user.user_id
            and e["content"].get("status_msg") == "bridging"
            for e in ephemeral(a)
        )
    )
    # The unstable name carries the same list.
    for _, body in appservice.transactions:
        if "ephemeral" in body:
            assert body["de.sorunome.msc2409.ephemeral"] == body["ephemeral"]


async def test_typing_in_a_room_without_the_appservice_is_not_sent(
    client: MatrixClient, appservice: RecordingAppService
) -> None:
    alice, bob = await client.register(), await client.register()
    room_id = (await client.request("POST", "createRoom", {"preset": "public_chat"}, alice)).ok()[
        "room_id"
    ]
    (await client.request("POST", f"rooms/{quote(room_id)}/join", {}, bob)).ok()
    path = f"rooms/{quote(room_id)}/typing/{quote(alice.user_id)}"
    (await client.request("PUT", path, {"typing": True, "timeout": 30_000}, alice)).ok()
    # Then something it does see, so a transaction after the typing is known to be sent.
    other = await room_with_bot(client, bob)
    path = f"rooms/{quote(other)}/typing/{quote(bob.user_id)}"
    (await client.request("PUT", path, {"typing": True, "timeout": 30_000}, bob)).ok()
    await appservice.wait_for(
        lambda a: any(e.get("room_id") == other and e["type"] == "m.typing" for e in ephemeral(a))
    )
    assert not [e for e in ephemeral(appservice) if e.get("room_id") == room_id]


async def test_to_device_messages_for_ghosts_arrive_once_and_stay_for_their_own_sync(
    client: MatrixClient, appservice: RecordingAppService
) -> None:
    sender = await client.register()
    ghost, device, ghost_token = await register_ghost(client)
    await send_to_device(client, sender, ghost, device, 1)

    def mine(received: RecordingAppService) -> list[dict[str, Any]]:
        return [m for m in to_device(received) if m["to_user_id"] == ghost]

    await appservice.wait_for(lambda a: len(mine(a)) == 1)
    [message] = mine(appservice)
    assert message == {
        "to_user_id": ghost,
        "to_device_id": device,
        "type": "org.example.ping",
        "sender": sender.user_id,
        "content": {"n": 1},
    }
    # MSC3202: the recipient's one-time key counts and fallback key types come along.
    counts = field_values(appservice, "org.matrix.msc3202.device_one_time_keys_count")
    assert any(device in c.get(ghost, {}) for c in counts)
    fallback = field_values(appservice, "org.matrix.msc3202.device_unused_fallback_key_types")
    assert any(c.get(ghost, {}).get(device) == [] for c in fallback)

    await send_to_device(client, sender, ghost, device, 2)
    await appservice.wait_for(lambda a: len(mine(a)) == 2)
    assert [m["content"]["n"] for m in mine(appservice)] == [1, 2]
    # Acknowledged (the next transaction is only built once the last one was), yet the
    # ghost's device, which has an access token, still gets both from its own sync.
    await send_to_device(client, sender, ghost, device, 3)
    await appservice.wait_for(lambda a: len(mine(a)) == 3)
    synced = await client.request("GET", "sync", token=ghost_token, params={"timeout": "0"})
    events = synced.ok().get("to_device", {}).get("events", [])
    assert [e["content"]["n"] for e in events] == [1, 2, 3]


async def test_a_new_device_of_a_user_sharing_a_room_is_a_device_list_change(
    client: MatrixClient, appservice: RecordingAppService
) -> None:
    user = await client.register()
    await room_with_bot(client, user)
    await client.login(user.user_id, user.password)

    def told(received: RecordingAppService, user_id: str) -> int:
        """In how many transactions ``user_id``'s device list changed."""
        lists = field_values(received, "org.matrix.msc3202.device_lists")
        return sum(user_id in device_lists["changed"] for device_lists in lists)

    await appservice.wait_for(lambda a: told(a, user.user_id) >= 1)
    outsider = await client.register()
    await client.login(outsider.user_id, outsider.password)
    # A later change the appservice does see: by then the outsider's was passed over.
    told_before = told(appservice, user.user_id)
    await client.login(user.user_id, user.password)
    await appservice.wait_for(lambda a: told(a, user.user_id) > told_before)
    assert told(appservice, outsider.user_id) == 0
