"""matrix-nio sends an image through Peyvand's media repository: Alice uploads it and posts
it as ``m.image``; Bob receives the event through sync and downloads the same bytes and a
thumbnail through the authenticated media endpoints. A 200 MB upload against the default
100 MiB limit is refused with 413 without the server's memory growing by the upload."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nio
import pytest
from PIL import Image

from harness.nio_client import ok, shared_room, sync_until, timeline
from harness.server import HomeserverProcess

pytestmark = pytest.mark.clients

OVERALL_TIMEOUT_SECONDS = 90
BIG_UPLOAD = 200 * 1000 * 1000
CHUNK = 1024 * 1024
# The server may buffer a few chunks; holding the upload would take 200 MB.
MEMORY_GROWTH_LIMIT = 64 * 1024 * 1024


def _photo() -> bytes:
    image = Image.new("RGB", (640, 480))
    for x in range(0, 640, 8):
        for y in range(0, 480, 8):
            image.putpixel((x, y), (x % 256, y % 256, (x + y) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


async def test_nio_sends_and_receives_an_image(
    pair: tuple[nio.AsyncClient, nio.AsyncClient],
) -> None:
    alice, bob = pair
    photo = _photo()
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS):
        room_id = await shared_room(alice, bob)
        uploaded, _ = await alice.upload(
            io.BytesIO(photo), content_type="image/jpeg", filename="photo.jpg",
            filesize=len(photo),
        )  # fmt: skip
        content_uri = ok(uploaded, nio.UploadResponse).content_uri
        content = {
            "msgtype": "m.image",
            "body": "photo.jpg",
            "url": content_uri,
            "info": {"mimetype": "image/jpeg", "size": len(photo), "w": 640, "h": 480},
        }
        ok(await alice.room_send(room_id, "m.room.message", content), nio.RoomSendResponse)

        received: list[nio.RoomMessageImage] = []

        def got_image(response: nio.SyncResponse) -> bool:
            received.extend(
                event
                for event in timeline(response, room_id)
                if isinstance(event, nio.RoomMessageImage)
            )
            return bool(received)

        await sync_until(bob, got_image)
        assert received[0].url == content_uri

        downloaded = ok(await bob.download(mxc=received[0].url), nio.DownloadResponse)
        assert downloaded.body == photo
        assert downloaded.content_type == "image/jpeg"
        assert downloaded.filename == "photo.jpg"

        server_name, media_id = content_uri.removeprefix("mxc://").split("/")
        thumbnail = ok(
            await bob.thumbnail(server_name, media_id, 96, 96, nio.ResizingMethod.crop),
            nio.ThumbnailResponse,
        )
        assert thumbnail.content_type == "image/jpeg"
        assert Image.open(io.BytesIO(thumbnail.body)).size == (96, 96)
        scaled = ok(
            await bob.thumbnail(server_name, media_id, 320, 240, nio.ResizingMethod.scale),
            nio.ThumbnailResponse,
        )
        assert Image.open(io.BytesIO(scaled.body)).size == (320, 240)


async def test_nio_upload_over_the_limit_gets_413_without_filling_memory(
    homeserver: HomeserverProcess, pair: tuple[nio.AsyncClient, nio.AsyncClient]
) -> None:
    alice, _ = pair
    zeros = bytes(CHUNK)

    def provider(_got_429: int, _got_timeouts: int) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            while sent < BIG_UPLOAD:
                size = min(CHUNK, BIG_UPLOAD - sent)
                sent += size
                yield zeros[:size]

        return chunks()

    peak_before = _peak_rss(homeserver.pid)
    async with asyncio.timeout(OVERALL_TIMEOUT_SECONDS):
        result: Any
        result, _ = await alice.upload(
            provider, content_type="video/mp4", filename="huge.mp4", filesize=BIG_UPLOAD
        )
    assert isinstance(result, nio.UploadError), result
    assert result.status_code == "M_TOO_LARGE"
    assert _peak_rss(homeserver.pid) - peak_before < MEMORY_GROWTH_LIMIT
    assert "Unhandled error" not in homeserver.log()
