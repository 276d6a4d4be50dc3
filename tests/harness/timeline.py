"""A room's recent timeline as a client reads it from ``GET /rooms/{roomId}/messages``
(Client-Server API, "Getting events for a room"), newest page backwards."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient


async def recent_events(
    client: MatrixClient, account: Account, room_id: str, limit: int
) -> list[dict[str, Any]]:
    """The room's latest ``limit`` events that ``account`` may see, newest first."""
    response = (
        await client.request(
            "GET",
            f"rooms/{quote(room_id)}/messages",
            token=account,
            params={"dir": "b", "limit": str(limit)},
        )
    ).ok()
    return list(response["chunk"])


async def message_bodies(
    client: MatrixClient, account: Account, room_id: str, limit: int
) -> list[str]:
    """The text bodies of the room's ``m.room.message`` events among its latest ``limit``
    events, oldest first."""
    return [
        e["content"]["body"]
        for e in reversed(await recent_events(client, account, room_id, limit))
        if e["type"] == "m.room.message" and isinstance(e["content"].get("body"), str)
    ]


async def until_bodies(
    client: MatrixClient, account: Account, room_id: str, body: str, seconds: int
) -> None:
    """Read the room's latest messages every 100 ms until ``body`` is among them, for at
    most ``seconds``."""
    for _ in range(seconds * 10):
        if body in await message_bodies(client, account, room_id, 50):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{body!r} never reached {account.user_id} in {room_id}")


async def last_event_id(client: MatrixClient, account: Account, room_id: str) -> str:
    """The ID of the room's latest event ``account`` may see."""
    return str((await recent_events(client, account, room_id, 1))[0]["event_id"])
