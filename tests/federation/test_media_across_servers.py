"""Media across servers: an image uploaded on one server is downloaded by a user of the
other, through the authenticated media endpoints and the federation media endpoints (the
downloading server fetches it once and caches it)."""

from __future__ import annotations

import asyncio
import io

import aiohttp
from PIL import Image

from harness.client import Account, new_session
from harness.database import query
from harness.federation import Pair

TIMEOUT_SECONDS = 60


def _image(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), color).save(buffer, "PNG")
    return buffer.getvalue()


async def _upload(http: aiohttp.ClientSession, base_url: str, account: Account, data: bytes) -> str:
    async with http.post(
        f"{base_url}/_matrix/media/v3/upload",
        data=io.BytesIO(data),
        params={"filename": "picture.png"},
        headers={"Authorization": f"Bearer {account.access_token}", "Content-Type": "image/png"},
    ) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["content_uri"])


async def _get(
    http: aiohttp.ClientSession, url: str, account: Account, **params: str
) -> tuple[int, str, bytes]:
    async with http.get(
        url, params=params, headers={"Authorization": f"Bearer {account.access_token}"}
    ) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_media_crosses_servers_both_ways(pair: Pair) -> None:
    peyvand, _, peer, _, alice, bob = pair.unpack()
    ours, theirs = _image((200, 10, 10)), _image((10, 10, 200))
    async with new_session() as http, asyncio.timeout(TIMEOUT_SECONDS):
        ours_uri = await _upload(http, peyvand.base_url, alice, ours)
        theirs_uri = await _upload(http, peer.base_url, bob, theirs)

        # The peer's user downloads Peyvand's image through the peer.
        server, media_id = ours_uri.removeprefix("mxc://").split("/")
        url = f"{peer.base_url}/_matrix/client/v1/media/download/{server}/{media_id}"
        status, content_type, body = await _get(http, url, bob)
        assert (status, content_type, body) == (200, "image/png", ours)

        # Peyvand's user downloads the peer's image through Peyvand, twice: fetched once.
        server, media_id = theirs_uri.removeprefix("mxc://").split("/")
        url = f"{peyvand.base_url}/_matrix/client/v1/media/download/{server}/{media_id}"
        for _ in range(2):
            status, content_type, body = await _get(http, url, alice)
            assert (status, content_type, body) == (200, "image/png", theirs)
        rows = await query(peyvand, "SELECT origin, size FROM media WHERE media_id = $1", media_id)
        assert rows == [(server, len(theirs))]

        thumb_url = f"{peyvand.base_url}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
        status, content_type, body = await _get(
            http, thumb_url, alice, width="96", height="96", method="crop"
        )
        assert status == 200
        assert Image.open(io.BytesIO(body)).size == (96, 96)

        missing = f"{peyvand.base_url}/_matrix/client/v1/media/download/{server}/NoSuchMedia"
        status, _, _ = await _get(http, missing, alice)
        assert status == 404
    assert "Unhandled error" not in peyvand.log()
