"""End-to-end encryption through Peyvand with matrix-nio's real Olm and Megolm (issue #4):
users in an encrypted room read each other's messages, a user who joins later reads
what is sent after, the server only ever stores ``m.room.encrypted`` for them, and a
deleted device drops out of key queries, of other users' device lists and of to-device
delivery."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import nio
import pytest

from harness.client import DEFAULT_PASSWORD, Account, MatrixClient
from harness.nio_client import E2eeUser, ok
from harness.server import HomeserverProcess
from peyvand.config.loader import load_config

pytestmark = pytest.mark.clients

OVERALL_TIMEOUT_SECONDS = 120
MEGOLM = "m.megolm.v1.aes-sha2"
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}


MakeUser = Callable[[Account | None], Awaitable[E2eeUser]]


@pytest.fixture
async def make_user(
    homeserver: HomeserverProcess, client: MatrixClient, tmp_path: Path
) -> AsyncIterator[MakeUser]:
    """``await make_user(None)`` registers a user and logs in an encrypting nio device;
    ``await make_user(account)`` logs in another device of that account."""
    opened: list[nio.AsyncClient] = []

    async def make(account: Account | None) -> E2eeUser:
        if account is None:
            account = await client.register()
        store = tmp_path / f"store-{len(opened)}"
        store.mkdir()
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        nio_client = nio.AsyncClient(
            homeserver.base_url, account.user_id, store_path=str(store), config=config
        )
        opened.append(nio_client)
        ok(await nio_client.login(account.password, device_name="nio e2ee"), nio.LoginResponse)
        assert nio_client.olm is not None, "nio was installed without its e2e extra"
        user = E2eeUser(nio_client)
        await user.step()  # uploads device keys and one-time keys
        assert not nio_client.should_upload_keys
        return user

    try:
        yield make
    finally:
        for nio_client in opened:
            await nio_client.close()


async def _encrypted_room(owner: E2eeUser, invitees: Iterable[E2eeUser]) -> str:
    created = await owner.nio.room_create(name="secret chat", initial_state=[ENCRYPTION_STATE])
    room_id: str = ok(created, nio.RoomCreateResponse).room_id
    for invitee in invitees:
        await _join(owner, invitee, room_id)
    return room_id


async def _join(owner: E2eeUser, invitee: E2eeUser, room_id: str) -> None:
    """``owner`` invites ``invitee``, who sees the invite and joins; both see the join."""
    ok(await owner.nio.room_invite(room_id, invitee.user_id), nio.RoomInviteResponse)
    await invitee.step_until(lambda r: room_id in r.rooms.invite)
    ok(await invitee.nio.join(room_id), nio.JoinResponse)
    await invitee.step_until(lambda _: room_id in invitee.nio.rooms)
    assert invitee.nio.rooms[room_id].encrypted
    await owner.step_until(lambda _: invitee.user_id in owner.nio.rooms[room_id].users)


def _sqlite_rows(
    homeserver: HomeserverProcess, sql: str, args: tuple[Any, ...]
) -> list[tuple[str, ...]]:
    """Rows of text columns, read straight from the SQLite database file (read-only)."""
    path = load_config(homeserver.config_path).database.sqlite_path
    assert path and Path(path).exists(), path
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(str(v) for v in row) for row in connection.execute(sql, args)]
    finally:
        connection.close()


async def test_nio_encrypted_room(
    homeserver: HomeserverProcess, client: MatrixClient, make_user: MakeUser
) -> None:
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS):
        alice = await make_user(None)
        bob = await make_user(None)
        room_id = await _encrypted_room(alice, [bob])
        secret = uuid.uuid4().hex
        plaintexts: list[str] = []

        def text(label: str) -> str:
            plaintexts.append(f"{label} {secret}")
            return plaintexts[-1]

        # Both ways: each side decrypts the other's message with real Megolm.
        to_bob = text("hello bob")
        from_alice = await alice.send_text(room_id, to_bob)
        assert (await bob.decrypted(from_alice)).body == to_bob
        to_alice = text("hi alice")
        from_bob = await bob.send_text(room_id, to_alice)
        assert (await alice.decrypted(from_bob)).body == to_alice
        assert (await bob.decrypted(from_bob)).body == to_alice  # bob reads his own too
        for user, event_id in ((bob, from_alice), (alice, from_bob)):
            decrypted = user.events[event_id]
            assert decrypted.decrypted and decrypted.session_id, decrypted  # Megolm, not clear

        # Carol joins later and reads what both send after she joined.
        carol = await make_user(None)
        await _join(alice, carol, room_id)
        await bob.step_until(lambda _: carol.user_id in bob.nio.rooms[room_id].users)
        after_alice = text("welcome carol")
        after_alice_id = await alice.send_text(room_id, after_alice)
        after_bob = text("hello carol")
        after_bob_id = await bob.send_text(room_id, after_bob)
        assert (await carol.decrypted(after_alice_id)).body == after_alice
        assert (await carol.decrypted(after_bob_id)).body == after_bob
        assert (await bob.decrypted(after_alice_id)).body == after_alice
        assert (await alice.decrypted(after_bob_id)).body == after_bob

        # The server holds ciphertext only: /messages, as a member sees it raw...
        sent_ids = {from_alice, from_bob, after_alice_id, after_bob_id}
        page = (
            await client.request(
                "GET",
                f"rooms/{room_id}/messages",
                token=carol.nio.access_token,
                params={"dir": "b", "limit": "100"},
            )
        ).ok()
        raw = json.dumps(page)
        assert not [p for p in plaintexts if p in raw]
        assert secret not in raw
        timeline = [e for e in page["chunk"] if "state_key" not in e]
        assert sent_ids <= {e["event_id"] for e in timeline}
        for event in timeline:
            assert event["type"] == "m.room.encrypted", event
            assert event["content"]["algorithm"] == MEGOLM
            assert "ciphertext" in event["content"] and "body" not in event["content"]

        # ... and in the database itself (the SQLite file, read directly).
        if homeserver.backend == "sqlite":
            rows = _sqlite_rows(
                homeserver, "SELECT event_id, type, pdu FROM events WHERE room_id = ?", (room_id,)
            )
            stored = {event_id: (kind, json.loads(pdu)) for event_id, kind, pdu in rows}
            assert sent_ids <= set(stored)
            for event_id in sent_ids:
                kind, pdu = stored[event_id]
                assert kind == pdu["type"] == "m.room.encrypted", pdu
                assert "ciphertext" in pdu["content"] and "body" not in pdu["content"]
            assert not [r for r in rows if secret in r[2]]
            everywhere = _sqlite_rows(homeserver, "SELECT pdu FROM events", ())
            assert not [r for r in everywhere if secret in r[0]]

    assert "Unhandled error" not in homeserver.log()


async def test_nio_deleted_device(
    homeserver: HomeserverProcess, client: MatrixClient, make_user: MakeUser
) -> None:
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS):
        alice = await make_user(None)
        bob_account = await client.register()
        bob = await make_user(bob_account)
        bob_phone = await make_user(bob_account)
        doomed = bob_phone.device_id
        room_id = await _encrypted_room(alice, [bob])
        await bob_phone.step_until(lambda _: room_id in bob_phone.nio.rooms)

        # Alice knows both of Bob's devices, from nio's key query and from her own.
        await alice.step_until(lambda _: doomed in alice.nio.device_store[bob.user_id])
        query: dict[str, Any] = {"device_keys": {bob.user_id: []}}
        before = (
            await client.request("POST", "keys/query", json=query, token=alice.nio.access_token)
        ).ok()
        assert {bob.device_id, doomed} <= set(before["device_keys"][bob.user_id])

        # A to-device message waits for the phone, which will never sync for it.
        async def send_to_device(content: dict[str, Any], devices: dict[str, str]) -> None:
            messages = {bob.user_id: {d: {**content, "to": label} for d, label in devices.items()}}
            txn = uuid.uuid4().hex
            sent = await client.request(
                "PUT",
                f"sendToDevice/org.peyvand.test/{txn}",
                json={"messages": messages},
                token=alice.nio.access_token,
            )
            assert sent.ok() == {}

        await send_to_device({"when": "before"}, {doomed: "phone"})

        # Bob deletes the phone from his laptop, with the password.
        path = f"devices/{doomed}"
        first = await client.request("DELETE", path, json={}, token=bob.nio.access_token)
        assert first.status == 401 and "session" in first.body, first
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": bob.user_id},
            "password": DEFAULT_PASSWORD,
            "session": first.body["session"],
        }
        (await client.request("DELETE", path, json={"auth": auth}, token=bob.nio.access_token)).ok()

        # Alice's sync says Bob's devices changed; the phone is gone from /keys/query.
        await alice.step_until(lambda r: bob.user_id in r.device_list.changed)
        after = (
            await client.request("POST", "keys/query", json=query, token=alice.nio.access_token)
        ).ok()
        assert set(after["device_keys"][bob.user_id]) == {bob.device_id}
        await alice.step_until(lambda _: not alice.nio.should_query_keys)
        assert alice.nio.device_store[bob.user_id][doomed].deleted
        assert not alice.nio.device_store[bob.user_id][bob.device_id].deleted

        # Messages keep reaching the laptop, never the phone: its token is dead, and
        # whatever was addressed to it is dropped.
        await send_to_device({"when": "after"}, {doomed: "phone", "*": "every device"})
        await bob.step_until(
            lambda _: any(e.source["content"].get("when") == "after" for e in bob.to_device)
        )
        got = [e.source["content"] for e in bob.to_device if e.source["type"] == "org.peyvand.test"]
        assert got == [{"when": "after", "to": "every device"}]
        dead = await client.request("GET", "sync", token=bob_phone.nio.access_token)
        assert dead.status == 401 and dead.body["errcode"] == "M_UNKNOWN_TOKEN", dead
        if homeserver.backend == "sqlite":
            inbox = _sqlite_rows(
                homeserver,
                "SELECT device_id FROM device_inbox WHERE user_id = ? AND device_id = ?",
                (bob.user_id, doomed),
            )
            assert inbox == []

        # A new login that reuses the phone's device ID starts with an empty inbox.
        relogin = await client.request(
            "POST",
            "login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": bob.user_id},
                "password": DEFAULT_PASSWORD,
                "device_id": doomed,
            },
        )
        token = relogin.ok()["access_token"]
        fresh = (await client.request("GET", "sync", token=token)).ok()
        events = fresh.get("to_device", {}).get("events", [])
        assert not [e for e in events if e["type"] == "org.peyvand.test"], events

        # An encrypted message after the deletion still reaches the laptop.
        body = f"still here {uuid.uuid4().hex}"
        event_id = await alice.send_text(room_id, body)
        assert (await bob.decrypted(event_id)).body == body

    assert "Unhandled error" not in homeserver.log()
