"""Issue 21's acceptance deployment federating with a real Synapse: two event writers
sharing the rooms, a client reader, and one process for federation (inbound and
sender), media and background jobs, behind nginx terminating federation TLS.

One room of each writer, both joined by a Synapse user on invite (each invite
countersigned by Synapse from the room's writer, each send_join taken by the room's
writer through nginx); messages cross both ways in both; read receipts cross both ways
(Synapse's taken in by the primary writer's stream); a to-device message from Synapse
reaches the deployment user's /sync; a deployment user joins a room on Synapse (the join
made by that room's writer) and messages cross there too; a Synapse user's invite to a
room on Synapse is taken in by the primary writer and joined. With the federation process
killed, Synapse's transactions are taken in by a writer (nginx's backup) and the
deployment's events reach Synapse from a writer standing in for the lone sender (its
share's lease expired), which hands the share back once the process is started again.
Received PDUs reach their room's writer through the federation process, which itself
stores no event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.conftest import synapse, synapse_client
from harness.client import Account, MatrixClient, new_session
from harness.deployment import Deployment, behind_nginx, lease_holder, until_lease_held
from harness.nginx import Nginx
from harness.rooms import say
from harness.sync import has_receipt, invited_to, sync_until, wait_until_joined
from harness.timeline import last_event_id, until_bodies
from peyvand.services.timeline.room_owners import shard_of

__all__ = ["synapse", "synapse_client"]

TIMEOUT_SECONDS = 120
# The lone sender's share: taken by a writer within a lease period and a retry (8 s),
# with room for a loaded machine and Synapse's own answer.
SHARE = "federation sender 1 of 1"
TAKEOVER_SECONDS = 30
ROLES = {
    "writer": ["event_writer"],
    "writer2": ["event_writer"],
    "reader": ["client_reader"],
    "fed": ["federation_inbound", "federation_sender", "media", "background"],
}


@pytest.fixture
def four(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Nginx, Deployment]]:
    options = {"log_level": '"DEBUG"'}
    with behind_nginx(request, tmp_path, ROLES, options=options, federation=True) as deployed:
        yield deployed


async def _room_of_writer(front: MatrixClient, alice: Account, index: int) -> str:
    """A new room of ``alice`` that the ``index``th writer writes."""
    for _ in range(100):
        created = await front.request("POST", "createRoom", json={}, token=alice)
        room_id = str(created.ok()["room_id"])
        if shard_of(room_id, 2) == index:
            return room_id
    raise AssertionError(f"no room of writer {index} in 100 creations")


def _has_to_device(kind: str) -> Any:
    def done(response: dict[str, Any]) -> bool:
        return any(e.get("type") == kind for e in response.get("to_device", {}).get("events", []))

    return done


async def test_a_four_process_deployment_federates_with_synapse(
    four: tuple[Nginx, Deployment], synapse_client: MatrixClient
) -> None:
    nginx, deployment = four
    async with new_session() as session:
        front = MatrixClient(session, nginx.base_url)
        reader = MatrixClient(session, deployment["reader"].base_url)
        url = deployment.database_url
        assert url is not None
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await until_lease_held(url, SHARE, "fed", TIMEOUT_SECONDS)
            alice = await front.register()
            bob = await synapse_client.register()
            rooms = [await _room_of_writer(front, alice, index) for index in (0, 1)]
            for room_id in rooms:
                invite = {"user_id": bob.user_id}
                path = f"rooms/{quote(room_id)}/invite"
                (await front.request("POST", path, json=invite, token=alice)).ok()
                await sync_until(synapse_client, bob, invited_to(room_id))
                (await synapse_client.request("POST", f"join/{quote(room_id)}", token=bob)).ok()
                await wait_until_joined(front, alice, room_id, bob.user_id, attempts=600)
            for n, room_id in enumerate(rooms):
                await say(front, room_id, alice, f"from the deployment {n}")
                await until_bodies(
                    synapse_client, bob, room_id, f"from the deployment {n}", TIMEOUT_SECONDS
                )
                await say(synapse_client, room_id, bob, f"from synapse {n}")
                await until_bodies(reader, alice, room_id, f"from synapse {n}", TIMEOUT_SECONDS)

            # Receipts both ways (the deployment's stored by the primary writer, sent by
            # the federation process; Synapse's taken in there, stored by the primary).
            room_id = rooms[1]
            last = await last_event_id(reader, alice, room_id)
            receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(last)}"
            (await front.request("POST", receipt, json={}, token=alice)).ok()
            await sync_until(synapse_client, bob, has_receipt(room_id, alice.user_id, last))
            await say(front, room_id, alice, "read this")
            await until_bodies(synapse_client, bob, room_id, "read this", TIMEOUT_SECONDS)
            mine = await last_event_id(synapse_client, bob, room_id)
            receipt = f"rooms/{quote(room_id)}/receipt/m.read/{quote(mine)}"
            (await synapse_client.request("POST", receipt, json={}, token=bob)).ok()
            await sync_until(reader, alice, has_receipt(room_id, bob.user_id, mine))

            # A to-device message from Synapse reaches the deployment user.
            to_device = {"messages": {alice.user_id: {"*": {"hello": "there"}}}}
            path = "sendToDevice/org.example.hello/txn1"
            (await synapse_client.request("PUT", path, json=to_device, token=bob)).ok()
            await sync_until(reader, alice, _has_to_device("org.example.hello"))

            # A room on Synapse joined from the deployment, by the room's writer.
            created = await synapse_client.request(
                "POST", "createRoom", json={"preset": "public_chat"}, token=bob
            )
            remote_room = str(created.ok()["room_id"])
            server = bob.user_id.split(":", 1)[1]
            path = f"join/{quote(remote_room)}?server_name={quote(server)}"
            (await front.request("POST", path, json={}, token=alice)).ok()
            await wait_until_joined(synapse_client, bob, remote_room, alice.user_id, attempts=600)
            await say(synapse_client, remote_room, bob, "welcome")
            await until_bodies(reader, alice, remote_room, "welcome", TIMEOUT_SECONDS)
            await say(front, remote_room, alice, "thanks")
            await until_bodies(synapse_client, bob, remote_room, "thanks", TIMEOUT_SECONDS)

            # An invite from Synapse (taken in by the primary writer) joined on invite.
            created = await synapse_client.request("POST", "createRoom", json={}, token=bob)
            private = str(created.ok()["room_id"])
            invite = {"user_id": alice.user_id}
            path = f"rooms/{quote(private)}/invite"
            (await synapse_client.request("POST", path, json=invite, token=bob)).ok()
            await sync_until(reader, alice, invited_to(private))
            (await front.request("POST", f"join/{quote(private)}", json={}, token=alice)).ok()
            await wait_until_joined(synapse_client, bob, private, alice.user_id, attempts=600)

            # The federation process killed: Synapse's transactions reach a writer
            # (nginx's backup), and a writer sends the deployment's events once the
            # sender's share is free; restarted, the process takes its share back.
            deployment["fed"].kill()
            await say(synapse_client, rooms[0], bob, "while fed is down")
            await until_bodies(reader, alice, rooms[0], "while fed is down", TIMEOUT_SECONDS)
            await say(front, rooms[0], alice, "sent while fed is down")
            await until_bodies(
                synapse_client, bob, rooms[0], "sent while fed is down", TAKEOVER_SECONDS
            )
            assert await lease_holder(url, SHARE) in ("writer", "writer2")
            deployment["fed"].start()
            await until_lease_held(url, SHARE, "fed", TIMEOUT_SECONDS)
            await say(front, rooms[0], alice, "fed is back")
            await until_bodies(synapse_client, bob, rooms[0], "fed is back", TIMEOUT_SECONDS)

    logs = {name: deployment[name].log() for name in ROLES}
    for name, log in logs.items():
        assert "Unhandled error" not in log, name
    assert "lease federation sender 1 of 1 taken by fed" in logs["fed"]
    assert "lease federation sender 1 of 1 handed back to fed" in logs["writer"] + logs["writer2"]
