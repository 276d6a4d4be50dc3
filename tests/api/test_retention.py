"""Retention (docs/compliance.md, "Retention") against a running server, on every backend.

A room with ``m.room.retention`` ``max_lifetime`` of one day: a purge run evaluated one
day after a boundary time removes everything sent before it (messages, an image and its
file, a superseded topic) from the API, the database and the disk, and keeps what came
after, the room's current state and a working room. A room under a legal hold keeps
everything. The run is asked for through the admin API with ``now_ts`` (the policy
evaluated a day later) so the test needs no day to pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session
from harness.database import query
from harness.server import HomeserverProcess

ADMIN = "/_peyvand/admin/v1"
DAY_MS = 86_400_000
OLD_SECRET = "old secret number"
NEW_TEXT = "a newer message"

_txn = itertools.count(1)


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Room:
    room_id: str
    old_ids: list[str]
    new_ids: list[str]
    old_image: str
    new_image: str
    old_sha256: str
    new_sha256: str
    boundary_ts: int


@pytest.fixture
async def client(private_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, private_homeserver.base_url)


async def _send(client: MatrixClient, account: Account, room_id: str, content: Any) -> str:
    path = f"rooms/{room_id}/send/m.room.message/r{next(_txn)}"
    body = (await client.request("PUT", path, json=content, token=account)).ok()
    return str(body["event_id"])


async def _upload(client: MatrixClient, account: Account, data: bytes) -> str:
    async with (
        new_session() as session,
        session.post(
            f"{client.base_url}/_matrix/media/v3/upload",
            data=data,
            headers={
                "Authorization": f"Bearer {account.access_token}",
                "Content-Type": "image/png",
            },
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["content_uri"])


async def _room(client: MatrixClient, alice: Account, bob: Account, name: str) -> Room:
    """A two-member room with a one-day max_lifetime; old history, a boundary, new
    history."""
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "name": name,
                "invite": [bob.user_id],
                "initial_state": [
                    {"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}
                ],
            },
            token=alice,
        )
    ).ok()["room_id"]
    (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()
    # Different bytes per room: identical files are stored once.
    shade = len(name)
    old_png, new_png = _png((200, shade, 10)), _png((10, 200, shade))
    old_image = await _upload(client, alice, old_png)
    old_ids = [
        await _send(client, alice, room_id, {"msgtype": "m.text", "body": f"{OLD_SECRET} {i}"})
        for i in range(5)
    ]
    old_ids.append(
        await _send(
            client,
            alice,
            room_id,
            {"msgtype": "m.image", "body": "old.png", "url": old_image},
        )
    )
    topic = f"rooms/{room_id}/state/m.room.topic/"
    first_topic = (
        await client.request("PUT", topic, json={"topic": f"{OLD_SECRET} topic"}, token=alice)
    ).ok()["event_id"]
    old_ids.append(first_topic)
    # Bob reads the old history: his receipt then points at a purged event.
    receipt = f"rooms/{room_id}/receipt/m.read/{old_ids[-2]}"
    (await client.request("POST", receipt, json={}, token=bob)).ok()
    await asyncio.sleep(1.1)
    boundary_ts = int(time.time() * 1000)
    await asyncio.sleep(1.1)
    (await client.request("PUT", topic, json={"topic": "current topic"}, token=alice)).ok()
    new_image = await _upload(client, alice, new_png)
    new_ids = [
        await _send(client, alice, room_id, {"msgtype": "m.text", "body": NEW_TEXT}),
        await _send(
            client,
            alice,
            room_id,
            {"msgtype": "m.image", "body": "new.png", "url": new_image},
        ),
    ]
    return Room(
        room_id,
        old_ids,
        new_ids,
        old_image,
        new_image,
        hashlib.sha256(old_png).hexdigest(),
        hashlib.sha256(new_png).hexdigest(),
        boundary_ts,
    )


def _blob(server: HomeserverProcess, sha256: str) -> Path:
    return server.data_dir / "media" / "blobs" / sha256[:2] / sha256[2:4] / sha256


async def _download(client: MatrixClient, account: Account, uri: str) -> int:
    server_name, media_id = uri.removeprefix("mxc://").split("/")
    url = f"{client.base_url}/_matrix/client/v1/media/download/{server_name}/{media_id}"
    async with new_session() as session:
        headers = {"Authorization": f"Bearer {account.access_token}"}
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status


async def _timeline(client: MatrixClient, account: Account, room_id: str) -> list[dict[str, Any]]:
    page = (
        await client.request(
            "GET", f"rooms/{room_id}/messages", params={"dir": "b", "limit": "100"}, token=account
        )
    ).ok()
    return list(page["chunk"])


async def _run(
    client: MatrixClient, admin: Account, room_id: str | None, now_ts: int
) -> dict[str, Any]:
    body: dict[str, Any] = {"now_ts": now_ts, "reason": "test"}
    if room_id is not None:
        body["room_id"] = room_id
    result = await client.request("POST", f"{ADMIN}/retention/run", json=body, token=admin)
    return dict(result.ok())


async def test_expired_history_is_gone_from_api_database_and_disk(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    server = private_homeserver
    admin = await login_admin(client, server)
    alice, bob = await client.register(), await client.register()
    room = await _room(client, alice, bob, "Retention room")
    held = await _room(client, alice, bob, "Held room")
    (
        await client.request(
            "POST",
            f"{ADMIN}/legal_holds",
            json={"kind": "room", "target": held.room_id, "case_id": "C-1", "reason": "case"},
            token=admin,
        )
    ).ok()
    policy = (
        await client.request("GET", f"{ADMIN}/rooms/{room.room_id}/retention", token=admin)
    ).ok()
    assert policy["max_lifetime"] == DAY_MS

    report = await _run(client, admin, room.room_id, room.boundary_ts + DAY_MS)
    # The old history and Bob's invite (superseded by his join).
    assert report["purged"]["events"] == len(room.old_ids) + 1
    assert report["purged"]["media"] == 1
    assert report["purged"]["held"] == 0
    held_report = await _run(client, admin, held.room_id, held.boundary_ts + DAY_MS)
    assert held_report["purged"]["events"] == 0
    assert held_report["purged"]["held"] >= len(held.old_ids)

    # The API: /messages, /sync, /context, the event, the media.
    bodies = [e["content"].get("body") for e in await _timeline(client, bob, room.room_id)]
    assert not any(OLD_SECRET in str(b) for b in bodies)
    assert NEW_TEXT in bodies and "new.png" in bodies
    sync = (await client.request("GET", "sync", token=bob)).ok()
    timeline = sync["rooms"]["join"][room.room_id]["timeline"]["events"]
    assert room.new_ids[-1] in [e["event_id"] for e in timeline]
    assert not any(OLD_SECRET in json.dumps(e) for e in timeline)
    for event_id in room.old_ids:
        event = await client.request("GET", f"rooms/{room.room_id}/event/{event_id}", token=bob)
        assert event.status == 404, event.body
        context = await client.request("GET", f"rooms/{room.room_id}/context/{event_id}", token=bob)
        assert context.status == 404, context.body
    # Bob's read receipt points at a purged event: his counts are still those of the
    # two newer messages.
    unread = sync["rooms"]["join"][room.room_id]["unread_notifications"]
    assert unread["notification_count"] == 2
    assert await _download(client, bob, room.old_image) == 404
    assert await _download(client, bob, room.new_image) == 200
    # The held room keeps everything.
    held_bodies = [e["content"].get("body") for e in await _timeline(client, bob, held.room_id)]
    assert sum(OLD_SECRET in str(b) for b in held_bodies) == 5
    assert await _download(client, bob, held.old_image) == 200

    # Current state is untouched and the room works.
    name = await client.request("GET", f"rooms/{room.room_id}/state/m.room.name/", token=bob)
    assert name.ok() == {"name": "Retention room"}
    topic = await client.request("GET", f"rooms/{room.room_id}/state/m.room.topic/", token=bob)
    assert topic.ok()["topic"] == "current topic"
    after = await _send(client, bob, room.room_id, {"msgtype": "m.text", "body": "still here"})
    # Read where Alice reads: in a deployment (tests/workers) that is a client reader,
    # which has the event once it has followed the writer, a moment later.
    for _ in range(50):  # bounded: 5 s
        seen = [e["event_id"] for e in await _timeline(client, alice, room.room_id)]
        if after in seen:
            break
        await asyncio.sleep(0.1)
    assert after in seen

    # The database: no timeline rows, redacted skeletons only, no media row; the disk.
    placeholders = ", ".join(f"${i + 1}" for i in range(len(room.old_ids)))
    rows = await query(
        server, f"SELECT count(*) FROM events WHERE event_id IN ({placeholders})", *room.old_ids
    )
    assert rows == [(0,)]
    for table in ("push_room_notifications", "push_user_exceptions"):
        notifying = await query(
            server,
            f"SELECT count(*) FROM {table} WHERE event_id IN ({placeholders})",
            *room.old_ids,
        )
        assert notifying == [(0,)], table
    kept = await query(
        server,
        f"SELECT status, pdu FROM event_outliers WHERE event_id IN ({placeholders})",
        *room.old_ids,
    )
    assert len(kept) == len(room.old_ids)
    for status, pdu in kept:
        assert status == "purged"
        assert json.loads(pdu)["content"] == {}
    everywhere = await query(
        server,
        "SELECT count(*) FROM events WHERE pdu LIKE $1",
        f"%{OLD_SECRET}%",
    )
    # Only the held room's copies are left (five messages and the first topic).
    assert everywhere == [(6,)]
    old_media = room.old_image.removeprefix("mxc://").split("/")[1]
    assert await query(server, "SELECT count(*) FROM media WHERE media_id = $1", old_media) == [
        (0,)
    ]
    assert not _blob(server, room.old_sha256).exists()
    assert _blob(server, room.new_sha256).exists()
    assert _blob(server, held.old_sha256).exists()
    if server.backend == "sqlite":
        # Deleted rows are overwritten (secure_delete) and the log checkpointed: the
        # purged text is nowhere in the files, only the held room's copies.
        database = server.data_dir / "peyvand.db"
        raw = b"".join(
            path.read_bytes()
            for path in database.parent.glob(database.name + "*")
            if path.is_file()
        )
        assert raw.count(f"{OLD_SECRET} 0".encode()) <= len(held.old_ids)

    # The audit log recorded the runs and still verifies.
    audit = (await client.request("GET", f"{ADMIN}/audit_log/verify", token=admin)).ok()
    assert audit["ok"] is True
    entries = (await client.request("GET", f"{ADMIN}/audit_log", token=admin)).ok()
    purges = [e for e in entries["entries"] if e["action"] == "purge"]
    assert {e["target"] for e in purges} == {room.room_id, held.room_id}


async def test_purged_forward_extremity_survives_a_restart(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """A quiet room whose every message expired: its forward extremity is a purged
    event, and new events still build on it after a restart."""
    server = private_homeserver
    admin = await login_admin(client, server)
    alice = await client.register()
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "initial_state": [{"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}]
            },
            token=alice,
        )
    ).ok()["room_id"]
    last = await _send(client, alice, room_id, {"msgtype": "m.text", "body": OLD_SECRET})
    now = int(time.time() * 1000)
    report = await _run(client, admin, room_id, now + DAY_MS + 60_000)
    assert report["purged"]["events"] == 1
    server.restart()
    alice = await client.login(alice.user_id, alice.password)
    new = await _send(client, alice, room_id, {"msgtype": "m.text", "body": "after restart"})
    rows = await query(server, "SELECT depth, pdu FROM events WHERE event_id = $1", new)
    [(depth, pdu)] = rows
    assert last in json.loads(pdu)["prev_events"]
    [(old_pdu,)] = await query(server, "SELECT pdu FROM event_outliers WHERE event_id = $1", last)
    assert depth == json.loads(old_pdu)["depth"] + 1
    chunk = await _timeline(client, alice, room_id)
    assert [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"] == [
        "after restart"
    ]


async def test_redacted_content_is_deleted_except_under_hold(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    server = private_homeserver
    admin = await login_admin(client, server)
    alice, carol = await client.register(), await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    secret = await _send(client, alice, room_id, {"msgtype": "m.text", "body": "redact me"})
    (
        await client.request(
            "PUT", f"rooms/{room_id}/redact/{secret}/r{next(_txn)}", json={}, token=alice
        )
    ).ok()
    held_room = (await client.request("POST", "createRoom", json={}, token=carol)).ok()["room_id"]
    kept = await _send(client, carol, held_room, {"msgtype": "m.text", "body": "evidence"})
    (
        await client.request(
            "PUT", f"rooms/{held_room}/redact/{kept}/r{next(_txn)}", json={}, token=carol
        )
    ).ok()
    (
        await client.request(
            "POST",
            f"{ADMIN}/legal_holds",
            json={"kind": "user", "target": carol.user_id, "case_id": "C-2", "reason": "case"},
            token=admin,
        )
    ).ok()

    now = int(time.time() * 1000)
    report = await _run(client, admin, None, now + 7 * DAY_MS + 60_000)
    assert report["redacted_content"]["events"] == 1
    assert report["redacted_content"]["held"] == 1

    [(pdu, purged_ts)] = await query(
        server, "SELECT pdu, content_purged_ts FROM events WHERE event_id = $1", secret
    )
    assert json.loads(pdu)["content"] == {} and purged_ts is not None
    [(held_pdu, held_ts)] = await query(
        server, "SELECT pdu, content_purged_ts FROM events WHERE event_id = $1", kept
    )
    assert json.loads(held_pdu)["content"]["body"] == "evidence" and held_ts is None
    # Clients still see both as redacted events.
    for account, room, event_id in ((alice, room_id, secret), (carol, held_room, kept)):
        event = (await client.request("GET", f"rooms/{room}/event/{event_id}", token=account)).ok()
        assert event["content"] == {}
        assert "redacted_because" in event["unsigned"]


async def test_bad_requests_are_refused(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, private_homeserver)
    user = await client.register()
    run = f"{ADMIN}/retention/run"
    refused = await client.request("POST", run, json={}, token=user)
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN"
    unknown = await client.request("POST", run, json={"room_id": "!nope:localhost"}, token=admin)
    assert unknown.status == 404 and unknown.body["errcode"] == "M_NOT_FOUND"
    bodies: list[dict[str, Any]] = [
        {"now_ts": -1},
        {"now_ts": "soon"},
        {"room_id": 5},
        {"reason": []},
    ]
    for body in bodies:
        bad = await client.request("POST", run, json=body, token=admin)
        assert bad.status == 400, (body, bad.body)
    policy = await client.request("GET", f"{ADMIN}/rooms/!nope:localhost/retention", token=admin)
    assert policy.status == 404


async def test_redactions_stay_applied_once_the_redaction_is_purged(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """A redacted topic that stays current state keeps its redacted form for clients
    after retention purges the redaction event itself."""
    admin = await login_admin(client, private_homeserver)
    alice = await client.register()
    room_id = (
        await client.request(
            "POST",
            "createRoom",
            json={
                "initial_state": [{"type": "m.room.retention", "content": {"max_lifetime": DAY_MS}}]
            },
            token=alice,
        )
    ).ok()["room_id"]
    topic_path = f"rooms/{room_id}/state/m.room.topic/"
    topic = (
        await client.request("PUT", topic_path, json={"topic": "SECRET TOPIC"}, token=alice)
    ).ok()["event_id"]
    redaction = (
        await client.request(
            "PUT", f"rooms/{room_id}/redact/{topic}/r{next(_txn)}", json={}, token=alice
        )
    ).ok()["event_id"]
    report = await _run(client, admin, room_id, int(time.time() * 1000) + DAY_MS + 60_000)
    assert report["purged"]["events"] >= 1
    gone = await client.request("GET", f"rooms/{room_id}/event/{redaction}", token=alice)
    assert gone.status == 404
    assert (await client.request("GET", topic_path, token=alice)).ok() == {}
    sync = (await client.request("GET", "sync", token=alice)).ok()
    room = sync["rooms"]["join"][room_id]
    shown = [
        e
        for e in room["state"]["events"] + room["timeline"]["events"]
        if e["type"] == "m.room.topic"
    ]
    assert shown and all(e["content"] == {} for e in shown)
    assert "SECRET TOPIC" not in json.dumps(await _timeline(client, alice, room_id))


async def test_a_redacted_policy_sets_no_policy(
    private_homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, private_homeserver)
    alice = await client.register()
    room_id = (await client.request("POST", "createRoom", json={}, token=alice)).ok()["room_id"]
    policy = (
        await client.request(
            "PUT",
            f"rooms/{room_id}/state/m.room.retention/",
            json={"max_lifetime": DAY_MS},
            token=alice,
        )
    ).ok()["event_id"]
    kept = await _send(client, alice, room_id, {"msgtype": "m.text", "body": "keep me"})
    (
        await client.request(
            "PUT", f"rooms/{room_id}/redact/{policy}/r{next(_txn)}", json={}, token=alice
        )
    ).ok()
    effective = (
        await client.request("GET", f"{ADMIN}/rooms/{room_id}/retention", token=admin)
    ).ok()
    assert effective["max_lifetime"] is None
    report = await _run(client, admin, room_id, int(time.time() * 1000) + 30 * DAY_MS)
    assert report == {
        "rooms": 0,
        "purged": {"events": 0, "held": 0, "media": 0},
        "redacted_content": {"events": 0, "held": 0, "media": 0},
    }
    (await client.request("GET", f"rooms/{room_id}/event/{kept}", token=alice)).ok()
