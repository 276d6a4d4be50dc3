"""A client's view of rooms: /sync, once or long-polled until a condition holds
(Client-Server API, "Syncing"), and waiting on joined members
(``GET /rooms/{roomId}/joined_members``).

The callers bound the time (``asyncio.timeout``); ``wait_until_joined`` also bounds its
own attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient


async def sync(client: MatrixClient, account: Account, **params: str) -> dict[str, Any]:
    """One /sync with ``params`` as its query string; the response."""
    body: dict[str, Any] = (await client.request("GET", "sync", token=account, params=params)).ok()
    return body


async def sync_since(
    client: MatrixClient, account: Account, since: str | None = None, timeout_ms: int = 0
) -> dict[str, Any]:
    """One /sync from ``since`` (an initial sync without), waiting at most ``timeout_ms``."""
    params = {"timeout": str(timeout_ms)}
    if since is not None:
        params["since"] = since
    return await sync(client, account, **params)


async def sync_until(
    client: MatrixClient,
    account: Account,
    done: Callable[[dict[str, Any]], bool],
    since: str | None = None,
) -> dict[str, Any]:
    """Long-poll /sync (from ``since``) until ``done`` holds for a response; that response."""
    while True:
        params = {"timeout": "1000"}
        if since is not None:
            params["since"] = since
        response = (await client.request("GET", "sync", token=account, params=params)).ok()
        if done(response):
            return dict(response)
        since = response["next_batch"]


def invited_to(room_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``sync_until`` condition: the response lists an invite to ``room_id``."""
    return lambda r: room_id in r.get("rooms", {}).get("invite", {})


def knocked_on(room_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``sync_until`` condition: the response lists a knock on ``room_id``."""
    return lambda r: room_id in r.get("rooms", {}).get("knock", {})


async def wait_until_joined(
    client: MatrixClient, account: Account, room_id: str, user_id: str, attempts: int
) -> None:
    """Poll ``account``'s joined members of ``room_id`` every 100 ms until ``user_id`` is
    one, at most ``attempts`` times; fail if they never are."""
    for _ in range(attempts):
        members = (
            await client.request("GET", f"rooms/{quote(room_id)}/joined_members", token=account)
        ).ok()["joined"]
        if user_id in members:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user_id} never appeared in {room_id}")
