"""matrix-nio helpers shared by the client tests: a registered and logged-in client,
bounded-by-the-caller sync loops and a room two clients share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nio

from harness.client import DEFAULT_PASSWORD, unique_localpart

SYNC_TIMEOUT_MS = 2000

T = TypeVar("T")


def ok(response: Any, kind: type[T]) -> T:
    """``response`` if nio parsed it as ``kind``, else the test fails with the error."""
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


async def new_client(base_url: str, store: Path) -> nio.AsyncClient:
    """A nio client that registers and logs in a fresh user (``store`` is a tmp dir)."""
    localpart = unique_localpart("nio")
    client = nio.AsyncClient(base_url, localpart, store_path=str(store))
    ok(await client.register(localpart, DEFAULT_PASSWORD), nio.RegisterResponse)
    # Log in again (a second device), as a real client would after registering.
    client.access_token = ""
    ok(await client.login(DEFAULT_PASSWORD, device_name="nio test"), nio.LoginResponse)
    return client


async def sync_until(client: nio.AsyncClient, done: Callable[[nio.SyncResponse], bool]) -> None:
    """Sync (long-polling) until ``done`` holds for a sync response; the caller bounds it."""
    while True:
        response = ok(await client.sync(timeout=SYNC_TIMEOUT_MS), nio.SyncResponse)
        if done(response):
            return


def timeline(response: nio.SyncResponse, room_id: str) -> list[nio.Event]:
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room is not None else []


async def shared_room(alice: nio.AsyncClient, bob: nio.AsyncClient) -> str:
    """A creates a room and invites B; B sees the invite in sync and joins; A sees B join."""
    ok(await alice.sync(timeout=0), nio.SyncResponse)
    ok(await bob.sync(timeout=0), nio.SyncResponse)
    created = ok(await alice.room_create(name="nio chat"), nio.RoomCreateResponse)
    room_id: str = created.room_id
    ok(await alice.room_invite(room_id, bob.user_id), nio.RoomInviteResponse)
    await sync_until(bob, lambda r: room_id in r.rooms.invite)
    assert room_id in bob.invited_rooms
    ok(await bob.join(room_id), nio.JoinResponse)
    await sync_until(bob, lambda r: room_id in r.rooms.join)
    await sync_until(alice, lambda r: bob.user_id in alice.rooms[room_id].users)
    assert bob.rooms[room_id].name == "nio chat"
    return room_id
