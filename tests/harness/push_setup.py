"""What the push tests set up through the Client-Server API: a pusher registered
(``POST /pushers/set``), the pushers listed (``GET /pushers``) and a named room where one
user pushes to another."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.rooms import create_room
from harness.sygnal import SygnalProcess
from harness.webpush import WebPushReceiver, WebPushSubscription

ROOM_NAME = "Push test room"


@dataclass(frozen=True, slots=True)
class PushRoom:
    """``alice`` (who registers pushers) and ``bob`` (who talks) in ``room_id``, named
    ``ROOM_NAME``; ``others`` joined too (a room of more than two is not one-to-one)."""

    alice: Account
    bob: Account
    room_id: str
    others: tuple[Account, ...]


async def push_room(client: MatrixClient, *, others: int = 0) -> PushRoom:
    alice, bob = await client.register(), await client.register()
    room_id = await create_room(client, bob, preset="public_chat", name=ROOM_NAME)
    extra = tuple([await client.register() for _ in range(others)])
    for account in (alice, *extra):
        (await client.request("POST", f"join/{quote(room_id)}", json={}, token=account)).ok()
    return PushRoom(alice, bob, room_id, extra)


async def set_pusher(client: MatrixClient, account: Account, body: dict[str, Any]) -> None:
    (await client.request("POST", "pushers/set", json=body, token=account)).ok()


async def subscribe_through(
    client: MatrixClient,
    account: Account,
    sygnal: SygnalProcess,
    receiver: WebPushReceiver,
    **changes: Any,
) -> WebPushSubscription:
    """A new subscription at ``receiver``, and ``account``'s pusher for it through
    ``sygnal`` (``changes`` as for ``SygnalProcess.pusher``)."""
    subscription = receiver.subscribe()
    await set_pusher(client, account, sygnal.pusher(subscription, **changes))
    return subscription


async def pushers(client: MatrixClient, account: Account) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.request("GET", "pushers", token=account)).ok()[
        "pushers"
    ]
    return found


async def wait_for_no_pushers(client: MatrixClient, account: Account, within: float) -> None:
    """Poll ``GET /pushers`` until it lists none; ``AssertionError`` after ``within`` s."""
    deadline = time.monotonic() + within
    while found := await pushers(client, account):
        assert time.monotonic() < deadline, f"pushers still there after {within} s: {found}"
        await asyncio.sleep(0.2)


async def read_up_to(client: MatrixClient, account: Account, room_id: str, event_id: str) -> None:
    """``account`` sends an ``m.read`` receipt for ``event_id``."""
    path = f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    (await client.request("POST", path, json={}, token=account)).ok()
