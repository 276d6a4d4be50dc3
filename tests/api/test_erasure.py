"""Account deactivation and erasure (docs/compliance.md, "Erasure") against a running
server, on every backend: the client API's ``erase`` flag, the admin API (Peyvand's and
Synapse's paths), ``peyvand erase-user`` as an operator runs it, and legal holds.

Each test sets up its own scene: Alice, with a display name and an avatar, shares a room
with Bob; she renames herself once (so a superseded member event holds her first name),
uploads a photo, sends it as ``m.image`` and sends text messages. After erasure nothing
of hers may be left: no profile, no media (rows or files), no message bodies and no
display name in any stored PDU, while the room keeps her events as redacted skeletons.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from harness.admin import login_admin
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.database import query
from harness.server import HomeserverProcess

PEYVAND_ADMIN = "/_peyvand/admin/v1"

_txn = itertools.count(1)


def peyvand(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _png() -> bytes:
    """A PNG no other test uploads (media files are shared by content hash)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Media:
    uri: str
    data: bytes

    @property
    def key(self) -> tuple[str, str]:
        server, _, media_id = self.uri.removeprefix("mxc://").partition("/")
        return server, media_id

    @property
    def path(self) -> str:
        return "/".join(self.key)


@dataclass
class Scene:
    server: HomeserverProcess
    client: MatrixClient
    session: aiohttp.ClientSession
    alice: Account
    bob: Account
    room_id: str
    first_name: str
    second_name: str
    avatar: Media
    photo: Media
    # Alice's messages: event ID -> the body only she sent.
    messages: dict[str, str] = field(default_factory=dict)
    image_event: str = ""
    bob_event: str = ""
    bob_body: str = ""


async def _upload(scene_session: aiohttp.ClientSession, base_url: str, account: Account) -> Media:
    data = _png()
    async with scene_session.post(
        f"{base_url}/_matrix/media/v3/upload",
        data=data,
        params={"filename": "photo.png"},
        headers={"Authorization": f"Bearer {account.access_token}", "Content-Type": "image/png"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        assert response.status == 200, await response.text()
        uri: str = (await response.json())["content_uri"]
    return Media(uri, data)


async def _send(
    client: MatrixClient, account: Account, room_id: str, content: dict[str, Any]
) -> str:
    path = f"rooms/{room_id}/send/m.room.message/t{next(_txn)}"
    event_id: str = (await client.request("PUT", path, json=content, token=account)).ok()[
        "event_id"
    ]
    return event_id


async def _create_room(client: MatrixClient, owner: Account, *members: Account) -> str:
    room_id: str = (
        await client.request(
            "POST", "createRoom", json={"preset": "public_chat", "name": "Team"}, token=owner
        )
    ).ok()["room_id"]
    for member in members:
        (await client.request("POST", f"join/{room_id}", json={}, token=member)).ok()
    return room_id


async def _scene(
    client: MatrixClient, session: aiohttp.ClientSession, server: HomeserverProcess
) -> Scene:
    alice = await client.register()
    bob = await client.register()
    tag = unique_localpart("x")
    first_name, second_name = f"Alice First {tag}", f"Alice Second {tag}"
    profile = f"profile/{alice.user_id}"
    (
        await client.request(
            "PUT", f"{profile}/displayname", json={"displayname": first_name}, token=alice
        )
    ).ok()
    avatar = await _upload(session, server.base_url, alice)
    (
        await client.request(
            "PUT", f"{profile}/avatar_url", json={"avatar_url": avatar.uri}, token=alice
        )
    ).ok()
    room_id = await _create_room(client, alice, bob)
    (
        await client.request(
            "PUT", f"{profile}/displayname", json={"displayname": second_name}, token=alice
        )
    ).ok()
    photo = await _upload(session, server.base_url, alice)
    scene = Scene(
        server, client, session, alice, bob, room_id, first_name, second_name, avatar, photo
    )
    scene.image_event = await _send(
        client, alice, room_id,
        {"msgtype": "m.image", "body": f"holiday {tag}.png", "url": photo.uri,
         "info": {"mimetype": "image/png", "size": len(photo.data)}},
    )  # fmt: skip
    scene.messages[scene.image_event] = f"holiday {tag}.png"
    for n in (1, 2):
        body = f"alice secret {n} {tag}"
        event_id = await _send(client, alice, room_id, {"msgtype": "m.text", "body": body})
        scene.messages[event_id] = body
    scene.bob_body = f"bob reply {tag}"
    scene.bob_event = await _send(
        client, bob, room_id, {"msgtype": "m.text", "body": scene.bob_body}
    )
    # Bob downloads the photo and a thumbnail: erasure has one more file to delete.
    assert await _download_status(scene, photo) == (200, 200)
    return scene


async def _erase_with_password(scene: Scene, account: Account, *, erase: bool) -> None:
    """POST /account/deactivate through UIA with the account's password."""
    first = await scene.client.request(
        "POST", "account/deactivate", json={"erase": erase}, token=account
    )
    assert first.status == 401 and "session" in first.body, first.body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": account.password,
        "session": first.body["session"],
    }
    done = await scene.client.request(
        "POST", "account/deactivate", json={"erase": erase, "auth": auth}, token=account
    )
    assert done.ok() == {"id_server_unbind_result": "no-support"}


async def _blob_hashes(scene: Scene, media: Media) -> set[str]:
    """The content hashes of the files of ``media``: its own and its thumbnails'."""
    origin, media_id = media.key
    rows = await query(
        scene.server,
        "SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2"
        " UNION SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
        origin,
        media_id,
    )
    return {row[0] for row in rows if row[0]}


def _blob(scene: Scene, sha256: str) -> Path:
    return scene.server.data_dir / "media" / "blobs" / sha256[:2] / sha256[2:4] / sha256


async def _download_status(scene: Scene, media: Media) -> tuple[int, int]:
    """The status of a download of ``media`` and of a thumbnail of it, as Bob asks."""
    headers = {"Authorization": f"Bearer {scene.bob.access_token}"}
    base = f"{scene.server.base_url}/_matrix/client/v1/media"
    timeout = aiohttp.ClientTimeout(total=30)
    async with scene.session.get(
        f"{base}/download/{media.path}", headers=headers, timeout=timeout
    ) as download:
        if download.status == 200:
            assert await download.read() == media.data
        downloaded = download.status
    async with scene.session.get(
        f"{base}/thumbnail/{media.path}",
        params={"width": "32", "height": "32", "method": "crop"},
        headers=headers,
        timeout=timeout,
    ) as thumbnail:
        await thumbnail.read()
        return downloaded, thumbnail.status


async def _rows_containing(scene: Scene, text: str) -> list[tuple[Any, ...]]:
    """Stored PDUs (timeline and outliers) whose JSON contains ``text``."""
    pattern = f"%{text}%"
    timeline = await query(
        scene.server, "SELECT 'events', event_id FROM events WHERE pdu LIKE $1", pattern
    )
    outliers = await query(
        scene.server,
        "SELECT 'event_outliers', event_id FROM event_outliers WHERE pdu LIKE $1",
        pattern,
    )
    return timeline + outliers


async def _event_content(scene: Scene, event_id: str) -> dict[str, Any]:
    event = (
        await scene.client.request(
            "GET", f"rooms/{scene.room_id}/event/{event_id}", token=scene.bob
        )
    ).ok()
    content: dict[str, Any] = event["content"]
    return content


async def _timeline_contents(scene: Scene) -> dict[str, dict[str, Any]]:
    """Bob's view of the room's timeline: event ID -> content."""
    page = (
        await scene.client.request(
            "GET",
            f"rooms/{scene.room_id}/messages",
            params={"dir": "b", "limit": "100"},
            token=scene.bob,
        )
    ).ok()
    return {event["event_id"]: event["content"] for event in page["chunk"]}


async def _assert_deactivated(scene: Scene) -> None:
    """Alice cannot log in or use her token, and has left the room."""
    login = await scene.client.request(
        "POST",
        "login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": scene.alice.user_id},
            "password": scene.alice.password,
        },
    )
    assert login.status in (401, 403), login.body
    assert login.body["errcode"] in ("M_FORBIDDEN", "M_USER_DEACTIVATED")
    whoami = await scene.client.request("GET", "account/whoami", token=scene.alice)
    assert (whoami.status, whoami.body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    member = (
        await scene.client.request(
            "GET",
            f"rooms/{scene.room_id}/state/m.room.member/{scene.alice.user_id}",
            token=scene.bob,
        )
    ).ok()
    assert member["membership"] == "leave"


async def _assert_erased(scene: Scene) -> None:
    await _assert_deactivated(scene)
    profile = await scene.client.request("GET", f"profile/{scene.alice.user_id}")
    assert profile.status == 200 and "displayname" not in profile.body, profile.body
    assert "avatar_url" not in profile.body

    # Bob sees her messages as redacted events, by ID and in the timeline; his is intact.
    timeline = await _timeline_contents(scene)
    for event_id in scene.messages:
        assert await _event_content(scene, event_id) == {}
        assert timeline[event_id] == {}
    assert (await _event_content(scene, scene.bob_event))["body"] == scene.bob_body
    assert timeline[scene.bob_event]["body"] == scene.bob_body

    # Nothing stored holds her messages or either of her names.
    for text in [*scene.messages.values(), scene.first_name, scene.second_name]:
        assert await _rows_containing(scene, text) == [], text
    assert await _rows_containing(scene, scene.bob_body) != []

    # Her media, with their files and thumbnails, are gone.
    for media in (scene.avatar, scene.photo):
        assert await _download_status(scene, media) == (404, 404)
        assert await _blob_hashes(scene, media) == set()
    rows = await query(
        scene.server, "SELECT media_id FROM media WHERE user_id = $1", scene.alice.user_id
    )
    assert rows == []


async def _audit_entries(scene: Scene, admin: Account) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    start = 1
    while True:
        page = (
            await scene.client.request(
                "GET",
                f"{PEYVAND_ADMIN}/audit_log",
                params={"from": str(start), "limit": "1000"},
                token=admin,
            )
        ).ok()
        entries += page["entries"]
        if "next" not in page:
            return entries
        start = page["next"]


async def _audit_for(scene: Scene, admin: Account) -> list[dict[str, Any]]:
    """The audit log's entries about Alice, after checking the chain still verifies."""
    verified = (
        await scene.client.request("GET", f"{PEYVAND_ADMIN}/audit_log/verify", token=admin)
    ).ok()
    assert verified["ok"] is True, verified
    return [e for e in await _audit_entries(scene, admin) if e["target"] == scene.alice.user_id]


async def _files_before(scene: Scene) -> list[Path]:
    paths = [
        _blob(scene, sha)
        for media in (scene.avatar, scene.photo)
        for sha in await _blob_hashes(scene, media)
    ]
    assert len(paths) >= 3  # the avatar, the photo and its thumbnail
    assert all(path.is_file() for path in paths)
    return paths


# -- erasure --------------------------------------------------------------------------------


async def test_client_erase_flag_erases_profile_media_and_messages(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        assert await _rows_containing(scene, scene.first_name) != []  # the superseded join
        files = await _files_before(scene)

        await _erase_with_password(scene, scene.alice, erase=True)

        await _assert_erased(scene)
        assert [path for path in files if path.exists()] == []
        entries = await _audit_for(scene, admin)
    assert [(e["action"], e["actor"]) for e in entries] == [("erasure", scene.alice.user_id)]
    details = entries[0]["details"]
    assert details["erased"] is True and details["rooms_left"] == 1
    assert details["profile_kept"] is False and details["media_deleted"] == 2
    # Her three messages and her superseded join events (created, renamed).
    assert details["events_erased"] >= 5 and details["events_held"] == 0


async def test_admin_api_erases_and_answers_the_report(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        files = await _files_before(scene)
        answer = (
            await client.request(
                "POST",
                f"{PEYVAND_ADMIN}/users/{scene.alice.user_id}/deactivate",
                json={"erase": True, "reason": "GDPR request #42"},
                token=admin,
            )
        ).ok()
        await _assert_erased(scene)
        assert [path for path in files if path.exists()] == []
        entries = await _audit_for(scene, admin)
    assert answer == {
        "user_id": scene.alice.user_id,
        "erased": True,
        "rooms_left": 1,
        "profile_kept": False,
        "events_erased": answer["events_erased"],
        "events_held": 0,
        "media_deleted": 2,
        "media_held": 0,
    }
    assert answer["events_erased"] >= 5
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("erasure", admin.user_id, "GDPR request #42")
    ]
    assert entries[0]["details"] == {k: v for k, v in answer.items() if k != "user_id"}


async def test_synapse_admin_path_erases(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        answer = await client.request(
            "POST",
            f"/_synapse/admin/v1/deactivate/{scene.alice.user_id}",
            json={"erase": True},
            token=admin,
        )
        assert answer.ok() == {"id_server_unbind_result": "success"}
        await _assert_erased(scene)
        entries = await _audit_for(scene, admin)
    assert [(e["action"], e["actor"]) for e in entries] == [("erasure", admin.user_id)]


async def test_cli_erases_through_the_running_server(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        env = {**os.environ, "PEYVAND_ADMIN_TOKEN": admin.access_token}
        command: list[str | Path] = [
            "erase-user",
            "--config",
            homeserver.config_path,
            "--user",
            scene.alice.user_id,
        ]

        # Without a token, or with a non-admin's, nothing happens.
        no_token = {k: v for k, v in env.items() if k != "PEYVAND_ADMIN_TOKEN"}
        refused = peyvand(*command, env=no_token)
        assert refused.returncode == 1 and "PEYVAND_ADMIN_TOKEN" in refused.stderr
        not_admin = peyvand(*command, "--token", scene.bob.access_token, env=no_token)
        assert not_admin.returncode == 1
        assert "403 M_FORBIDDEN" in not_admin.stderr, not_admin.stderr
        await _assert_still_active(scene)

        erased = peyvand(*command, "--reason", "court order", env=env)
        assert erased.returncode == 0, erased.stderr
        assert f"deactivated {scene.alice.user_id}" in erased.stdout
        assert "profile (display name, avatar): deleted" in erased.stdout
        assert "media deleted: 2, kept under legal hold: 0" in erased.stdout
        await _assert_erased(scene)
        entries = await _audit_for(scene, admin)
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("erasure", admin.user_id, "court order")
    ]


async def test_cli_reports_an_unreachable_server_and_unknown_users(
    homeserver: HomeserverProcess, client: MatrixClient, tmp_path: Path
) -> None:
    admin = await login_admin(client, homeserver)
    env = {**os.environ, "PEYVAND_ADMIN_TOKEN": admin.access_token}
    config = homeserver.config_path
    unknown = peyvand(
        "erase-user", "--config", config, "--user", f"@nobody-{time.time_ns()}:localhost", env=env
    )
    assert unknown.returncode == 1 and "404 M_NOT_FOUND" in unknown.stderr, unknown.stderr
    # A port nothing listens on: one just bound and closed again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = peyvand(
        "erase-user", "--config", config, "--user", admin.user_id,
        "--url", f"http://127.0.0.1:{closed_port}", env=env,
    )  # fmt: skip
    assert unreachable.returncode == 1 and "cannot reach the server" in unreachable.stderr


# -- deactivation without erasure -----------------------------------------------------------


async def _assert_still_active(scene: Scene) -> None:
    (await scene.client.request("GET", "account/whoami", token=scene.alice)).ok()


async def _assert_content_kept(scene: Scene, *, profile: bool) -> None:
    for event_id, body in scene.messages.items():
        assert (await _event_content(scene, event_id))["body"] == body
    assert (await _event_content(scene, scene.image_event))["url"] == scene.photo.uri
    assert await _download_status(scene, scene.photo) == (200, 200)
    assert all(_blob(scene, sha).is_file() for sha in await _blob_hashes(scene, scene.photo))
    assert await _rows_containing(scene, scene.first_name) != []
    if profile:
        shown = (await scene.client.request("GET", f"profile/{scene.alice.user_id}")).ok()
        assert shown == {"displayname": scene.second_name, "avatar_url": scene.avatar.uri}
        assert await _download_status(scene, scene.avatar) == (200, 200)


async def test_plain_deactivation_leaves_content_alone(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        await _erase_with_password(scene, scene.alice, erase=False)
        await _assert_deactivated(scene)
        await _assert_content_kept(scene, profile=True)
        # A user's own plain deactivation is no admin action: not in the audit log.
        assert await _audit_for(scene, admin) == []

        # An admin's is, as "deactivate"; deactivating twice is harmless.
        again = (
            await client.request(
                "POST",
                f"{PEYVAND_ADMIN}/users/{scene.alice.user_id}/deactivate",
                json={"erase": False},
                token=admin,
            )
        ).ok()
        assert (again["erased"], again["rooms_left"], again["events_erased"]) == (False, 0, 0)
        # Synapse's path takes an empty body, as no erasure.
        synapse = await client.request(
            "POST", f"/_synapse/admin/v1/deactivate/{scene.alice.user_id}", token=admin
        )
        assert synapse.ok() == {"id_server_unbind_result": "success"}
        await _assert_content_kept(scene, profile=True)
        entries = await _audit_for(scene, admin)
    assert [(e["action"], e["actor"]) for e in entries] == [("deactivate", admin.user_id)] * 2


# -- legal holds ----------------------------------------------------------------------------


async def _place_hold(scene: Scene, admin: Account, **hold: Any) -> str:
    body = {"case_id": "CASE-ERASE", "reason": "litigation", **hold}
    placed = (
        await scene.client.request("POST", f"{PEYVAND_ADMIN}/legal_holds", json=body, token=admin)
    ).ok()
    hold_id: str = placed["hold_id"]
    return hold_id


async def test_user_hold_keeps_messages_media_and_profile(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        await _place_hold(scene, admin, kind="user", target=scene.alice.user_id)
        answer = (
            await client.request(
                "POST",
                f"{PEYVAND_ADMIN}/users/{scene.alice.user_id}/deactivate",
                json={"erase": True},
                token=admin,
            )
        ).ok()
        await _assert_deactivated(scene)
        await _assert_content_kept(scene, profile=True)
    assert answer["profile_kept"] is True
    assert (answer["events_erased"], answer["media_deleted"]) == (0, 0)
    assert answer["events_held"] >= 5 and answer["media_held"] == 2


async def test_room_hold_keeps_what_its_range_covers(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """A hold on the room from the time of Alice's photo on: her photo and messages there
    stay; her profile, avatar, earlier member events and messages elsewhere go."""
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        other_room = await _create_room(client, scene.alice, scene.bob)
        elsewhere = await _send(
            client,
            scene.alice,
            other_room,
            {"msgtype": "m.text", "body": "elsewhere " + scene.first_name},
        )
        image = (
            await client.request(
                "GET", f"rooms/{scene.room_id}/event/{scene.image_event}", token=scene.bob
            )
        ).ok()
        await _place_hold(
            scene, admin, kind="room", target=scene.room_id, since_ts=image["origin_server_ts"]
        )
        answer = (
            await client.request(
                "POST",
                f"{PEYVAND_ADMIN}/users/{scene.alice.user_id}/deactivate",
                json={"erase": True},
                token=admin,
            )
        ).ok()
        await _assert_deactivated(scene)
        for event_id, body in scene.messages.items():
            assert (await _event_content(scene, event_id))["body"] == body
        assert (await _event_content(scene, scene.image_event))["url"] == scene.photo.uri
        assert await _download_status(scene, scene.photo) == (200, 200)
        # Not held: the profile, the avatar, the member events from before the range and
        # the message in the other room.
        assert answer["profile_kept"] is False
        profile = (await client.request("GET", f"profile/{scene.alice.user_id}")).ok()
        assert profile == {}
        assert await _download_status(scene, scene.avatar) == (404, 404)
        assert await _rows_containing(scene, scene.first_name) == []
        gone = (
            await client.request("GET", f"rooms/{other_room}/event/{elsewhere}", token=scene.bob)
        ).ok()
        assert gone["content"] == {}
    assert answer["events_held"] == 3 and answer["media_held"] == 1


# -- bad input ------------------------------------------------------------------------------


async def test_bad_requests_are_refused_without_harm(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    admin = await login_admin(client, homeserver)
    bob = await client.register()
    carol = await client.register()
    ours = f"{PEYVAND_ADMIN}/users/{{}}/deactivate"
    synapse = "/_synapse/admin/v1/deactivate/{}"
    for path in (ours, synapse):
        for user_id, status, errcode in [
            (f"@nobody-{time.time_ns()}:{homeserver.server_name}", 404, "M_NOT_FOUND"),
            ("@someone:remote.example.org", 400, "M_INVALID_PARAM"),
            ("not-a-user-id", 400, "M_INVALID_PARAM"),
        ]:
            answer = await client.request(
                "POST", path.format(user_id), json={"erase": True}, token=admin
            )
            assert (answer.status, answer.body["errcode"]) == (status, errcode), (path, user_id)
        refused = await client.request(
            "POST", path.format(carol.user_id), json={"erase": True}, token=bob
        )
        assert (refused.status, refused.body["errcode"]) == (403, "M_FORBIDDEN")
        anonymous = await client.request("POST", path.format(carol.user_id), json={"erase": True})
        assert (anonymous.status, anonymous.body["errcode"]) == (401, "M_MISSING_TOKEN")
        wrong_type = await client.request(
            "POST", path.format(carol.user_id), json={"erase": "yes"}, token=admin
        )
        assert (wrong_type.status, wrong_type.body["errcode"]) == (400, "M_BAD_JSON")
    not_json = await client.request(
        "POST", "account/deactivate", json={"erase": "please"}, token=carol
    )
    assert (not_json.status, not_json.body["errcode"]) == (400, "M_BAD_JSON")
    # Carol was never deactivated by any of it.
    (await client.request("GET", "account/whoami", token=carol)).ok()


async def test_invites_others_sent_her_lose_her_name(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """An invite carries the invitee's profile in its content, though Bob sent it."""
    admin = await login_admin(client, homeserver)
    async with new_session() as session:
        scene = await _scene(client, session, homeserver)
        room_id: str = (await client.request("POST", "createRoom", json={}, token=scene.bob)).ok()[
            "room_id"
        ]
        invite = {"user_id": scene.alice.user_id}
        (await client.request("POST", f"rooms/{room_id}/invite", json=invite, token=scene.bob)).ok()
        (await client.request("POST", f"join/{room_id}", json={}, token=scene.alice)).ok()
        (
            await client.request(
                "POST",
                f"{PEYVAND_ADMIN}/users/{scene.alice.user_id}/deactivate",
                json={"erase": True},
                token=admin,
            )
        ).ok()
        assert await _rows_containing(scene, scene.second_name) == []
