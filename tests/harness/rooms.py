"""Rooms as the client tests set them up: a room created (Client-Server API, "POST
/createRoom"), a message sent ("PUT /rooms/{roomId}/send/{eventType}/{txnId}") and a
public room two users share."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient

_txn = itertools.count()


async def create_room(client: MatrixClient, account: Account, **body: object) -> str:
    """``account`` creates a room with ``body`` as the request; its ID."""
    created = await client.request("POST", "createRoom", json=body, token=account)
    room_id: str = created.ok()["room_id"]
    return room_id


async def say(client: MatrixClient, room_id: str, account: Account, text: str, **extra: Any) -> str:
    """``account`` sends ``text`` as an ``m.text`` message to ``room_id`` (``extra``: more
    of its content, ``m.mentions`` say); its event ID."""
    response = await client.request(
        "PUT",
        f"rooms/{quote(room_id)}/send/m.room.message/say{next(_txn)}",
        json={"msgtype": "m.text", "body": text, **extra},
        token=account,
    )
    event_id: str = response.ok()["event_id"]
    return event_id


async def shared_room(client: MatrixClient) -> tuple[Account, Account, str]:
    """Two new users: alice, bob, and alice's public room, which bob has joined."""
    alice, bob = await client.register(), await client.register()
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat"}, token=alice
    )
    room_id: str = created.ok()["room_id"]
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    return alice, bob, room_id


async def put_state(
    client: MatrixClient,
    account: Account,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    state_key: str = "",
) -> str:
    """``account`` sets a state event of ``room_id``; its event ID."""
    path = f"rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}"
    event_id: str = (await client.request("PUT", path, json=content, token=account)).ok()[
        "event_id"
    ]
    return event_id
