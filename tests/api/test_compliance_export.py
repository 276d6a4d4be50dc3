"""Compliance and personal data exports (docs/compliance.md) against a running server, on
every backend: ``peyvand export`` as an operator runs it (a child process on the server's
config, the server still running) and the admin API.

One room is set up per backend: messages (one with HTML in it), an ``m.room.encrypted``
event, an uploaded image sent as ``m.image``, an image whose media does not exist, and a
redacted message; one message before and one after, a few milliseconds apart, to check
the time range.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import itertools
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.server import HomeserverProcess
from peyvand.app import open_database
from peyvand.compliance.export import verify_manifest
from peyvand.config.loader import load_config
from peyvand.storage.compliance_reads import ComplianceReads, ExportEventRow

ADMIN_PASSWORD = "admin password for export tests"
HTML_BODY = "hello <b>world</b> & co"
ENCRYPTED = {
    "algorithm": "m.megolm.v1.aes-sha2",
    "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
    "device_id": "RJYKSTBOIE",
    "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
    "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
}
NOT_STORED = "mxc://localhost/NotStoredAnywhere"

_txn = itertools.count(1)


def peyvand(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Scene:
    server: HomeserverProcess
    alice: Account
    bob: Account
    admin: Account
    room_id: str
    image: bytes
    image_uri: str
    # The first message, the one before it and the one after the last ("late").
    early_ts: int
    first_ts: int
    last_ts: int
    late_ts: int


async def _send(
    client: MatrixClient, account: Account, room_id: str, content: dict[str, Any], kind: str
) -> str:
    path = f"rooms/{room_id}/send/{kind}/t{next(_txn)}"
    event_id: str = (await client.request("PUT", path, json=content, token=account)).ok()[
        "event_id"
    ]
    return event_id


async def _ts(client: MatrixClient, account: Account, room_id: str, event_id: str) -> int:
    event = (await client.request("GET", f"rooms/{room_id}/event/{event_id}", token=account)).ok()
    ts: int = event["origin_server_ts"]
    return ts


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 140, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def scene(homeserver: HomeserverProcess) -> Scene:
    admin_name = unique_localpart("admin")
    registered = peyvand(
        "register-user", "--config", homeserver.config_path, "--user", admin_name,
        "--password", ADMIN_PASSWORD, "--admin",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    async with new_session() as session:
        client = MatrixClient(session, homeserver.base_url)
        admin = await client.login(admin_name, ADMIN_PASSWORD)
        alice = await client.register()
        bob = await client.register()
        job = {"org.example.job_title": "Analyst"}
        field = f"profile/{alice.user_id}/org.example.job_title"
        (await client.request("PUT", field, json=job, token=alice)).ok()
        room_id: str = (
            await client.request(
                "POST",
                "createRoom",
                json={"name": "Case room", "preset": "public_chat"},
                token=alice,
            )
        ).ok()["room_id"]
        (await client.request("POST", f"join/{room_id}", json={}, token=bob)).ok()

        early = await _send(
            client, alice, room_id, {"msgtype": "m.text", "body": "early"}, "m.room.message"
        )
        await asyncio.sleep(0.02)
        first = await _send(
            client, alice, room_id, {"msgtype": "m.text", "body": HTML_BODY}, "m.room.message"
        )
        await _send(client, bob, room_id, ENCRYPTED, "m.room.encrypted")
        image = _png()
        async with session.post(
            f"{homeserver.base_url}/_matrix/media/v3/upload",
            data=image,
            params={"filename": "cat.png"},
            headers={"Authorization": f"Bearer {alice.access_token}", "Content-Type": "image/png"},
        ) as response:
            assert response.status == 200
            image_uri: str = (await response.json())["content_uri"]
        await _send(
            client, alice, room_id,
            {"msgtype": "m.image", "body": "cat.png", "url": image_uri,
             "info": {"mimetype": "image/png", "size": len(image)}},
            "m.room.message",
        )  # fmt: skip
        await _send(
            client, bob, room_id,
            {"msgtype": "m.file", "body": "gone.pdf", "url": NOT_STORED},
            "m.room.message",
        )  # fmt: skip
        secret = await _send(
            client, alice, room_id, {"msgtype": "m.text", "body": "oops secret"}, "m.room.message"
        )
        redact = f"rooms/{room_id}/redact/{secret}/t{next(_txn)}"
        (await client.request("PUT", redact, json={"reason": "typo"}, token=alice)).ok()
        last = await _send(
            client, bob, room_id, {"msgtype": "m.text", "body": "second"}, "m.room.message"
        )
        await asyncio.sleep(0.02)
        late = await _send(
            client, bob, room_id, {"msgtype": "m.text", "body": "late"}, "m.room.message"
        )

        early_ts = await _ts(client, alice, room_id, early)
        first_ts = await _ts(client, alice, room_id, first)
        last_ts = await _ts(client, alice, room_id, last)
        late_ts = await _ts(client, alice, room_id, late)
    assert early_ts < first_ts and last_ts < late_ts
    return Scene(
        homeserver,
        alice,
        bob,
        admin,
        room_id,
        image,
        image_uri,
        early_ts,
        first_ts,
        last_ts,
        late_ts,
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _messages(events: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """``(type, sender, body or marker)`` of the non-state events."""
    out = []
    for event in events:
        if "state_key" in event:
            continue
        if event.get("encrypted"):
            marker: Any = "encrypted"
        elif event.get("redacted"):
            marker = "redacted"
        else:
            marker = event["content"].get("body")
        out.append((event["type"], event["sender"], marker))
    return out


# -- room export ---------------------------------------------------------------------------


async def test_room_export_writes_jsonl_html_attachments_and_a_manifest_that_verifies(
    scene: Scene, tmp_path: Path
) -> None:
    out = tmp_path / "case-17"
    result = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", out, "--reason", "case 17", "--actor", "@legal:localhost",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "events" in result.stderr  # the progress bar
    alice, bob = scene.alice.user_id, scene.bob.user_id

    events = _lines(out / "events.jsonl")
    assert [e["type"] for e in events[:1]] == ["m.room.create"]
    assert all(e["room_id"] == scene.room_id and "unsigned" not in e for e in events)
    stream = [e["origin_server_ts"] for e in events]
    assert stream == sorted(stream)
    redaction = next(e for e in events if e["type"] == "m.room.redaction")
    assert _messages(events) == [
        ("m.room.message", alice, "early"),
        ("m.room.message", alice, HTML_BODY),
        ("m.room.encrypted", bob, "encrypted"),
        ("m.room.message", alice, "cat.png"),
        ("m.room.message", bob, "gone.pdf"),
        ("m.room.message", alice, "redacted"),
        ("m.room.redaction", alice, None),
        ("m.room.message", bob, "second"),
        ("m.room.message", bob, "late"),
    ]
    encrypted = next(e for e in events if e.get("encrypted"))
    assert encrypted["content"] == ENCRYPTED  # exported as stored
    redacted = next(e for e in events if e.get("redacted"))
    assert redacted["content"] == {}
    assert redacted["redacted_by"] == redaction["event_id"]
    assert redaction["redacts"] == redacted["event_id"]
    assert b"oops secret" not in (out / "events.jsonl").read_bytes()

    page = (out / "transcript.html").read_text(encoding="utf-8")
    assert html.escape(HTML_BODY) in page
    assert "<b>world</b>" not in page
    assert "[encrypted message]" in page and "[redacted]" in page
    assert "[image: cat.png]" in page and "[file: gone.pdf]" in page
    assert "oops secret" not in page
    assert page.index("early") < page.index(html.escape(HTML_BODY)) < page.index("second")

    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["kind"] == "room" and manifest["room_id"] == scene.room_id
    assert manifest["since_ts"] is None and manifest["until_ts"] is None
    assert manifest["exported_by"] == "@legal:localhost" and manifest["reason"] == "case 17"
    assert manifest["events"] == len(events)
    [attachment] = manifest["attachments"]
    assert attachment["uri"] == scene.image_uri
    assert attachment["path"].startswith("attachments/") and attachment["path"].endswith("cat.png")
    assert (out / attachment["path"]).read_bytes() == scene.image
    assert f'href="{attachment["path"]}"' in page
    assert manifest["missing_media"] == [{"uri": NOT_STORED, "reason": "not stored on this server"}]
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {"events.jsonl", "transcript.html", attachment["path"]}
    for path, entry in listed.items():
        data = (out / path).read_bytes()
        assert entry == {
            "path": path,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    manifest_hash = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert f"manifest sha256 {manifest_hash}" in result.stdout

    # The export is in the audit log, with the manifest's hash.
    entry = await _last_audit_entry(scene)
    assert entry["action"] == "export" and entry["target"] == scene.room_id
    assert entry["actor"] == "@legal:localhost" and entry["reason"] == "case 17"
    assert entry["details"]["manifest_sha256"] == manifest_hash
    assert entry["details"]["events"] == len(events) and entry["details"]["kind"] == "room"

    verified = peyvand("export", "verify", out)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("export OK") and manifest_hash in verified.stdout

    # Tampering: a changed event line, a removed attachment, a file slipped in.
    jsonl = out / "events.jsonl"
    jsonl.write_bytes(jsonl.read_bytes().replace(b"second", b"SECOND"))
    changed = peyvand("export", "verify", out)
    assert changed.returncode == 1
    assert "events.jsonl: SHA-256 does not match" in changed.stderr
    assert "transcript.html" not in changed.stderr
    (out / attachment["path"]).unlink()
    (out / "notes.txt").write_text("added later")
    several = peyvand("export", "verify", out)
    assert several.returncode == 1
    assert f"{attachment['path']}: missing" in several.stderr
    assert "notes.txt: not listed in the manifest" in several.stderr
    assert "3 problems" in several.stderr

    again = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", out,
    )  # fmt: skip
    assert again.returncode == 1 and "already exists" in again.stderr


def test_zip_export_verifies_and_names_a_tampered_entry(scene: Scene, tmp_path: Path) -> None:
    result = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", tmp_path / "case", "--zip",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    archive_path = tmp_path / "case.zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.zip"]  # nothing left over
    with zipfile.ZipFile(archive_path) as archive:
        names = archive.namelist()
        manifest = orjson.loads(archive.read("manifest.json"))
        contents = {name: archive.read(name) for name in names}
    assert names[-1] == "manifest.json"
    assert {"events.jsonl", "transcript.html"} <= set(names)
    [attachment] = manifest["attachments"]
    assert contents[attachment["path"]] == scene.image
    events = [orjson.loads(line) for line in contents["events.jsonl"].splitlines()]
    assert [e.get("encrypted") for e in events].count(True) == 1

    verified = peyvand("export", "verify", archive_path)
    assert verified.returncode == 0, verified.stderr

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data + b"<!-- -->" if name == "transcript.html" else data)
    failed = peyvand("export", "verify", tampered)
    assert failed.returncode == 1
    assert "transcript.html: SHA-256 does not match" in failed.stderr
    assert "events.jsonl" not in failed.stderr


def test_time_range_keeps_only_events_sent_in_it(scene: Scene, tmp_path: Path) -> None:
    # From the first message to the last ("second"), both included: "early" and "late"
    # (and the room's creation) are out.
    out = tmp_path / "range"
    result = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", out, "--since", str(scene.first_ts), "--until", str(scene.last_ts),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = _lines(out / "events.jsonl")
    assert all(scene.first_ts <= e["origin_server_ts"] <= scene.last_ts for e in events)
    bodies = [m[2] for m in _messages(events)]
    assert bodies[0] == HTML_BODY and bodies[-1] == "second"
    assert "early" not in bodies and "late" not in bodies
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert (manifest["since_ts"], manifest["until_ts"]) == (scene.first_ts, scene.last_ts)

    # Dates: a whole day, UTC; a range in the past is empty, yet verifies.
    empty = tmp_path / "2001"
    by_date = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", empty, "--since", "2001-01-01", "--until", "2001-12-31",
    )  # fmt: skip
    assert by_date.returncode == 0, by_date.stderr
    assert (empty / "events.jsonl").read_bytes() == b""
    manifest = orjson.loads((empty / "manifest.json").read_bytes())
    assert (manifest["since_ts"], manifest["until_ts"]) == (978307200000, 1009843199999)
    assert peyvand("export", "verify", empty).returncode == 0

    backwards = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", scene.room_id,
        "--out", tmp_path / "x", "--since", "2024-02-01", "--until", "2024-01-01",
    )  # fmt: skip
    assert backwards.returncode == 1 and "range is empty" in backwards.stderr
    unknown = peyvand(
        "export", "room", "--config", scene.server.config_path, "--room", "!nope:localhost",
        "--out", tmp_path / "y",
    )  # fmt: skip
    assert unknown.returncode == 1 and "unknown room" in unknown.stderr
    assert not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_user_export_has_what_the_user_sent_in_every_room(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "bob"
    result = peyvand(
        "export", "user", "--config", scene.server.config_path, "--user", scene.bob.user_id,
        "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = _lines(out / "events.jsonl")
    assert {e["sender"] for e in events} == {scene.bob.user_id}
    assert {e["room_id"] for e in events} == {scene.room_id}
    assert [m[2] for m in _messages(events)] == ["encrypted", "gone.pdf", "second", "late"]
    assert scene.room_id in (out / "transcript.html").read_text(encoding="utf-8")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["kind"] == "user" and manifest["user_id"] == scene.bob.user_id
    assert manifest["attachments"] == []
    assert peyvand("export", "verify", out).returncode == 0


# -- personal data export --------------------------------------------------------------------


def test_personal_export_has_profile_devices_messages_and_media_but_no_tokens(
    scene: Scene, tmp_path: Path
) -> None:
    out = tmp_path / "alice"
    result = peyvand(
        "export", "personal", "--config", scene.server.config_path, "--user",
        scene.alice.user_id, "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    profile = orjson.loads((out / "profile.json").read_bytes())
    assert profile["user_id"] == scene.alice.user_id and profile["is_admin"] is False
    assert profile["fields"] == {"org.example.job_title": "Analyst"}
    devices = orjson.loads((out / "devices.json").read_bytes())
    assert [d["device_id"] for d in devices] == [scene.alice.device_id]
    assert set(devices[0]) == {"device_id", "display_name", "last_seen_ts", "last_seen_ip"}
    assert isinstance(orjson.loads((out / "account_data.json").read_bytes()), list)
    messages = _lines(out / "messages.jsonl")
    assert {e["sender"] for e in messages} == {scene.alice.user_id}
    assert "early" in [m[2] for m in _messages(messages)]
    assert any(e["type"] == "m.room.create" for e in messages)
    [media] = orjson.loads((out / "media.json").read_bytes())
    assert media["uri"] == scene.image_uri and media["upload_name"] == "cat.png"
    assert (out / media["path"]).read_bytes() == scene.image
    assert media["path"].startswith("media/")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["kind"] == "personal" and manifest["missing_media"] == []
    assert {f["path"] for f in manifest["files"]} == {
        "profile.json", "devices.json", "account_data.json", "messages.jsonl", "media.json",
        media["path"],
    }  # fmt: skip
    for file in out.rglob("*"):
        if file.is_file():
            assert scene.alice.access_token.encode() not in file.read_bytes(), file
            assert b"access_token" not in file.read_bytes(), file
    assert peyvand("export", "verify", out).returncode == 0

    remote = peyvand(
        "export", "personal", "--config", scene.server.config_path, "--user",
        "@nobody:elsewhere.example", "--out", tmp_path / "nobody",
    )  # fmt: skip
    assert remote.returncode == 1 and "unknown user" in remote.stderr


# -- admin API -----------------------------------------------------------------------------


async def _admin_post(scene: Scene, path: str, body: dict[str, Any], account: Account) -> Any:
    async with new_session() as session:
        client = MatrixClient(session, scene.server.base_url)
        return await client.request(
            "POST", f"/_peyvand/admin/v1/export/{path}", json=body, token=account
        )


async def _last_audit_entry(scene: Scene) -> dict[str, Any]:
    async with new_session() as session:
        client = MatrixClient(session, scene.server.base_url)
        page = (
            await client.request(
                "GET", "/_peyvand/admin/v1/audit_log", token=scene.admin, params={"limit": "1000"}
            )
        ).ok()
    entry: dict[str, Any] = page["entries"][-1]
    return entry


async def test_admin_api_exports_a_range_of_a_room_into_the_data_dir(scene: Scene) -> None:
    body = {
        "room_id": scene.room_id,
        "since_ts": scene.first_ts,
        "until_ts": scene.late_ts - 1,
        "reason": "case 18",
    }
    answer = (await _admin_post(scene, "room", body, scene.admin)).ok()
    path = Path(answer["path"])
    assert path.parent == scene.server.data_dir / "exports"
    assert path.name.endswith(f"-room-{scene.room_id.strip('!').replace(':', '_')}")
    manifest_bytes = (path / "manifest.json").read_bytes()
    assert answer["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    events = _lines(path / "events.jsonl")
    assert answer["events"] == len(events) == orjson.loads(manifest_bytes)["events"]
    assert _messages(events)[0][2] == HTML_BODY
    assert "late" not in [m[2] for m in _messages(events)]
    assert peyvand("export", "verify", path).returncode == 0
    entry = await _last_audit_entry(scene)
    assert (entry["actor"], entry["action"], entry["target"], entry["reason"]) == (
        scene.admin.user_id, "export", scene.room_id, "case 18",
    )  # fmt: skip
    assert entry["details"]["manifest_sha256"] == answer["manifest_sha256"]

    zipped = (
        await _admin_post(scene, "room", {"room_id": scene.room_id, "zip": True}, scene.admin)
    ).ok()
    assert zipped["path"].endswith(".zip")
    assert peyvand("export", "verify", zipped["path"]).returncode == 0

    refused = await _admin_post(scene, "room", {"room_id": scene.room_id}, scene.alice)
    assert (refused.status, refused.body["errcode"]) == (403, "M_FORBIDDEN")
    unknown = await _admin_post(scene, "room", {"room_id": "!nope:localhost"}, scene.admin)
    assert (unknown.status, unknown.body["errcode"]) == (404, "M_NOT_FOUND")
    backwards = await _admin_post(
        scene, "room", {"room_id": scene.room_id, "since_ts": 10, "until_ts": 5}, scene.admin
    )
    assert (backwards.status, backwards.body["errcode"]) == (400, "M_INVALID_PARAM")
    missing = await _admin_post(scene, "room", {}, scene.admin)
    assert (missing.status, missing.body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_admin_api_personal_export(scene: Scene) -> None:
    answer = (
        await _admin_post(scene, "personal", {"user_id": scene.bob.user_id}, scene.admin)
    ).ok()
    path = Path(answer["path"])
    assert "-personal-" in path.name
    assert orjson.loads((path / "profile.json").read_bytes())["user_id"] == scene.bob.user_id
    messages = _lines(path / "messages.jsonl")
    assert answer["events"] == len(messages) and {e["sender"] for e in messages} == {
        scene.bob.user_id
    }
    assert peyvand("export", "verify", path).returncode == 0

    unknown = await _admin_post(scene, "personal", {"user_id": "@ghost:localhost"}, scene.admin)
    assert (unknown.status, unknown.body["errcode"]) == (404, "M_NOT_FOUND")
    refused = await _admin_post(scene, "personal", {"user_id": scene.bob.user_id}, scene.bob)
    assert refused.status == 403
    messages_only = (
        await _admin_post(
            scene, "user", {"user_id": scene.alice.user_id, "since_ts": scene.first_ts}, scene.admin
        )
    ).ok()
    events = _lines(Path(messages_only["path"]) / "events.jsonl")
    assert "early" not in [m[2] for m in _messages(events)]
    assert {e["sender"] for e in events} == {scene.alice.user_id}


# -- reads and verification in process -----------------------------------------------------


async def test_reads_page_through_every_batch_in_stream_order(scene: Scene) -> None:
    db = await open_database(load_config(scene.server.config_path).database)
    try:
        reads = ComplianceReads(db)
        up_to = await reads.max_stream_ordering()

        async def room(batch: int, since: int | None = None) -> list[ExportEventRow]:
            pages = reads.room_events(scene.room_id, since, None, up_to, batch)
            return [row async for page in pages for row in page]

        whole = await room(1000)
        assert len(whole) > 10
        assert await room(2) == await room(3) == whole
        assert [r.stream_ordering for r in whole] == sorted(r.stream_ordering for r in whole)
        assert await reads.count_room_events(scene.room_id, None, None, up_to) == len(whole)
        in_range = [r for r in whole if r.origin_server_ts >= scene.first_ts]
        assert await room(2, scene.first_ts) == in_range
        assert await reads.count_room_events(scene.room_id, scene.first_ts, None, up_to) == len(
            in_range
        )
        # Nothing after the position the export started at.
        assert [
            r
            async for page in reads.room_events(
                scene.room_id, None, None, whole[3].stream_ordering, 2
            )
            for r in page
        ] == whole[:4]

        bob = [
            r
            async for page in reads.user_events(scene.bob.user_id, None, None, up_to, 1)
            for r in page
        ]
        assert bob == [r for r in whole if r.sender == scene.bob.user_id]
        devices = [d async for page in reads.devices(scene.alice.user_id, 1) for d in page]
        assert [d.device_id for d in devices] == [scene.alice.device_id]
        [[media]] = [page async for page in reads.media_uploaded_by(scene.alice.user_id, 1)]
        assert f"mxc://{media.origin}/{media.media_id}" == scene.image_uri
        found = await reads.media_by_keys([(media.origin, media.media_id), ("localhost", "nope")])
        assert list(found) == [(media.origin, media.media_id)]
        assert (await reads.profile(scene.alice.user_id)) is not None
        assert await reads.profile("@nobody:localhost") is None
    finally:
        await db.close()


def test_verify_rejects_paths_outside_the_export_and_malformed_manifests(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    outside = hashlib.sha256(b"outside").hexdigest()
    manifest = {"files": [{"path": "../secret.txt", "sha256": outside, "size": 7}, {"path": 3}]}
    (export / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert verify_manifest(export) == [
        "manifest.json: file path '../secret.txt' is not inside the export",
        "manifest.json: malformed file entry {'path': 3}",
    ]
    (export / "manifest.json").write_text("{not json")
    assert verify_manifest(export) == ["manifest.json: not valid JSON"]
    (export / "manifest.json").unlink()
    assert verify_manifest(export) == ["manifest.json: missing"]
    assert verify_manifest(tmp_path / "nowhere")[0].endswith("no such file or folder")
