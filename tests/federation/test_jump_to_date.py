"""Jump to date across Peyvand and its peer, a real Synapse or a second Peyvand, on every
backend (Client-Server API GET /rooms/{roomId}/timestamp_to_event, Server-Server API GET
/timestamp_to_event).

- A room created on the peer has history Peyvand never saw (it joined later): Peyvand
  asks the peer, backfills the event named and answers with it, both ways in time; the
  client can then read around it with /context.
- The peer asks Peyvand the same about a Peyvand room it joined late, and gets Peyvand's
  event.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair
from harness.rooms import create_room, say
from harness.sync import wait_until_joined

TIMEOUT_SECONDS = 60


async def _timestamp(client: MatrixClient, account: Account, room_id: str, event_id: str) -> int:
    event = await client.request("GET", f"rooms/{quote(room_id)}/event/{event_id}", token=account)
    ts: int = event.ok()["origin_server_ts"]
    return ts


async def _history(
    client: MatrixClient, account: Account, room_id: str, count: int
) -> list[tuple[str, int]]:
    """``count`` messages at least 5 ms apart: their IDs and timestamps."""
    sent = []
    for i in range(count):
        await asyncio.sleep(0.005)
        event_id = await say(client, room_id, account, f"history {i}")
        sent.append((event_id, await _timestamp(client, account, room_id, event_id)))
    return sent


async def _jump(
    client: MatrixClient, account: Account, room_id: str, ts: int, direction: str
) -> dict[str, int | str]:
    response = await client.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event",
        token=account,
        params={"ts": str(ts), "dir": direction},
    )
    found: dict[str, int | str] = response.ok()
    return found


async def _join(client: MatrixClient, account: Account, room_id: str, via: str) -> None:
    path = f"join/{quote(room_id)}?server_name={quote(via)}"
    (await client.request("POST", path, json={}, token=account)).ok()


async def test_peyvand_finds_history_it_lacks_through_the_peer(pair: Pair) -> None:
    _, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await create_room(peer_client, bob, preset="public_chat")
        history = await _history(peer_client, bob, room_id, 4)
        await asyncio.sleep(0.05)
        await _join(peyvand_client, alice, room_id, peer.server_name)
        await wait_until_joined(peyvand_client, alice, room_id, bob.user_id, attempts=600)
        (second, t2), (third, t3) = history[1], history[2]
        unknown = await peyvand_client.request(
            "GET", f"rooms/{quote(room_id)}/event/{second}", token=alice
        )
        assert unknown.status == 404  # Peyvand joined after it: not held here yet

        # Forwards from the second message: Peyvand's own first event (the join) cites
        # events it lacks, so it asks the peer and answers with what the peer names.
        assert await _jump(peyvand_client, alice, room_id, t2, "f") == {
            "event_id": second,
            "origin_server_ts": t2,
        }
        # Backwards: nothing here is that old.
        assert await _jump(peyvand_client, alice, room_id, t3, "b") == {
            "event_id": third,
            "origin_server_ts": t3,
        }
        # The event is held now: the client reads around it.
        context = await peyvand_client.request(
            "GET", f"rooms/{quote(room_id)}/context/{second}", token=alice
        )
        assert context.ok()["event"]["content"]["body"] == "history 1"


async def test_the_peer_asks_peyvand(pair: Pair) -> None:
    peyvand, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        room_id = await create_room(peyvand_client, alice, preset="public_chat")
        history = await _history(peyvand_client, alice, room_id, 3)
        await asyncio.sleep(0.05)
        await _join(peer_client, bob, room_id, peyvand.server_name)
        await wait_until_joined(peer_client, bob, room_id, alice.user_id, attempts=600)
        second, t2 = history[1]
        found = await _jump(peer_client, bob, room_id, t2, "f")
    assert found == {"event_id": second, "origin_server_ts": t2}
