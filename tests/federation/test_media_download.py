"""federation/media.py: reading another server's media answer (Server-Server API,
"Content Repository"): the multipart/mixed federation answer and the legacy plain body,
streamed into a writer that is finished on success and discarded on any failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from peyvand.federation.media import (
    MediaDownloadError,
    RemoteMedia,
    read_multipart,
    read_plain,
)


@dataclass
class MemoryWriter:
    chunks: list[bytes] = field(default_factory=list)
    finished: bool = False
    discarded: bool = False

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    async def finish(self) -> bytes:
        self.finished = True
        return b"".join(self.chunks)

    async def discard(self) -> None:
        self.discarded = True


@dataclass
class Writers:
    opened: list[MemoryWriter] = field(default_factory=list)

    async def open(self) -> MemoryWriter:
        self.opened.append(MemoryWriter())
        return self.opened[-1]


def multipart(content: bytes, headers: dict[str, str]) -> web.Response:
    with aiohttp.MultipartWriter("mixed") as body:
        body.append_json({})
        body.append(content, headers)
    return web.Response(body=body)


@asynccontextmanager
async def answer(response: web.Response) -> AsyncIterator[aiohttp.ClientResponse]:
    """A GET of a loopback server that answers ``response``."""

    async def handler(_: web.Request) -> web.Response:
        return response

    app = web.Application()
    app.router.add_get("/media", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert isinstance(site._server, asyncio.Server)
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/media") as resp,
        ):
            yield resp
    finally:
        await runner.cleanup()


async def test_multipart_content_part() -> None:
    writers = Writers()
    response = multipart(
        b"picture bytes",
        {
            "Content-Type": "image/png",
            "Content-Disposition": "inline; filename*=utf-8''caf%C3%A9.png",
        },
    )
    async with answer(response) as resp:
        media = await read_multipart(resp, 100, writers.open)
    assert media == RemoteMedia("image/png", "café.png", b"picture bytes")
    assert [(w.finished, w.discarded) for w in writers.opened] == [(True, False)]


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (web.Response(body=b"x", content_type="image/png"), "expected multipart/mixed"),
        (multipart(b"", {"Location": "https://cdn.test/x"}), "redirects media elsewhere"),
        (multipart(b"x" * 101, {"Content-Type": "image/png"}), "too large"),
    ],
)
async def test_multipart_refused(response: web.Response, error: str) -> None:
    writers = Writers()
    async with answer(response) as resp:
        with pytest.raises(MediaDownloadError, match=error):
            await read_multipart(resp, 100, writers.open)
    assert all(w.discarded and not w.finished for w in writers.opened)


async def test_plain_body() -> None:
    writers = Writers()
    response = web.Response(
        body=b"legacy bytes",
        headers={"Content-Type": "text/plain", "Content-Disposition": 'inline; filename="a.txt"'},
    )
    async with answer(response) as resp:
        media = await read_plain(resp, 100, writers.open)
    assert media == RemoteMedia("text/plain", "a.txt", b"legacy bytes")
    async with answer(web.Response(body=b"y" * 101)) as resp:
        with pytest.raises(MediaDownloadError, match="too large"):
            await read_plain(resp, 100, writers.open)
    assert [(w.finished, w.discarded) for w in writers.opened] == [(True, False), (False, True)]
