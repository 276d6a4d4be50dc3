"""Our media for other servers (content_repository.yaml): ``multipart/mixed`` answers of a
JSON metadata part and the content, streamed from the file in chunks."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import BinaryIO, Final

from aiohttp import web

from peyvand.api.context import RequestContext
from peyvand.api.media.content_repo import content_disposition
from peyvand.api.routing import RouteTable
from peyvand.api.validation import query_int
from peyvand.errors import Errcode, MatrixError
from peyvand.services.media.downloads import Download

routes = RouteTable()

_V1 = "/_matrix/federation/v1/media"
_CHUNK: Final = 256 * 1024


@routes.get(f"{_V1}/download/{{media_id}}", auth="federation")
async def download(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/federation/v1/media/download/{mediaId}: one of our uploads."""
    found = await ctx.services.media.download(
        ctx.services.config.server_name,
        ctx.path["media_id"],
        timeout_ms=_timeout_ms(ctx),
        authenticated=True,
    )
    return await _multipart(ctx, found)


@routes.get(f"{_V1}/thumbnail/{{media_id}}", auth="federation")
async def thumbnail(ctx: RequestContext) -> web.StreamResponse:
    """GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=."""
    query = ctx.query
    for name in ("width", "height"):
        if name not in query:
            raise MatrixError(Errcode.MISSING_PARAM, f"Missing '{name}' query parameter")
    found = await ctx.services.media.thumbnail(
        ctx.services.config.server_name,
        ctx.path["media_id"],
        width=query_int(query, "width", 0, minimum=1),
        height=query_int(query, "height", 0, minimum=1),
        method=query.get("method", "scale"),
        animated=query.get("animated") == "true",
        timeout_ms=_timeout_ms(ctx),
        authenticated=True,
    )
    return await _multipart(ctx, found)


def _timeout_ms(ctx: RequestContext) -> int | None:
    return query_int(ctx.query, "timeout_ms", 0) if "timeout_ms" in ctx.query else None


async def _multipart(ctx: RequestContext, found: Download) -> web.StreamResponse:
    boundary = secrets.token_hex(16)
    media_type = found.content_type.partition(";")[0].strip().lower()
    head = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\nContent-Type: {found.content_type}\r\n"
        f"Content-Disposition: {content_disposition(media_type, found.upload_name)}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    loop = asyncio.get_running_loop()
    file = await loop.run_in_executor(None, _open, found.path)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
        )
        response.content_length = len(head) + found.size + len(tail)
        await response.prepare(ctx.request)
        await response.write(head)
        while chunk := await loop.run_in_executor(None, file.read, _CHUNK):
            await response.write(chunk)
        await response.write(tail)
        await response.write_eof()
        return response
    finally:
        await loop.run_in_executor(None, file.close)


def _open(path: Path) -> BinaryIO:
    return path.open("rb")
