"""Federation with a real Synapse through a deployment (issue 21, acceptance): an event
writer (with federation_inbound) and a client reader (with federation_sender) behind
nginx, which terminates federation TLS on the port of the server name
(``127.0.0.1:<port>``, a self-signed certificate, a test network). A deployment user's
room is joined by a Synapse user on invite; messages cross both ways, the Synapse user's
reaching the deployment user's /sync on the client reader, which asks Synapse for a
stranger's profile itself. The writer queues its events in its commits and the reader
sends them; receipts stored on the writer and presence set on the reader reach Synapse
from the reader too (the writer would stand in for it, were it down). The writer starts
the federation client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.conftest import synapse, synapse_client
from harness.client import Account, MatrixClient, new_session
from harness.deployment import WRITER_ROLES, Deployment, behind_nginx, until_lease_held
from harness.fake_server import FakeRequest, FakeServer
from harness.nginx import Nginx
from harness.partial_state import fake_members, host_partial_room, join_partially
from harness.rooms import say
from harness.sync import (
    LongPoll,
    has_receipt,
    invited_to,
    sync,
    sync_since,
    sync_until,
    wait_until_joined,
)
from harness.timeline import last_event_id, message_bodies, until_bodies
from peyvand.types import ServerName

__all__ = ["synapse", "synapse_client"]

TIMEOUT_SECONDS = 90


@pytest.fixture
def federating(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Nginx, Deployment]]:
    """A federating deployment (logging which components each process starts) behind
    nginx, which listens for clients and terminates federation TLS."""
    writer = [role for role in WRITER_ROLES if role != "federation_sender"]
    roles = {"writer": writer, "reader": ["client_reader", "federation_sender"]}
    options = {"log_level": '"DEBUG"'}
    with behind_nginx(request, tmp_path, roles, options=options, federation=True) as deployed:
        yield deployed


def _has_message(room_id: str, body: str) -> Any:
    """A ``sync_until`` condition: the room's timeline in the response holds ``body``."""

    def done(response: dict[str, Any]) -> bool:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        events = room.get("timeline", {}).get("events", [])
        return any(e.get("content", {}).get("body") == body for e in events)

    return done


async def _shared_room(
    front: MatrixClient, alice: Account, synapse_client: MatrixClient, bob: Account
) -> str:
    """A room of ``alice`` (the deployment's) that ``bob`` (Synapse's) joined on invite."""
    created = await front.request("POST", "createRoom", json={}, token=alice)
    room_id = str(created.ok()["room_id"])
    invite = {"user_id": bob.user_id}
    (await front.request("POST", f"rooms/{quote(room_id)}/invite", json=invite, token=alice)).ok()
    await sync_until(synapse_client, bob, invited_to(room_id))
    (await synapse_client.request("POST", f"join/{quote(room_id)}", json={}, token=bob)).ok()
    await wait_until_joined(front, alice, room_id, bob.user_id, attempts=600)
    return room_id


async def test_a_synapse_user_and_a_deployment_user_talk(
    federating: tuple[Nginx, Deployment],
    synapse_client: MatrixClient,
) -> None:
    nginx, deployment = federating
    async with new_session() as session:
        front = MatrixClient(session, nginx.base_url)
        reader = MatrixClient(session, deployment["reader"].base_url)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            assert deployment.database_url is not None
            # The reader sends (the writer standing in only were it down).
            share = "federation sender 1 of 1"
            await until_lease_held(deployment.database_url, share, "reader", TIMEOUT_SECONDS)
            alice = await front.register()
            bob = await synapse_client.register()
            # Synapse's join reaches the writer through nginx's TLS listener.
            room_id = await _shared_room(front, alice, synapse_client, bob)

            since = (await reader.request("GET", "sync", token=alice)).ok()["next_batch"]
            await say(front, room_id, alice, "hello from the deployment")
            await until_bodies(
                synapse_client, bob, room_id, "hello from the deployment", TIMEOUT_SECONDS
            )
            await say(synapse_client, room_id, bob, "hello from synapse")
            await sync_until(reader, alice, _has_message(room_id, "hello from synapse"), since)
            on_deployment = await message_bodies(reader, alice, room_id, 50)
            on_synapse = await message_bodies(synapse_client, bob, room_id, 50)
            # Alice's read receipt (stored by the writer) reaches Synapse from the reader.
            last = await last_event_id(reader, alice, room_id)
            receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(last)}"
            (await front.request("POST", receipt, json={}, token=alice)).ok()
            await sync_until(synapse_client, bob, has_receipt(room_id, alice.user_id, last))
            # The reader asks Synapse itself (its federation client) for a stranger's profile.
            carol = await synapse_client.register()
            name = {"displayname": "carol on synapse"}
            path = f"profile/{quote(carol.user_id)}/displayname"
            (await synapse_client.request("PUT", path, json=name, token=carol)).ok()
            profile = (await reader.request("GET", path, token=alice)).ok()

    assert on_deployment == on_synapse == ["hello from the deployment", "hello from synapse"]
    assert profile == name
    writer_log, reader_log = deployment["writer"].log(), deployment["reader"].log()
    assert "lease federation sender 1 of 1 taken by reader" in reader_log
    assert "started federation client" in writer_log
    for log in (writer_log, reader_log):
        assert "Unhandled error" not in log


async def _upload_keys(client: MatrixClient, account: Account) -> None:
    """Device keys for ``account``'s device (the server does not check their signature;
    nothing here encrypts with them)."""
    device = account.device_id
    device_keys = {
        "user_id": account.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": "c" * 43, f"ed25519:{device}": "e" * 43},
        "signatures": {account.user_id: {f"ed25519:{device}": "s" * 86}},
    }
    (
        await client.request(
            "POST", "keys/upload", json={"device_keys": device_keys}, token=account
        )
    ).ok()


async def _devices_on(client: MatrixClient, account: Account, user_id: str) -> set[str]:
    body: dict[str, Any] = {"device_keys": {user_id: []}}
    answer = (await client.request("POST", "keys/query", json=body, token=account)).ok()
    return set(answer["device_keys"].get(user_id, {}))


async def test_a_remote_users_new_device_reaches_the_reader_that_cached_their_keys(
    federating: tuple[Nginx, Deployment],
    synapse_client: MatrixClient,
) -> None:
    """The client reader fetched and cached a Synapse user's device list; the device
    list update Synapse sends for a new device reaches the writer (federation inbound),
    and the reader's next /keys/query has the new device: its copy was dropped."""
    nginx, deployment = federating
    async with new_session() as session:
        front = MatrixClient(session, nginx.base_url)
        reader = MatrixClient(session, deployment["reader"].base_url)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            alice = await front.register()
            bob = await synapse_client.register()
            await _upload_keys(synapse_client, bob)
            await _shared_room(front, alice, synapse_client, bob)
            assert await _devices_on(reader, alice, bob.user_id) == {bob.device_id}

            second = await synapse_client.login(bob.user_id, bob.password)
            await _upload_keys(synapse_client, second)
            devices: set[str] = set()
            for _ in range(300):  # 30 s
                devices = await _devices_on(reader, alice, bob.user_id)
                if second.device_id in devices:
                    break
                await asyncio.sleep(0.1)
    assert devices == {bob.device_id, second.device_id}
    for name in ("writer", "reader"):
        assert "Unhandled error" not in deployment[name].log()


async def test_presence_set_by_a_sync_on_the_reader_reaches_synapse(
    federating: tuple[Nginx, Deployment],
    synapse_client: MatrixClient,
) -> None:
    """A deployment user's /sync with ``set_presence=online`` on the client reader makes
    them online on Synapse: the reader, the federation sender, sends it."""
    nginx, deployment = federating
    async with new_session() as session:
        front = MatrixClient(session, nginx.base_url)
        reader = MatrixClient(session, deployment["reader"].base_url)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            alice = await front.register()
            bob = await synapse_client.register()
            await _shared_room(front, alice, synapse_client, bob)

            # Online first: the writer's push of the room's members to the server of a
            # user who joined (at its next sweep) may carry it too.
            status = f"presence/{quote(alice.user_id)}/status"
            seen = []
            for wanted in ("online", "unavailable"):
                query = f"sync?timeout=0&set_presence={wanted}"
                (await reader.request("GET", query, token=alice)).ok()
                presence = ""
                for _ in range(300):  # 30 s
                    answer = await synapse_client.request("GET", status, token=bob)
                    presence = answer.ok()["presence"]
                    if presence == wanted:
                        break
                    await asyncio.sleep(0.1)
                seen.append(presence)
    assert seen == ["online", "unavailable"]
    for name in ("writer", "reader"):
        assert "Unhandled error" not in deployment[name].log()


async def test_a_reader_follows_a_room_joined_with_partial_state(
    federating: tuple[Nginx, Deployment], tmp_path: Path
) -> None:
    """A deployment user joins a fake server's room with partial state (the writer joins
    and completes it): the client reader leaves the room out of a sync that does not
    lazy-load members while it is partial, and sends it as newly joined, with every
    member, once the writer has the full state; its /joined_members, waiting meanwhile,
    lists every member too (what it kept of the partial state is dropped)."""
    nginx, deployment = federating
    members = 6
    peer = ServerName(deployment.server_name)
    async with FakeServer(tmp_path / "fake", peer=peer) as fake, new_session() as session:
        front = MatrixClient(session, nginx.base_url)
        reader = MatrixClient(session, deployment["reader"].base_url)
        hosted = host_partial_room(fake, f"!partial:{fake.server_name}", members, "partial")
        room_id = hosted.room.room_id
        release = asyncio.Event()

        async def state_ids(request: FakeRequest) -> tuple[int, Any]:
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    await release.wait()
            except TimeoutError:
                return 500, {"errcode": "M_UNKNOWN", "error": "not now"}
            return hosted.state_ids(request)

        fake.on("GET", "/_matrix/federation/v1/state_ids/{room_id}", state_ids)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            alice = await join_partially(deployment["writer"], front, fake, hosted.room)
            eager = await sync_since(reader, alice)
            assert room_id not in eager["rooms"]["join"]
            token = eager["next_batch"]
            for _ in range(20):  # until half a second passes with nothing new (presence...)
                settled = await sync_since(reader, alice, token, timeout_ms=500)
                assert room_id not in settled["rooms"]["join"]
                if settled["next_batch"] == token:
                    break
                token = settled["next_batch"]
            # A lazy-loading client reads the partial room on the reader (its state is
            # kept there); /joined_members there waits for the full state.
            lazy = json.dumps({"room": {"state": {"lazy_load_members": True}}})
            assert room_id in (await sync(reader, alice, filter=lazy))["rooms"]["join"]
            path = f"rooms/{quote(room_id)}/joined_members"
            waiting = asyncio.ensure_future(reader.request("GET", path, token=alice))
            poll = await LongPoll.start(sync_since(reader, alice, token, timeout_ms=60_000), 60)
            poll.assert_waiting()
            assert not waiting.done()
            release.set()
            completed = await poll.woken()
            listed = set((await waiting).ok()["joined"])
    section = completed["rooms"]["join"][room_id]
    events = [*section["state"]["events"], *section["timeline"]["events"]]
    joined = {
        e["state_key"]
        for e in events
        if e["type"] == "m.room.member" and e["content"].get("membership") == "join"
    }
    assert joined == listed == fake_members(fake, members) | {alice.user_id}
    for name in ("writer", "reader"):
        assert "Unhandled error" not in deployment[name].log()
