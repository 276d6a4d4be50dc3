"""Disappearing messages (docs/compliance.md, "Disappearing messages") against a real
Peyvand, on every backend.

A room admin sets a 30 s timer (the state event ``io.peyvand.disappearing``); a text
message and an image sent after it are gone for the other local user within 90 s of
being sent (the acceptance test of issue 7): from /messages, an initial /sync, /context,
GET /event and the unread counts (seen through matrix-nio), the image's download and
its file, and every database row holding the message body. What was sent before the
timer, after it was turned off, or in a room under a legal hold stays; the room keeps
working. Malformed timers, timers out of range and timers from users below the room's
``state_default`` are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import struct
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import nio

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session
from harness.database import query
from harness.nio_client import new_client, ok, sync_until, timeline
from harness.server import HomeserverProcess

TIMER = "io.peyvand.disappearing"
TIMER_MS = 30_000
# The defaults of [disappearing] (the session's server runs with them).
MIN_TIMER_MS = 30_000
MAX_TIMER_MS = 28 * 24 * 3600 * 1000
# Issue 7: "a message and its image vanish for local users within 90 s".
VANISH_SECONDS = 90.0
WAIT_SECONDS = 30.0
ADMIN = "/_peyvand/admin/v1"
MEDIA = "/_matrix/client/v1/media"
WHOLE_TIMELINE: dict[str, Any] = {"room": {"timeline": {"limit": 100}}}

_txn = itertools.count(1)


def _png(marker: str) -> bytes:
    """A valid 4x4 PNG whose bytes (and so its SHA-256 blob) no other test shares."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    rows = (b"\0" + b"\x10\x20\x30" * 4) * 4
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\0" + marker.encode())
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def _upload(http: aiohttp.ClientSession, base_url: str, account: Account, data: bytes) -> str:
    async with http.post(
        f"{base_url}/_matrix/media/v3/upload",
        data=data,
        headers={"Authorization": f"Bearer {account.access_token}", "Content-Type": "image/png"},
        params={"filename": "vanishing.png"},
    ) as response:
        body = await response.json(content_type=None)
        assert response.status == 200, body
        uri: str = body["content_uri"]
        return uri


async def _send(client: MatrixClient, account: Account, room_id: str, content: Any) -> str:
    answer = await client.request(
        "PUT", f"rooms/{room_id}/send/m.room.message/v{next(_txn)}", json=content, token=account
    )
    event_id: str = answer.ok()["event_id"]
    return event_id


async def _set_timer(
    client: MatrixClient, account: Account, room_id: str, content: Any, state_key: str = ""
) -> tuple[int, Any]:
    answer = await client.request(
        "PUT", f"rooms/{room_id}/state/{TIMER}/{state_key}", json=content, token=account
    )
    return answer.status, answer.body


async def _public_room(client: MatrixClient, creator: Account, name: str) -> str:
    created = await client.request(
        "POST", "createRoom", json={"preset": "public_chat", "name": name}, token=creator
    )
    room_id: str = created.ok()["room_id"]
    return room_id


async def _nio_join(bob: nio.AsyncClient, room_id: str) -> None:
    ok(await bob.join(room_id), nio.JoinResponse)
    async with asyncio.timeout(WAIT_SECONDS):
        await sync_until(bob, lambda r: room_id in r.rooms.join)


async def _expiry(server: HomeserverProcess, event_id: str) -> int | None:
    rows = await query(server, "SELECT expires_ts FROM event_expiry WHERE event_id = $1", event_id)
    return int(rows[0][0]) if rows else None


def _blob(server: HomeserverProcess, data: bytes) -> Path:
    sha256 = hashlib.sha256(data).hexdigest()
    return server.data_dir / "media" / "blobs" / sha256[:2] / sha256[2:4] / sha256


async def _initial_sync(base_url: str, bob: nio.AsyncClient) -> nio.SyncResponse:
    """An initial /sync of bob's device (no since token), through a second nio client."""
    fresh = nio.AsyncClient(
        base_url, bob.user_id, config=nio.AsyncClientConfig(encryption_enabled=False)
    )
    fresh.user_id, fresh.device_id, fresh.access_token = (
        bob.user_id,
        bob.device_id,
        bob.access_token,
    )
    try:
        return ok(await fresh.sync(timeout=0, sync_filter=WHOLE_TIMELINE), nio.SyncResponse)
    finally:
        await fresh.close()


async def _unread(base_url: str, bob: nio.AsyncClient, room_id: str) -> int:
    room = (await _initial_sync(base_url, bob)).rooms.join[room_id]
    count: int = room.unread_notifications.notification_count
    return count


async def _messages(bob: nio.AsyncClient, room_id: str) -> set[str]:
    page = ok(await bob.room_messages(room_id, limit=100), nio.RoomMessagesResponse)
    return {event.event_id for event in page.chunk}


async def test_messages_and_their_image_vanish_for_local_users_within_90s(
    homeserver: HomeserverProcess, client: MatrixClient, tmp_path: Path
) -> None:
    base_url = homeserver.base_url
    secret = f"vanishing secret {uuid.uuid4()}"
    image = _png(secret)
    admin = await login_admin(client, homeserver)
    alice = await client.register()
    bob = await new_client(base_url, tmp_path)
    async with new_session() as http:
        try:
            # Room A: a message before the timer, a 30 s timer, a text and an image
            # (bob is mentioned: his notifications go with them), the timer off, a message.
            room = await _public_room(client, alice, "vanishing")
            await _nio_join(bob, room)
            before = await _send(client, alice, room, {"msgtype": "m.text", "body": "kept"})
            assert (await _set_timer(client, alice, room, {"timer_ms": TIMER_MS}))[0] == 200
            sent_at = time.monotonic()
            text = await _send(
                client,
                alice,
                room,
                {"msgtype": "m.text", "body": f"{secret} for {bob.user_id}"},
            )
            mxc = await _upload(http, base_url, alice, image)
            origin, media_id = mxc.removeprefix("mxc://").split("/")
            picture = await _send(
                client,
                alice,
                room,
                {
                    "msgtype": "m.image",
                    "body": f"{secret}.png",
                    "url": mxc,
                    "info": {"mimetype": "image/png"},
                },
            )
            assert (await _set_timer(client, alice, room, {}))[0] == 200
            after = await _send(client, alice, room, {"msgtype": "m.text", "body": "stays"})

            # Room B: the same timer under a legal hold.
            held_room = await _public_room(client, alice, "held")
            await _nio_join(bob, held_room)
            hold = await client.request(
                "POST",
                f"{ADMIN}/legal_holds",
                json={"kind": "room", "target": held_room, "case_id": "V-1", "reason": "test"},
                token=admin,
            )
            hold.ok()
            assert (await _set_timer(client, alice, held_room, {"timer_ms": TIMER_MS}))[0] == 200
            held = await _send(client, alice, held_room, {"msgtype": "m.text", "body": secret})

            # Everything arrived: bob sees it, the timers are set where they should be.
            assert {before, text, picture, after} <= await _messages(bob, room)
            first = await _initial_sync(base_url, bob)
            assert {text, picture} <= {e.event_id for e in timeline(first, room)}
            unread_before = await _unread(base_url, bob, room)
            assert unread_before >= 3  # before, text, picture (after too, maybe)
            sent = {
                e.event_id: e.server_timestamp
                for e in timeline(first, room) + timeline(first, held_room)
            }
            assert await _expiry(homeserver, text) == sent[text] + TIMER_MS
            assert await _expiry(homeserver, picture) == sent[picture] + TIMER_MS
            assert await _expiry(homeserver, held) == sent[held] + TIMER_MS
            assert await _expiry(homeserver, before) is None
            assert await _expiry(homeserver, after) is None
            download = f"{base_url}{MEDIA}/download/{origin}/{media_id}"
            async with http.get(download, headers=_auth(alice)) as response:
                assert response.status == 200 and await response.read() == image
            assert _blob(homeserver, image).is_file()
            timers = await client.request(
                "GET", f"{ADMIN}/rooms/{held_room}/retention", token=admin
            )
            assert timers.ok()["disappearing_timer_ms"] == TIMER_MS
            timers = await client.request("GET", f"{ADMIN}/rooms/{room}/retention", token=admin)
            assert timers.ok()["disappearing_timer_ms"] is None

            # Bounded wait: the text and the image gone, the held message looked at
            # (its expiry postponed a day) but kept.
            while True:
                text_status = (await bob.room_get_event(room, text)).transport_response.status
                image_status = (await bob.room_get_event(room, picture)).transport_response.status
                async with http.get(download, headers=_auth(bob.access_token)) as response:
                    media_status = response.status
                held_expiry = await _expiry(homeserver, held)
                done = (
                    (text_status, image_status, media_status) == (404, 404, 404)
                    and not _blob(homeserver, image).exists()
                    and held_expiry is not None
                    and held_expiry > sent[held] + 3600 * 1000
                )
                if done:
                    break
                assert time.monotonic() - sent_at < VANISH_SECONDS, (
                    f"still there after {VANISH_SECONDS:.0f} s: event {text_status}, "
                    f"image event {image_status}, media {media_status}, held expiry {held_expiry}"
                )
                await asyncio.sleep(1)
            elapsed = time.monotonic() - sent_at
            assert elapsed < VANISH_SECONDS

            # Gone for bob everywhere the client API shows messages.
            assert (
                ok(await bob.room_get_event(room, text), nio.RoomGetEventError).status_code
                == "M_NOT_FOUND"
            )
            for event_id in (text, picture):
                context = await bob.room_context(room, event_id)
                assert isinstance(context, nio.RoomContextError), context
                assert context.transport_response.status == 404
            remaining = await _messages(bob, room)
            assert not {text, picture} & remaining
            assert {before, after} <= remaining
            fresh = await _initial_sync(base_url, bob)
            visible = {e.event_id for e in timeline(fresh, room)}
            assert not {text, picture} & visible
            assert {before, after} <= visible
            assert secret not in json.dumps(fresh.rooms.join[room].timeline.events, default=repr)
            assert (
                fresh.rooms.join[room].unread_notifications.notification_count == unread_before - 2
            )

            # The image and its bytes are gone; no row holds the body.
            async with http.get(download, headers=_auth(alice)) as response:
                assert response.status == 404
            assert not _blob(homeserver, image).exists()
            assert (
                await query(homeserver, "SELECT 1 FROM media WHERE media_id = $1", media_id) == []
            )
            like = f"%{secret}%"
            assert await query(
                homeserver, "SELECT event_id FROM events WHERE pdu LIKE $1", like
            ) == [(held,)]
            purged = await query(
                homeserver,
                "SELECT event_id, status, pdu FROM event_outliers WHERE event_id IN ($1, $2)",
                text,
                picture,
            )
            assert sorted((row[0], row[1]) for row in purged) == sorted(
                [(text, "purged"), (picture, "purged")]
            )
            for _, _, pdu in purged:
                assert json.loads(pdu)["content"] == {}
            assert (
                await query(homeserver, "SELECT 1 FROM event_outliers WHERE pdu LIKE $1", like)
                == []
            )
            for table in (
                "push_room_notifications",
                "push_user_exceptions",
                "event_media",
                "event_expiry",
            ):
                rows = await query(
                    homeserver, f"SELECT 1 FROM {table} WHERE event_id IN ($1, $2)", text, picture
                )
                assert rows == [], table

            # The held message stays; so does the room.
            ok(await bob.room_get_event(held_room, held), nio.RoomGetEventResponse)
            assert held in await _messages(bob, held_room)
            new = await _send(client, alice, room, {"msgtype": "m.text", "body": "still here"})
            async with asyncio.timeout(WAIT_SECONDS):
                await sync_until(bob, lambda r: new in {e.event_id for e in timeline(r, room)})
            name = await client.request("GET", f"rooms/{room}/state/m.room.name", token=alice)
            assert name.ok() == {"name": "vanishing"}
            timer = await client.request("GET", f"rooms/{room}/state/{TIMER}", token=alice)
            assert timer.ok() == {}
            assert await _expiry(homeserver, new) is None
        finally:
            await bob.close()


async def test_timers_are_checked_when_set(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice, bob = await client.register(), await client.register()
    room = await _public_room(client, alice, "timers")
    (await client.request("POST", f"join/{room}", json={}, token=bob)).ok()

    for content in (
        {"timer_ms": "30000"},
        {"timer_ms": 30000.5},
        {"timer_ms": True},
        {"timer_ms": None},
        {"timer_ms": [30000]},
        {"timer_ms": MIN_TIMER_MS - 1},
        {"timer_ms": MAX_TIMER_MS + 1},
        {"timer_ms": 0},
        {"timer_ms": -TIMER_MS},
    ):
        status, body = await _set_timer(client, alice, room, content)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), content
    status, body = await _set_timer(client, alice, room, {"timer_ms": TIMER_MS}, state_key="x")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    as_message = await client.request(
        "PUT", f"rooms/{room}/send/{TIMER}/t{next(_txn)}", json={"timer_ms": TIMER_MS}, token=alice
    )
    assert (as_message.status, as_message.body["errcode"]) == (400, "M_INVALID_PARAM")
    in_create = await client.request(
        "POST",
        "createRoom",
        json={"initial_state": [{"type": TIMER, "content": {"timer_ms": "soon"}}]},
        token=alice,
    )
    assert (in_create.status, in_create.body["errcode"]) == (400, "M_BAD_JSON")
    missing = await client.request("GET", f"rooms/{room}/state/{TIMER}", token=alice)
    assert missing.status == 404

    # The room's state_default (50): the creator may, a plain member may not.
    status, body = await _set_timer(client, bob, room, {"timer_ms": TIMER_MS})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    for content in ({"timer_ms": MIN_TIMER_MS}, {"timer_ms": MAX_TIMER_MS}, {}):
        status, body = await _set_timer(client, alice, room, content)
        assert status == 200, body
        current = await client.request("GET", f"rooms/{room}/state/{TIMER}", token=bob)
        assert current.ok() == content
    # Without the trailing slash too, and set at creation.
    slashless = await client.request(
        "PUT", f"rooms/{room}/state/{TIMER}", json={"timer_ms": TIMER_MS}, token=alice
    )
    assert slashless.status == 200, slashless.body
    created = await client.request(
        "POST",
        "createRoom",
        json={"initial_state": [{"type": TIMER, "content": {"timer_ms": TIMER_MS}}]},
        token=alice,
    )
    new_room = created.ok()["room_id"]
    timer = await client.request("GET", f"rooms/{new_room}/state/{TIMER}", token=alice)
    assert timer.ok() == {"timer_ms": TIMER_MS}
    # Still an ordinary room afterwards.
    await _send(client, alice, room, {"msgtype": "m.text", "body": "after the checks"})


def _auth(token: Account | str) -> dict[str, str]:
    access_token = token.access_token if isinstance(token, Account) else token
    return {"Authorization": f"Bearer {access_token}"}
