"""The media repository over HTTP (Client-Server API, "Content repository"), on a server
with a small quota, a freeze date in the future and URL previews allowed to one loopback
address; plus the defaults on the session's shared server. Files and rows are checked
directly: after every delete, quarantine and purge, the media directory holds exactly the
files the database names. The last part drives the media service in process, on both
backends, for races and failures that HTTP cannot time (quota, expiry, waiters, deletes
during thumbnailing, database and disk errors)."""

from __future__ import annotations

import asyncio
import errno
import functools
import io
import logging
import os
import re
import socket
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

import peyvand.services.media.janitor as media_janitor_module
from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.database import query
from harness.server import HomeserverProcess, start_homeserver
from harness.sync import LongPoll
from peyvand.api.media import content_repo
from peyvand.config import MediaConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.media import files as media_files_module
from peyvand.media.files import FileWriter, MediaFiles
from peyvand.services.accounts.requester import Requester
from peyvand.services.media.downloads import Download
from peyvand.services.media.repository import MediaService
from peyvand.services.media.url_preview import UrlPreviewService
from peyvand.storage.database import Database
from peyvand.storage.errors import StorageError
from peyvand.storage.media import MediaRow, MediaStore, ThumbnailRow
from peyvand.types import DeviceID, ServerName, UserID

QUOTA = 4 * 1024 * 1024
MAX_PENDING = 3
PREVIEW_HOST = "127.0.0.2"
ADMIN_PASSWORD = "admin password for media tests"
MEDIA = "/_matrix/client/v1/media"


@pytest.fixture(scope="module")
def media_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("media"),
        options={
            "media.user_quota": str(QUOTA),
            "media.max_pending_uploads": str(MAX_PENDING),
            "media.unauthenticated_media_before": '"2100-01-01T00:00:00Z"',
            "media.url_preview_enabled": "true",
            "media.url_preview_allowed_networks": f'["{PREVIEW_HOST}/32"]',
            "media.url_preview_timeout": "3.0",
            "admin_contact": '"mailto:media-admin@localhost"',
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as session:
        yield session


@pytest.fixture
async def mc(media_server: HomeserverProcess, http: aiohttp.ClientSession) -> MatrixClient:
    return MatrixClient(http, media_server.base_url)


@pytest.fixture(scope="module")
def admin_name(media_server: HomeserverProcess) -> str:
    import subprocess
    import sys

    name = unique_localpart("admin")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "peyvand",
            "register-user",
            "--config",
            str(media_server.config_path),
            "--user",
            name,
            "--password",
            ADMIN_PASSWORD,
            "--admin",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return name


def _png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def _upload(
    http: aiohttp.ClientSession,
    server: HomeserverProcess,
    account: Account,
    data: bytes,
    content_type: str | None = "application/octet-stream",
    filename: str | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {account.access_token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    params = {"filename": filename} if filename is not None else None
    async with http.post(
        f"{server.base_url}/_matrix/media/v3/upload",
        data=io.BytesIO(data),
        headers=headers,
        params=params,
    ) as response:
        return response.status, await response.json(content_type=None)


async def _uploaded(
    http: aiohttp.ClientSession,
    server: HomeserverProcess,
    account: Account,
    data: bytes,
    content_type: str = "application/octet-stream",
    filename: str | None = None,
) -> tuple[str, str]:
    """Upload; ``(server_name, media_id)`` of the new mxc URI."""
    status, body = await _upload(http, server, account, data, content_type, filename)
    assert status == 200, body
    server_name, media_id = body["content_uri"].removeprefix("mxc://").split("/")
    return server_name, media_id


async def _get(
    http: aiohttp.ClientSession,
    url: str,
    account: Account | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    all_headers = dict(headers or {})
    if account is not None:
        all_headers["Authorization"] = f"Bearer {account.access_token}"
    async with http.get(url, headers=all_headers, params=params) as response:
        return response.status, response.headers, await response.read()


async def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) for a condition the server makes true in the background."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


def _errcode(body: bytes) -> str:
    import json

    return str(json.loads(body)["errcode"])


def _files(server: HomeserverProcess) -> set[str]:
    blobs = server.data_dir / "media" / "blobs"
    return {path.name for path in blobs.rglob("*") if path.is_file()}


async def _referenced(server: HomeserverProcess) -> set[str]:
    rows = await query(
        server,
        "SELECT sha256 FROM media WHERE sha256 IS NOT NULL"
        " UNION SELECT sha256 FROM media_thumbnails",
    )
    return {row[0] for row in rows}


async def _assert_consistent(server: HomeserverProcess) -> None:
    """Every file is named by a row, every row's file exists, nothing is left in tmp/."""
    assert _files(server) == await _referenced(server)
    assert list((server.data_dir / "media" / "tmp").iterdir()) == []


# -- upload and download ----------------------------------------------------------------


async def test_upload_then_download_same_bytes_with_safe_headers(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice, bob = await mc.register(), await mc.register()
    data = _png(64, 48)
    origin, media_id = await _uploaded(http, media_server, alice, data, "image/png", "cat.png")
    assert origin == media_server.server_name
    status, headers, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}", bob
    )
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'inline; filename="cat.png"'
    assert "sandbox" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, headers, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}/other.png", bob
    )
    assert (status, body) == (200, data)
    assert headers["Content-Disposition"] == 'inline; filename="other.png"'


async def test_unsafe_types_are_attachments_and_names_are_encoded(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    html = b"<script>alert(1)</script>"
    origin, media_id = await _uploaded(http, media_server, alice, html, "text/html", "x.html")
    _, headers, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}", alice
    )
    assert body == html
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Disposition"] == 'attachment; filename="x.html"'

    origin, media_id = await _uploaded(http, media_server, alice, b"hi", "text/plain", "نامه.txt")
    _, headers, _ = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}", alice
    )
    assert headers["Content-Disposition"] == (
        "inline; filename*=utf-8''%D9%86%D8%A7%D9%85%D9%87.txt"
    )

    status, body = await _upload(http, media_server, alice, b"no type", content_type=None)
    assert status == 200
    media_id = body["content_uri"].rsplit("/", 1)[1]
    _, headers, _ = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}", alice
    )
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"


async def test_download_needs_a_token(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    origin, media_id = await _uploaded(http, media_server, alice, b"secret")
    url = f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}"
    status, _, body = await _get(http, url)
    assert (status, _errcode(body)) == (401, "M_MISSING_TOKEN")
    status, _, body = await _get(http, url, headers={"Authorization": "Bearer nonsense"})
    assert (status, _errcode(body)) == (401, "M_UNKNOWN_TOKEN")
    status, _, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/thumbnail/{origin}/{media_id}",
        params={"width": "32", "height": "32"},
    )  # fmt: skip
    assert (status, _errcode(body)) == (401, "M_MISSING_TOKEN")


async def test_range_requests_return_the_right_slice(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    data = bytes(range(256)) * 1000
    origin, media_id = await _uploaded(http, media_server, alice, data, "video/mp4")
    url = f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}"

    status, headers, body = await _get(http, url, alice, {"Range": "bytes=1000-1999"})
    assert status == 206
    assert body == data[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = await _get(http, url, alice, {"Range": "bytes=-300"})
    assert (status, body) == (206, data[-300:])
    status, _, body = await _get(http, url, alice, {"Range": f"bytes={len(data) - 10}-"})
    assert (status, body) == (206, data[-10:])
    status, headers, _ = await _get(http, url, alice, {"Range": f"bytes={len(data) + 5}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(data)}"


async def test_identical_content_is_stored_once(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice, bob = await mc.register(), await mc.register()
    data = f"shared {unique_localpart()}".encode()
    before = _files(media_server)
    first = await _uploaded(http, media_server, alice, data)
    second = await _uploaded(http, media_server, bob, data)
    assert first != second
    assert len(_files(media_server) - before) == 1
    await _assert_consistent(media_server)


async def test_bad_uploads_and_ids(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    status, body = await _upload(http, media_server, alice, b"x", filename="a/b")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    async with http.post(f"{media_server.base_url}/_matrix/media/v3/upload", data=b"x") as r:
        assert (r.status, (await r.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    base = f"{media_server.base_url}{MEDIA}/download"
    for path in (f"{media_server.server_name}/no-such-media", "bad%20server/abc", "localhost/a.b"):
        status, _, body = await _get(http, f"{base}/{path}", alice)
        assert (status, _errcode(body)) == (404, "M_NOT_FOUND"), path
    status, _, body = await _get(http, f"{base}/other.example/abcdef", alice)
    assert (status, _errcode(body)) == (404, "M_NOT_FOUND")


async def test_config_reports_the_upload_limit(mc: MatrixClient) -> None:
    alice = await mc.register()
    for path in (f"{MEDIA}/config", "/_matrix/media/v3/config"):
        assert (await mc.request("GET", path, token=alice)).ok() == {
            "m.upload.size": 100 * 1024 * 1024
        }


# -- limits ------------------------------------------------------------------------------


async def test_quota_refuses_uploads_beyond_it(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    await _uploaded(http, media_server, alice, b"a" * (3 * 1024 * 1024))
    before = _files(media_server)
    status, body = await _upload(http, media_server, alice, b"b" * (2 * 1024 * 1024))
    assert (status, body["errcode"]) == (403, "M_RESOURCE_LIMIT_EXCEEDED")
    assert body["admin_contact"] == "mailto:media-admin@localhost"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(32):
            yield b"c" * (64 * 1024)

    async with http.post(
        f"{media_server.base_url}/_matrix/media/v3/upload",
        data=chunks(),
        headers={"Authorization": f"Bearer {alice.access_token}"},
    ) as response:
        assert response.status == 403
        assert (await response.json())["errcode"] == "M_RESOURCE_LIMIT_EXCEEDED"
    assert _files(media_server) == before
    await _uploaded(http, media_server, alice, b"d" * (512 * 1024))  # still within quota
    await _assert_consistent(media_server)


async def test_upload_over_the_size_limit_is_refused_from_its_header(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    """101 MiB announced: 413 M_TOO_LARGE before the body is read."""
    alice = await client.register()
    reader, writer = await asyncio.open_connection("127.0.0.1", homeserver.port)
    try:
        writer.write(
            b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {alice.access_token}\r\n".encode()
            + f"Content-Length: {101 * 1024 * 1024}\r\n\r\n".encode()
            + b"x" * 1024
        )
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            head = await reader.readuntil(b"\r\n\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        async with asyncio.timeout(10):
            assert b"M_TOO_LARGE" in await reader.readexactly(length)
    finally:
        writer.close()


async def test_an_interrupted_upload_leaves_no_file_and_no_row(
    media_server: HomeserverProcess, mc: MatrixClient
) -> None:
    alice = await mc.register()
    rows_before = await query(media_server, "SELECT COUNT(*) FROM media")
    files_before = _files(media_server)
    sock = socket.create_connection(("127.0.0.1", media_server.port))
    try:
        sock.sendall(
            b"POST /_matrix/media/v3/upload?filename=cut.bin HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {alice.access_token}\r\n".encode()
            + b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {2 * 1024 * 1024}\r\n\r\n".encode()
            + b"y" * (700 * 1024)
        )
    finally:
        sock.close()  # the client dies mid-upload
    tmp = media_server.data_dir / "media" / "tmp"
    await _eventually(lambda: not list(tmp.iterdir()))
    assert _files(media_server) == files_before
    assert await query(media_server, "SELECT COUNT(*) FROM media") == rows_before
    assert "Unhandled error" not in media_server.log()


# -- asynchronous upload -----------------------------------------------------------------


async def test_create_then_upload_and_a_waiting_download(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice, bob = await mc.register(), await mc.register()
    before = int(time.time() * 1000)
    created = (await mc.request("POST", "/_matrix/media/v1/create", json={}, token=alice)).ok()
    assert created["unused_expires_at"] >= before + 23 * 3600 * 1000
    origin, media_id = created["content_uri"].removeprefix("mxc://").split("/")
    url = f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}"

    status, _, body = await _get(http, url, bob, params={"timeout_ms": "0"})
    assert (status, _errcode(body)) == (504, "M_NOT_YET_UPLOADED")

    waiting = await LongPoll.start(_get(http, url, bob, params={"timeout_ms": "10000"}), 10)
    put_url = f"{media_server.base_url}/_matrix/media/v3/upload/{origin}/{media_id}"
    auth = {"Authorization": f"Bearer {bob.access_token}", "Content-Type": "text/plain"}
    async with http.put(put_url, data=b"late", headers=auth) as response:
        assert (response.status, (await response.json())["errcode"]) == (403, "M_FORBIDDEN")
    auth["Authorization"] = f"Bearer {alice.access_token}"
    waiting.assert_waiting()  # the refused upload woke nobody
    async with http.put(put_url, data=b"late content", headers=auth) as response:
        assert (response.status, await response.json()) == (200, {})
    status, headers, body = await waiting.woken()
    assert (status, body) == (200, b"late content")
    assert headers["Content-Type"].startswith("text/plain")
    async with http.put(put_url, data=b"again", headers=auth) as response:
        assert response.status == 409
        assert (await response.json())["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    unknown = f"{media_server.base_url}/_matrix/media/v3/upload/{origin}/NoSuchMedia"
    async with http.put(unknown, data=b"x", headers=auth) as response:
        assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")


async def test_pending_uploads_are_limited(mc: MatrixClient) -> None:
    alice = await mc.register()
    for _ in range(MAX_PENDING):
        (await mc.request("POST", "/_matrix/media/v1/create", json={}, token=alice)).ok()
    refused = await mc.request("POST", "/_matrix/media/v1/create", json={}, token=alice)
    assert (refused.status, refused.body["errcode"]) == (429, "M_LIMIT_EXCEEDED")


# -- thumbnails --------------------------------------------------------------------------


async def _thumbnail(
    http: aiohttp.ClientSession,
    server: HomeserverProcess,
    account: Account,
    key: tuple[str, str],
    **params: str,
) -> tuple[int, Any, bytes]:
    url = f"{server.base_url}{MEDIA}/thumbnail/{key[0]}/{key[1]}"
    return await _get(http, url, account, params=params)


async def test_thumbnails_scale_and_crop_once(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    key = await _uploaded(http, media_server, alice, _png(1000, 800, (1, 2, 3)), "image/png")
    # 320x240 (scale) and 96x96 (crop) are sizes of the ladder requests snap to, so they are
    # made and stored at exactly the requested size (see the next test for other sizes).

    status, headers, body = await _thumbnail(
        http, media_server, alice, key, width="320", height="240", method="scale"
    )
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (300, 240)

    files = _files(media_server)
    status, headers, body = await _thumbnail(
        http, media_server, alice, key, width="96", height="96", method="crop"
    )
    assert status == 200
    assert Image.open(io.BytesIO(body)).size == (96, 96)
    assert len(_files(media_server) - files) == 1
    again = await _thumbnail(http, media_server, alice, key, width="96", height="96", method="crop")
    assert again[2] == body
    assert len(_files(media_server) - files) == 1  # made once, then served from storage
    rows = await query(
        media_server,
        "SELECT width, height, method FROM media_thumbnails WHERE media_id = $1",
        key[1],
    )
    assert sorted(rows) == [(96, 96, "crop"), (320, 240, "scale")]


async def test_thumbnail_sizes_snap_up_to_a_ladder(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    """Requests are served from the next size up of a fixed ladder, never smaller than asked:
    a client asking for every size from 1 to 4096 used to make the server decode the image
    and store a new thumbnail each time (disk and CPU amplification)."""
    alice = await mc.register()
    original = _png(1500, 1500, (4, 5, 6))
    key = await _uploaded(http, media_server, alice, original, "image/png")

    async def size_of(**params: str) -> tuple[int, int]:
        status, _, body = await _thumbnail(http, media_server, alice, key, **params)
        assert status == 200, params
        with Image.open(io.BytesIO(body)) as image:
            return image.size

    # scale 300x200 -> the 320x240 box; the square image fits it as 240x240.
    assert await size_of(width="300", height="200", method="scale") == (240, 240)
    assert await size_of(width="320", height="240", method="scale") == (240, 240)
    # crop: each side snapped up on its own.
    assert await size_of(width="100", height="100", method="crop") == (128, 128)
    assert await size_of(width="128", height="110", method="crop") == (128, 128)
    assert await size_of(width="100", height="50", method="crop") == (128, 64)
    files = _files(media_server)
    # Twenty sizes near the image's own: all snap to 1600x1600, which the image fits, so the
    # original is served and nothing is made or stored.
    for side in range(1490, 1470, -1):
        status, _, body = await _thumbnail(
            http, media_server, alice, key, width=str(side), height=str(side), method="crop"
        )
        assert (status, body) == (200, original)
    # Beyond the ladder: the original as well (it is a thumbnailable image).
    for params in ({"width": "2000", "height": "100"}, {"width": "100", "height": "1700"}):
        status, _, body = await _thumbnail(http, media_server, alice, key, **params)
        assert (status, body) == (200, original), params
    assert _files(media_server) == files
    rows = await query(
        media_server,
        "SELECT width, height, method FROM media_thumbnails WHERE media_id = $1",
        key[1],
    )
    assert sorted(rows) == [(128, 64, "crop"), (128, 128, "crop"), (320, 240, "scale")]
    await _assert_consistent(media_server)


async def test_small_images_are_returned_as_they_are(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    data = _png(40, 30)
    key = await _uploaded(http, media_server, alice, data, "image/png")
    status, headers, body = await _thumbnail(
        http, media_server, alice, key, width="96", height="96", method="crop"
    )
    assert (status, body) == (200, data)
    assert headers["Content-Type"] == "image/png"


async def test_thumbnail_errors(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    text = await _uploaded(http, media_server, alice, b"not an image at all", "image/png")
    status, _, body = await _thumbnail(http, media_server, alice, text, width="32", height="32")
    assert (status, _errcode(body)) == (400, "M_UNKNOWN")

    bomb = await _uploaded(http, media_server, alice, _bomb_png(60000, 60000), "image/png")
    status, _, body = await _thumbnail(http, media_server, alice, bomb, width="32", height="32")
    assert (status, _errcode(body)) == (413, "M_TOO_LARGE")

    image = await _uploaded(http, media_server, alice, _png(100, 100), "image/png")
    status, _, body = await _thumbnail(http, media_server, alice, image, width="32")
    assert (status, _errcode(body)) == (400, "M_MISSING_PARAM")
    for params in (
        {"width": "32", "height": "32", "method": "stretch"},
        {"width": "0", "height": "32"},
        {"width": "x", "height": "32"},
        {"width": "100000", "height": "32"},
    ):
        status, _, body = await _thumbnail(http, media_server, alice, image, **params)
        assert (status, _errcode(body)) == (400, "M_INVALID_PARAM"), params
    assert "Unhandled error" not in media_server.log()


# -- the freeze of unauthenticated media -------------------------------------------------


async def test_legacy_endpoints_serve_media_from_before_the_freeze(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    alice = await mc.register()
    data = _png(50, 50)
    origin, media_id = await _uploaded(http, media_server, alice, data, "image/png")
    status, _, body = await _get(
        http, f"{media_server.base_url}/_matrix/media/v3/download/{origin}/{media_id}"
    )
    assert (status, body) == (200, data)
    status, _, body = await _get(
        http,
        f"{media_server.base_url}/_matrix/media/v3/thumbnail/{origin}/{media_id}",
        params={"width": "64", "height": "64"},
    )
    assert (status, body) == (200, data)


async def test_legacy_endpoints_are_frozen_by_default(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice = await client.register()
    async with new_session() as http:
        origin, media_id = await _uploaded(http, homeserver, alice, b"new media")
        legacy = f"{homeserver.base_url}/_matrix/media/v3/download/{origin}/{media_id}"
        status, _, body = await _get(http, legacy)
        assert (status, _errcode(body)) == (404, "M_NOT_FOUND")
        status, _, body = await _get(http, legacy, alice)  # a token does not lift the freeze
        assert (status, _errcode(body)) == (404, "M_NOT_FOUND")
        status, _, body = await _get(
            http, f"{homeserver.base_url}{MEDIA}/download/{origin}/{media_id}", alice
        )
        assert (status, body) == (200, b"new media")


# -- administration ----------------------------------------------------------------------


async def test_quarantine_hides_media_and_keeps_its_file(
    media_server: HomeserverProcess,
    mc: MatrixClient,
    http: aiohttp.ClientSession,
    admin_name: str,
) -> None:
    admin = await mc.login(admin_name, ADMIN_PASSWORD)
    alice, bob = await mc.register(), await mc.register()
    data = _png(200, 200, (9, 9, 9))
    key = await _uploaded(http, media_server, alice, data, "image/png")
    earlier = await _uploaded(http, media_server, bob, data, "image/png")  # same bytes
    await _thumbnail(http, media_server, alice, key, width="32", height="32")
    path = f"/_synapse/admin/v1/media/quarantine/{key[0]}/{key[1]}"

    refused = await mc.request("POST", path, json={}, token=alice)
    assert (refused.status, refused.body["errcode"]) == (403, "M_FORBIDDEN")
    (await mc.request("POST", path, json={}, token=admin)).ok()
    download = f"{media_server.base_url}{MEDIA}/download/{key[0]}/{key[1]}"
    status, _, body = await _get(http, download, alice)
    assert (status, _errcode(body)) == (404, "M_NOT_FOUND")
    status, _, body = await _thumbnail(http, media_server, alice, key, width="32", height="32")
    assert (status, _errcode(body)) == (404, "M_NOT_FOUND")
    rows = await query(
        media_server, "SELECT quarantined_by, sha256 FROM media WHERE media_id = $1", key[1]
    )
    assert rows[0][0] == admin.user_id
    assert rows[0][1] in _files(media_server)
    # Quarantine is by content (as Synapse's): an earlier upload of the same bytes, under
    # another URI, is not served either.
    earlier_url = f"{media_server.base_url}{MEDIA}/download/{earlier[0]}/{earlier[1]}"
    status, _, body = await _get(http, earlier_url, bob)
    assert (status, _errcode(body)) == (404, "M_NOT_FOUND")

    copy = await _uploaded(http, media_server, alice, data, "image/png")  # same bytes again
    copy_url = f"{media_server.base_url}{MEDIA}/download/{copy[0]}/{copy[1]}"
    status, _, _ = await _get(http, copy_url, alice)
    assert status == 404

    # Releasing the item releases every item with its bytes.
    path = f"/_synapse/admin/v1/media/unquarantine/{key[0]}/{key[1]}"
    (await mc.request("POST", path, json={}, token=admin)).ok()
    for url in (download, earlier_url, copy_url):
        assert (await _get(http, url, alice))[:3:2] == (200, data), url
    await _assert_consistent(media_server)


async def test_delete_removes_rows_thumbnails_and_unshared_files(
    media_server: HomeserverProcess,
    mc: MatrixClient,
    http: aiohttp.ClientSession,
    admin_name: str,
) -> None:
    admin = await mc.login(admin_name, ADMIN_PASSWORD)
    alice = await mc.register()
    data = _png(300, 200, (5, 6, 7))
    first = await _uploaded(http, media_server, alice, data, "image/png")
    second = await _uploaded(http, media_server, alice, data, "image/png")
    await _thumbnail(http, media_server, alice, first, width="64", height="64", method="crop")
    sha = (await query(media_server, "SELECT sha256 FROM media WHERE media_id = $1", first[1]))[0][
        0
    ]

    path = f"/_synapse/admin/v1/media/{first[0]}/{first[1]}"
    assert (await mc.request("DELETE", path, token=admin)).ok() == {
        "deleted_media": [first[1]],
        "total": 1,
    }
    assert sha in _files(media_server)  # still used by the second upload
    assert await query(
        media_server, "SELECT COUNT(*) FROM media_thumbnails WHERE media_id = $1", first[1]
    ) == [(0,)]
    await _assert_consistent(media_server)
    missing = await mc.request("DELETE", path, token=admin)
    assert (missing.status, missing.body["errcode"]) == (404, "M_NOT_FOUND")

    (
        await mc.request("DELETE", f"/_synapse/admin/v1/media/{second[0]}/{second[1]}", token=admin)
    ).ok()
    assert sha not in _files(media_server)
    await _assert_consistent(media_server)


async def test_purge_removes_media_not_accessed_since(
    media_server: HomeserverProcess,
    mc: MatrixClient,
    http: aiohttp.ClientSession,
    admin_name: str,
) -> None:
    admin = await mc.login(admin_name, ADMIN_PASSWORD)
    alice = await mc.register()
    stale = await _uploaded(http, media_server, alice, b"stale " + unique_localpart().encode())
    fresh = await _uploaded(http, media_server, alice, b"fresh " + unique_localpart().encode())
    avatar = await _uploaded(http, media_server, alice, _png(20, 20, (1, 1, 1)), "image/png")
    (
        await mc.request(
            "PUT",
            f"profile/{alice.user_id}/avatar_url",
            json={"avatar_url": f"mxc://{avatar[0]}/{avatar[1]}"},
            token=alice,
        )
    ).ok()
    await asyncio.sleep(0.05)
    cutoff = int(time.time() * 1000)
    await asyncio.sleep(0.05)
    fresh_url = f"{media_server.base_url}{MEDIA}/download/{fresh[0]}/{fresh[1]}"
    assert (await _get(http, fresh_url, alice))[0] == 200

    refused = await mc.request(
        "POST", "/_synapse/admin/v1/media/delete", params={"before_ts": str(cutoff)}, token=alice
    )
    assert refused.status == 403
    missing = await mc.request("POST", "/_synapse/admin/v1/media/delete", token=admin)
    assert (missing.status, missing.body["errcode"]) == (400, "M_MISSING_PARAM")
    result = (
        await mc.request(
            "POST",
            "/_synapse/admin/v1/media/delete",
            params={"before_ts": str(cutoff)},
            token=admin,
        )
    ).ok()
    assert result["total"] >= 1
    remaining = {row[0] for row in await query(media_server, "SELECT media_id FROM media")}
    assert stale[1] not in remaining
    assert fresh[1] in remaining
    assert avatar[1] in remaining
    status, _, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{stale[0]}/{stale[1]}", alice
    )
    assert (status, _errcode(body)) == (404, "M_NOT_FOUND")
    assert (await _get(http, fresh_url, alice))[0] == 200
    await _assert_consistent(media_server)


def _age(path: Path) -> None:
    """Make ``path`` two hours old (older than the orphan sweep's margin)."""
    then = time.time() - 2 * 3600
    os.utime(path, (then, then))


async def test_orphaned_files_are_swept_at_start(
    media_server: HomeserverProcess, mc: MatrixClient, http: aiohttp.ClientSession
) -> None:
    """A crash between a file and its row leaves an orphan; the next start removes it
    once it is over an hour old (a file written just now may be waiting for its row, in
    another process sharing the store)."""
    alice = await mc.register()
    kept = await _uploaded(http, media_server, alice, b"kept across restarts")
    blobs = media_server.data_dir / "media" / "blobs"
    orphan_path = blobs / "ab" / "ab" / ("ab" * 32)
    fresh_path = blobs / "cd" / "cd" / ("cd" * 32)
    media_server.stop()
    for path in (orphan_path, fresh_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"no row names me")
    _age(orphan_path)
    (media_server.data_dir / "media" / "tmp" / "half-written").write_bytes(b"partial")
    media_server.start()
    await _eventually(lambda: not orphan_path.exists())
    assert fresh_path.exists()
    fresh_path.unlink()
    await _assert_consistent(media_server)
    status, _, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{kept[0]}/{kept[1]}", alice
    )
    assert (status, body) == (200, b"kept across restarts")


# -- URL previews ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def preview_site() -> AsyncIterator[str]:
    """Pages on 127.0.0.2 (allowed in the media server's config) and 127.0.0.1 (not)."""
    image = _png(120, 90, (0, 128, 255))

    async def page(_: web.Request) -> web.Response:
        html = (
            "<html><head><title>Fallback</title>"
            '<meta property="og:title" content="Peyvand links people">'
            '<meta property="og:description" content="A Matrix homeserver">'
            '<meta property="og:image" content="/logo.png">'
            "</head><body>hello</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def logo(_: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    async def many(_: web.Request) -> web.Response:
        tags = "".join(
            f'<meta property="og:tag{i}" content="{chr(ord("a") + i % 26) * 3000}">'
            for i in range(120)
        )
        return web.Response(text=f"<html><head>{tags}</head></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/logo.png", logo)
    app.router.add_get("/many", many)
    runner = await _serve_on_both_hosts(app)
    try:
        yield f"{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _serve_on_both_hosts(app: web.Application, attempts: int = 20) -> web.AppRunner:
    """``app`` on one port of both PREVIEW_HOST and 127.0.0.1: the port the kernel picks
    on PREVIEW_HOST may be taken on 127.0.0.1 by another process, so try again (bounded)."""
    for _ in range(attempts):
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, PREVIEW_HOST, 0).start()
        port = runner.addresses[0][1]
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return runner
    raise RuntimeError(f"no port free on both {PREVIEW_HOST} and 127.0.0.1 in {attempts} tries")


async def test_url_preview_of_an_allowed_page(
    media_server: HomeserverProcess,
    mc: MatrixClient,
    http: aiohttp.ClientSession,
    preview_site: str,
) -> None:
    alice = await mc.register()
    url = f"http://{PREVIEW_HOST}:{preview_site}/"
    preview = (
        await mc.request("GET", f"{MEDIA}/preview_url", params={"url": url}, token=alice)
    ).ok()
    assert preview["og:title"] == "Peyvand links people"
    assert preview["og:description"] == "A Matrix homeserver"
    assert preview["og:image:width"] == 120
    assert preview["og:image:height"] == 90
    assert preview["og:image"].startswith(f"mxc://{media_server.server_name}/")
    origin, media_id = preview["og:image"].removeprefix("mxc://").split("/")
    status, _, body = await _get(
        http, f"{media_server.base_url}{MEDIA}/download/{origin}/{media_id}", alice
    )
    assert status == 200
    assert len(body) == preview["matrix:image:size"]
    assert Image.open(io.BytesIO(body)).size == (120, 90)
    # The server fetched it, not alice: it has no owner and uses nobody's quota.
    assert await query(media_server, "SELECT user_id FROM media WHERE media_id = $1", media_id) == [
        (None,)
    ]


async def test_url_previews_are_bounded(mc: MatrixClient, preview_site: str) -> None:
    """A page with 120 OpenGraph tags of 3000 characters each: at most 50 keys come back,
    each value cut to 1000 characters."""
    alice = await mc.register()
    url = f"http://{PREVIEW_HOST}:{preview_site}/many"
    preview = (
        await mc.request("GET", f"{MEDIA}/preview_url", params={"url": url}, token=alice)
    ).ok()
    assert len([key for key in preview if key.startswith("og:")]) == 50
    assert all(len(value) == 1000 for value in preview.values())


async def test_url_preview_refuses_loopback_and_bad_urls(
    mc: MatrixClient, preview_site: str
) -> None:
    alice = await mc.register()
    for url in (f"http://127.0.0.1:{preview_site}/", f"http://localhost:{preview_site}/"):
        refused = await mc.request("GET", f"{MEDIA}/preview_url", params={"url": url}, token=alice)
        assert (refused.status, refused.body["errcode"]) == (403, "M_FORBIDDEN"), url
    for url in ("file:///etc/passwd", "not a url"):
        refused = await mc.request("GET", f"{MEDIA}/preview_url", params={"url": url}, token=alice)
        assert (refused.status, refused.body["errcode"]) == (400, "M_INVALID_PARAM"), url
    missing = await mc.request("GET", f"{MEDIA}/preview_url", token=alice)
    assert (missing.status, missing.body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_url_previews_are_off_by_default(client: MatrixClient) -> None:
    alice = await client.register()
    off = await client.request(
        "GET", f"{MEDIA}/preview_url", params={"url": "http://127.0.0.2/"}, token=alice
    )
    assert (off.status, off.body["errcode"]) == (404, "M_UNRECOGNIZED")


# -- the media service in process: races and failures HTTP cannot time -------------------
#
# These drive ``MediaService`` directly on a fresh database of the backend under test and a
# media directory of their own, with a controllable clock where expiry matters.


class _Clock:
    """Starts at the real time (the freeze date compares with it); tests move it on."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class _Media:
    service: MediaService
    store: MediaStore
    root: Path
    clock: _Clock

    def files(self) -> set[str]:
        return {p.name for p in (self.root / "blobs").rglob("*") if p.is_file()}

    def tmp(self) -> list[Path]:
        return list((self.root / "tmp").iterdir())


@pytest.fixture
def new_media(database: Database, tmp_path: Path) -> Callable[..., Awaitable[_Media]]:
    """``await new_media(**MediaConfig options)``: a service whose files are set up (its
    background loops are not started unless a test calls ``start``)."""

    async def make(**options: Any) -> _Media:
        clock = _Clock()
        store = MediaStore(database)
        root = tmp_path / f"media-{uuid.uuid4().hex[:8]}"
        service = MediaService(
            ServerName("hs.test"), MediaConfig(**options), store, MediaFiles(root), clock=clock
        )
        await service._files.start()
        return _Media(service, store, root, clock)

    return make


def _requester(name: str = "alice") -> Requester:
    return Requester(UserID(f"@{name}:hs.test"), DeviceID("DEVICE"), 1)


async def _chunks(data: bytes, chunk: int = 64 * 1024, delay: float = 0.0) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        if delay:
            await asyncio.sleep(delay)
        yield data[start : start + chunk]


def _media_id(content_uri: str) -> str:
    return content_uri.rsplit("/", 1)[1]


async def _upload_in_process(media: _Media, data: bytes, user: str = "alice") -> str:
    uri = await media.service.upload(
        _requester(user),
        _chunks(data),
        content_length=None,
        content_type="image/png",
        upload_name=None,
    )
    return _media_id(uri)


async def test_concurrent_uploads_stay_within_the_quota(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    """Two 3 MiB uploads streaming at once against a 4 MiB quota: the quota used to be
    computed once per upload, before either was stored, so both were accepted. Bytes still
    streaming now count too: exactly one is stored."""
    media = await new_media(user_quota=QUOTA)
    user = _requester()
    results = await asyncio.gather(
        *(
            media.service.upload(
                user,
                _chunks(bytes([i]) * (3 * 1024 * 1024), delay=0.001),
                content_length=None,
                content_type="application/octet-stream",
                upload_name=None,
            )
            for i in (1, 2)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, MatrixError)]
    assert len(refused) == 1, results
    assert refused[0].errcode == Errcode.RESOURCE_LIMIT_EXCEEDED
    assert await media.store.usage_of(user.user_id) == 3 * 1024 * 1024
    assert len(media.files()) == 1
    assert media.tmp() == []
    assert media.service.uploads._in_flight == {}


async def test_the_quota_is_checked_again_before_the_row(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    """An upload that started (and read the usage) before another one was stored: the
    streaming check passes on its stale usage, the final check before the row refuses it."""
    media = await new_media(user_quota=QUOTA)
    user = _requester()
    started, go = asyncio.Event(), asyncio.Event()

    async def late_body() -> AsyncIterator[bytes]:
        started.set()  # it has read the usage (0) by now
        await go.wait()
        async for chunk in _chunks(b"b" * (3 * 1024 * 1024)):
            yield chunk

    late = asyncio.create_task(
        media.service.upload(
            user, late_body(), content_length=None, content_type=None, upload_name=None
        )
    )
    await started.wait()
    await _upload_in_process(media, b"a" * (3 * 1024 * 1024))
    go.set()
    with pytest.raises(MatrixError) as refused:
        await late
    assert refused.value.errcode == Errcode.RESOURCE_LIMIT_EXCEEDED
    assert await media.store.usage_of(user.user_id) == 3 * 1024 * 1024
    assert len(media.files()) == 1
    assert media.tmp() == []


async def test_an_upload_finishing_after_its_reservation_expired_is_refused(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    """Completing an expired reservation raced the janitor (which could delete the completed
    row, leaving its file unnamed). Now an upload completing after expiry gets 404 and its
    bytes are not kept."""
    media = await new_media(pending_upload_lifetime=60)
    created = await media.service.create(_requester())
    media_id = _media_id(created.content_uri)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first half "
        media.clock.now += 61  # the reservation expires while the body streams in
        yield b"second half"

    with pytest.raises(MatrixError) as gone:
        await media.service.upload_to(
            _requester(),
            ServerName("hs.test"),
            media_id,
            slow_body(),
            content_length=None,
            content_type="text/plain",
            upload_name=None,
        )
    assert (gone.value.status, gone.value.errcode) == (404, Errcode.NOT_FOUND)
    assert media.files() == set()
    row = await media.store.get(ServerName("hs.test"), media_id)
    assert row is not None and row.pending
    await media.service.reservations.expire_pending()
    assert await media.store.get(ServerName("hs.test"), media_id) is None


@pytest.mark.parametrize("how", ["expired", "deleted"])
async def test_a_reservation_removed_during_its_upload_is_a_404(
    new_media: Callable[..., Awaitable[_Media]], how: str
) -> None:
    """The janitor (or an admin) removes the reservation while its body streams in: 404
    M_NOT_FOUND (it used to say 409 "already uploaded"), nothing kept."""
    media = await new_media(pending_upload_lifetime=60)
    created = await media.service.create(_requester())
    media_id = _media_id(created.content_uri)
    streaming, removed = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        streaming.set()
        yield b"x" * 10
        await removed.wait()
        yield b"y" * 10

    upload = asyncio.create_task(
        media.service.upload_to(
            _requester(),
            ServerName("hs.test"),
            media_id,
            body(),
            content_length=None,
            content_type="text/plain",
            upload_name=None,
        )
    )
    await streaming.wait()
    if how == "expired":
        media.clock.now += 61
        await media.service.reservations.expire_pending()
    else:
        assert await media.service.delete([(ServerName("hs.test"), media_id)]) == 1
    removed.set()
    with pytest.raises(MatrixError) as gone:
        await upload
    assert (gone.value.status, gone.value.errcode) == (404, Errcode.NOT_FOUND)
    assert await media.store.get(ServerName("hs.test"), media_id) is None
    assert media.files() == set()
    assert media.tmp() == []


async def test_a_waiting_download_sees_an_upload_that_lands_during_its_first_read(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload completed (and woke nobody) between the download's read of the pending row
    and its registering as a waiter: it used to sleep for its whole timeout."""
    media = await new_media()
    created = await media.service.create(_requester())
    media_id = _media_id(created.content_uri)
    real_get = media.store.get
    first_read = asyncio.Event()
    calls = 0

    async def slow_first_get(origin: ServerName, mid: str) -> MediaRow | None:
        nonlocal calls
        calls += 1
        row = await real_get(origin, mid)
        if calls == 1:  # a slow database round trip, answered with the pending row
            await first_read.wait()
        return row

    monkeypatch.setattr(media.store, "get", slow_first_get)
    download = asyncio.create_task(
        media.service.download(
            ServerName("hs.test"), media_id, timeout_ms=20_000, authenticated=True
        )
    )
    await _eventually(lambda: calls == 1)
    await media.service.upload_to(
        _requester(),
        ServerName("hs.test"),
        media_id,
        _chunks(b"hello"),
        content_length=5,
        content_type="text/plain",
        upload_name=None,
    )
    first_read.set()
    async with asyncio.timeout(3):
        found = await download
    assert found.size == 5
    assert media.service.reservations._waiters == {}


def _waiting(service: MediaService, key: tuple[str, str], count: int) -> bool:
    return key in service.reservations._waiters and service.reservations._waiters[key][1] == count


async def test_waiters_are_woken_by_deletes_and_expiry_and_never_leak(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    media = await new_media(pending_upload_lifetime=60)
    service = media.service

    async def reserve() -> str:
        return _media_id((await service.create(_requester())).content_uri)

    # Gave up waiting: the waiter entry used to stay behind for every such request.
    media_id = await reserve()
    with pytest.raises(MatrixError) as not_yet:
        await service.download(ServerName("hs.test"), media_id, timeout_ms=0, authenticated=True)
    assert not_yet.value.errcode == Errcode.NOT_YET_UPLOADED
    assert service.reservations._waiters == {}

    # A delete, then the janitor, wake the waiters at once (404), not after their timeout.
    for remove in ("delete", "expire"):
        media_id = await reserve()
        waiting = [
            asyncio.create_task(
                service.download(
                    ServerName("hs.test"), media_id, timeout_ms=30_000, authenticated=True
                )
            )
            for _ in range(2)
        ]
        key = ("hs.test", media_id)
        # One entry for the key, counting two waiters.
        await _eventually(functools.partial(_waiting, service, key, 2))
        assert not any(task.done() for task in waiting)
        if remove == "delete":
            await service.delete([(ServerName("hs.test"), media_id)])
        else:
            media.clock.now += 61
            await service.reservations.expire_pending()
        async with asyncio.timeout(3):
            results = await asyncio.gather(*waiting, return_exceptions=True)
        for result in results:
            assert isinstance(result, MatrixError) and result.errcode == Errcode.NOT_FOUND
        assert service.reservations._waiters == {}


async def test_unauthenticated_downloads_never_wait_for_new_media(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    """The freeze is checked before waiting: a reservation made after the freeze date can
    only receive media the legacy endpoints will not serve, so they answer at once."""
    for frozen in (None, "2000-01-01T00:00:00Z"):
        media = await new_media(unauthenticated_media_before=frozen)
        media_id = _media_id((await media.service.create(_requester())).content_uri)
        async with asyncio.timeout(3):
            with pytest.raises(MatrixError) as refused:
                await media.service.download(
                    ServerName("hs.test"), media_id, timeout_ms=30_000, authenticated=False
                )
        assert refused.value.errcode == Errcode.NOT_FOUND
        assert media.service.reservations._waiters == {}


async def test_a_database_error_after_the_file_commit_leaves_no_file(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was in place and the row insert failed: the file stayed, unnamed, until the
    next restart's sweep. Now it is removed at once and the error still propagates."""
    media = await new_media()

    async def lost_connection(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("connection lost")

    monkeypatch.setattr(media.store, "add_uploaded", lost_connection)
    with pytest.raises(StorageError):
        await _upload_in_process(media, b"abc" * 1000)
    assert media.files() == set()

    media_id = _media_id((await media.service.create(_requester())).content_uri)
    monkeypatch.setattr(media.store, "complete_pending", lost_connection)
    with pytest.raises(StorageError):
        await media.service.upload_to(
            _requester(),
            ServerName("hs.test"),
            media_id,
            _chunks(b"def" * 1000),
            content_length=None,
            content_type=None,
            upload_name=None,
        )
    assert media.files() == set()
    assert media.tmp() == []


async def test_orphaned_files_are_swept_periodically(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only at start-up: a file left unnamed while the server runs goes too."""
    monkeypatch.setattr(media_janitor_module, "_ORPHAN_SWEEP_SECONDS", 0.2)
    monkeypatch.setattr(media_janitor_module, "_JANITOR_SECONDS", 0.05)
    media = await new_media()
    kept = await _upload_in_process(media, b"named by a row")
    sweeps = 0
    real_sweep = media.service.deletion.sweep_orphan_files

    async def counting_sweep() -> int:
        nonlocal sweeps
        removed = await real_sweep()
        sweeps += 1
        return removed

    monkeypatch.setattr(media.service.deletion, "sweep_orphan_files", counting_sweep)
    await media.service.start()
    try:
        await _eventually(lambda: sweeps == 1)  # the start-up sweep is done
        orphan = media.root / "blobs" / "ab" / "ab" / ("ab" * 32)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"no row names me")
        _age(orphan)
        await _eventually(lambda: not orphan.exists(), seconds=5)
        # The sweep that removed it is counted once it returns.
        await _eventually(lambda: sweeps >= 2)
    finally:
        await media.service.stop()
    row = await media.store.get(ServerName("hs.test"), kept)
    assert row is not None and row.sha256 in media.files()


async def test_thumbnailing_media_that_is_being_deleted_is_a_404(
    new_media: Callable[..., Awaitable[_Media]],
) -> None:
    """The file went away between the row read and the decode: FileNotFoundError used to
    escape as a 500."""
    media = await new_media()
    service = media.service
    media_id = await _upload_in_process(media, _png(500, 500))
    slots = service.thumbnails._slots
    for _ in range(2):
        await slots.acquire()  # other thumbnails take every decoding slot
    try:
        thumbnail = asyncio.create_task(
            service.thumbnail(
                ServerName("hs.test"),
                media_id,
                width=32,
                height=32,
                method="crop",
                animated=False,
                timeout_ms=None,
                authenticated=True,
            )
        )
        await _eventually(lambda: len(service.thumbnails._jobs) == 1)
        assert await service.delete([(ServerName("hs.test"), media_id)]) == 1
    finally:
        for _ in range(2):
            slots.release()
    with pytest.raises(MatrixError) as gone:
        await thumbnail
    assert (gone.value.status, gone.value.errcode) == (404, Errcode.NOT_FOUND)
    assert media.files() == set()


async def test_a_cancelled_request_does_not_cancel_a_shared_thumbnail(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests share one thumbnail job; the first client goes away. The job used to
    run in the first request's task, so the second request was cancelled with it."""
    media = await new_media()
    service = media.service
    media_id = await _upload_in_process(media, _png(500, 400))
    looked_up = 0
    real_get_thumbnail = media.store.get_thumbnail

    async def counting(*args: Any) -> ThumbnailRow | None:
        nonlocal looked_up
        found = await real_get_thumbnail(*args)
        looked_up += 1
        return found

    monkeypatch.setattr(media.store, "get_thumbnail", counting)
    slots = service.thumbnails._slots
    for _ in range(2):
        await slots.acquire()

    def request() -> asyncio.Task[Download]:
        return asyncio.create_task(
            service.thumbnail(
                ServerName("hs.test"),
                media_id,
                width=96,
                height=96,
                method="crop",
                animated=False,
                timeout_ms=None,
                authenticated=True,
            )
        )

    try:
        first, second = request(), request()
        await _eventually(lambda: looked_up == 2)  # both found no stored thumbnail
        await asyncio.sleep(0.05)
        assert len(service.thumbnails._jobs) == 1  # one shared job, both wait for it
        first.cancel()
        await asyncio.sleep(0.05)
    finally:
        for _ in range(2):
            slots.release()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(10):
        found = await second
    with Image.open(found.path) as made:
        assert made.size == (96, 96)
    assert service.thumbnails._jobs == {}


async def test_a_delete_checks_its_files_once_per_batch(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ``unreferenced`` query for the batch, then one re-check per candidate under its
    hash lock (it used to be one query per hash)."""
    media = await new_media()
    shared = b"shared by a kept item"
    doomed = [await _upload_in_process(media, f"only {i}".encode()) for i in range(3)]
    doomed.append(await _upload_in_process(media, shared))
    kept = await _upload_in_process(media, shared)
    calls: list[list[str]] = []
    real = media.store.unreferenced

    async def recording(hashes: Sequence[str]) -> set[str]:
        calls.append(list(hashes))
        return await real(hashes)

    monkeypatch.setattr(media.store, "unreferenced", recording)
    assert await media.service.delete([(ServerName("hs.test"), m) for m in doomed]) == 4
    assert len(calls[0]) == 4  # the whole batch
    assert [len(c) for c in calls[1:]] == [1, 1, 1]  # the three candidates, not the shared one
    row = await media.store.get(ServerName("hs.test"), kept)
    assert row is not None and media.files() == {row.sha256}


async def test_new_blob_directories_are_fsynced(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committed file's new parent directories (``blobs/ab``, ``blobs/ab/cd``) are made
    durable too, not only the file's own directory entry."""
    media = await new_media()
    synced: list[Path] = []
    real = media_files_module._fsync_directory

    def recording(directory: Path) -> None:
        synced.append(directory)
        real(directory)

    monkeypatch.setattr(media_files_module, "_fsync_directory", recording)
    media_id = await _upload_in_process(media, b"first file")
    row = await media.store.get(ServerName("hs.test"), media_id)
    assert row is not None and row.sha256 is not None
    blobs = media.root / "blobs"
    top, leaf = blobs / row.sha256[:2], blobs / row.sha256[:2] / row.sha256[2:4]
    assert synced == [blobs, top, leaf]


async def test_a_full_disk_is_a_clean_error(
    new_media: Callable[..., Awaitable[_Media]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    media = await new_media()

    async def no_space(self: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileWriter, "_flush", no_space)
    with (
        caplog.at_level(logging.WARNING, logger="peyvand.services.media.content"),
        pytest.raises(MatrixError) as full,
    ):
        await _upload_in_process(media, b"x" * 1000)
    assert (full.value.status, full.value.errcode) == (500, Errcode.UNKNOWN)
    assert "full" in full.value.message
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert media.tmp() == [] and media.files() == set()


def test_thumbnail_routes_are_rate_limited() -> None:
    thumbnails = [r for r in content_repo.routes.routes if "/thumbnail/" in r.path]
    assert len(thumbnails) == 2
    assert all(route.rate_limited for route in thumbnails)


async def test_large_url_previews_are_not_cached(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    media = await new_media()
    previews = UrlPreviewService(MediaConfig(url_preview_enabled=True), media.service)
    built: list[str] = []

    async def build(url: str) -> dict[str, Any]:
        built.append(url)
        if url.endswith("big"):
            return {"og:description": "é" * 40_000}  # 80 000 bytes of UTF-8
        return {"og:title": "small"}

    monkeypatch.setattr(previews, "_build", build)
    for _ in range(2):
        for url in ("http://example.org/big", "http://example.org/small"):
            await previews.preview(_requester(), url)
    big, small = "http://example.org/big", "http://example.org/small"
    assert built == [big, small, big]  # the small one came from the cache the second time


async def test_a_cancelled_request_does_not_cancel_a_shared_preview(
    new_media: Callable[..., Awaitable[_Media]], monkeypatch: pytest.MonkeyPatch
) -> None:
    media = await new_media()
    previews = UrlPreviewService(MediaConfig(url_preview_enabled=True), media.service)
    fetched = asyncio.Event()

    async def build(url: str) -> dict[str, Any]:
        await fetched.wait()
        return {"og:title": "shared"}

    monkeypatch.setattr(previews, "_build", build)
    url = "http://example.org/"
    first = asyncio.create_task(previews.preview(_requester("alice"), url))
    second = asyncio.create_task(previews.preview(_requester("bob"), url))
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.sleep(0.05)
    fetched.set()
    async with asyncio.timeout(3):
        assert await second == {"og:title": "shared"}
    with pytest.raises(asyncio.CancelledError):
        await first
