"""matrix-nio helpers shared by the client tests: a registered and logged-in client,
bounded-by-the-caller sync loops and a room two clients share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nio
import pytest

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


E2EE_SYNC_TIMEOUT_MS = 1000
MAX_SYNC_ROUNDS = 40


class E2eeUser:
    """One nio device with encryption on, and what its syncs delivered per event ID."""

    def __init__(self, nio_client: nio.AsyncClient) -> None:
        self.nio = nio_client
        self.events: dict[str, nio.Event] = {}
        self.to_device: list[nio.ToDeviceEvent | nio.UnknownToDeviceEvent] = []

    @property
    def user_id(self) -> str:
        user_id: str = self.nio.user_id
        return user_id

    @property
    def device_id(self) -> str:
        device_id: str = self.nio.device_id
        return device_id

    async def step(self) -> nio.SyncResponse:
        """One round of what ``sync_forever`` does: sync, send queued to-device messages,
        upload, query and claim keys as nio asks; undecrypted events are retried."""
        response = ok(await self.nio.sync(timeout=E2EE_SYNC_TIMEOUT_MS), nio.SyncResponse)
        await self.nio.send_to_device_messages()
        if self.nio.should_upload_keys:
            ok(await self.nio.keys_upload(), nio.KeysUploadResponse)
        if self.nio.should_query_keys:
            ok(await self.nio.keys_query(), nio.KeysQueryResponse)
        if self.nio.should_claim_keys:
            users = self.nio.get_users_for_key_claiming()
            ok(await self.nio.keys_claim(users), nio.KeysClaimResponse)
        for room in response.rooms.join.values():
            for event in room.timeline.events:
                self.events[event.event_id] = event
        self.to_device.extend(response.to_device_events)
        for event_id, event in list(self.events.items()):
            if isinstance(event, nio.MegolmEvent):
                with contextlib.suppress(nio.EncryptionError):  # no room key yet
                    self.events[event_id] = self.nio.decrypt_event(event)
        return response

    async def step_until(self, done: Callable[[nio.SyncResponse], bool]) -> None:
        """Step until ``done`` holds for a sync response, at most ``MAX_SYNC_ROUNDS``."""
        for _ in range(MAX_SYNC_ROUNDS):
            if done(await self.step()):
                return
        pytest.fail(f"{self.user_id}/{self.device_id}: condition not met after sync rounds")

    async def decrypted(self, event_id: str) -> nio.RoomMessageText:
        """Step until the event has arrived and decrypted; it must be a text message."""
        await self.step_until(lambda _: isinstance(self.events.get(event_id), nio.RoomMessageText))
        event = self.events[event_id]
        assert isinstance(event, nio.RoomMessageText)
        return event

    async def send_text(self, room_id: str, body: str) -> str:
        content = {"msgtype": "m.text", "body": body}
        sent = await self.nio.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        event_id: str = ok(sent, nio.RoomSendResponse).event_id
        return event_id
